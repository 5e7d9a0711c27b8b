"""The Docker image copies every package of ours that the code it runs imports.

No Docker engine runs in CI, so this is checked statically: the import graph (grimp, the
engine of the import contracts) says which of our packages the server and the recipe reach,
and each stage of the Dockerfile must COPY them before it installs the project.
"""

from __future__ import annotations

import re
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("emocore", "server", "training", "export")


def stages() -> dict[str, set[str]]:
    """Stage name -> the top-level folders it COPYs from the build context."""
    copied: dict[str, set[str]] = {}
    stage = None
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if match := re.match(r"FROM\s+\S+\s+AS\s+(\w+)", line, re.I):
            stage = match.group(1)
            copied[stage] = set()
        elif stage and (match := re.match(r"COPY\s+(?!--from)(\S+)\s+\./(\S+)", line)):
            copied[stage].add(match.group(1).rstrip("/"))
    return copied


def reached(start: str) -> set[str]:
    """Our top-level packages that ``start`` imports, directly or not, itself included."""
    graph = grimp.build_graph(*PACKAGES)
    modules = {start} | graph.find_descendants(start)
    found = set()
    for module in modules:
        found |= {m.split(".")[0] for m in graph.find_upstream_modules(module)}
    return (found | {start}) & set(PACKAGES)


@pytest.mark.parametrize(
    ("stage", "entry"),
    [("build", "training"), ("build", "export"), ("cpu", "server"), ("gpu", "server")],
)
def test_each_stage_copies_what_its_code_imports(stage, entry):
    copied = stages()
    assert stage in copied, f"Dockerfile has no stage {stage!r}"
    missing = reached(entry) - copied[stage]
    assert not missing, f"stage {stage} runs {entry} but does not COPY {sorted(missing)}"


def test_the_server_images_carry_no_training_code():
    copied = stages()
    for stage in ("cpu", "gpu"):
        assert not copied[stage] & {"training", "export"}, stage


def test_the_images_and_compose_listen_on_every_interface_explicitly():
    """The server's default is loopback: a container must say 0.0.0.0 itself, or its port
    mapping would reach nothing."""
    import yaml

    env_lines: dict[str, str] = {}
    stage = None
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if match := re.match(r"FROM\s+\S+\s+AS\s+(\w+)", line, re.I):
            stage = match.group(1)
        elif stage:
            env_lines[stage] = env_lines.get(stage, "") + line + "\n"
    for stage in ("cpu", "gpu"):
        assert re.search(r"\bEMODISTILL_HOST=0\.0\.0\.0\b", env_lines[stage]), stage
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    for name, service in services.items():
        assert service["environment"].get("EMODISTILL_HOST") == "0.0.0.0", name
