"""The README stays true: every make target, module and repository path it names exists."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
GENERATED = ("runs/", "models/", "demo-corpus/", "data/", ".venv/")


def _make_targets() -> set[str]:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([A-Za-z][\w-]*):", makefile, flags=re.M))


def test_readme_make_targets_exist():
    named = set(re.findall(r"\bmake ([a-z][\w-]*)", README))
    assert {"serve", "test"} <= named, "the two set-up commands must be in the README"
    assert named <= _make_targets(), f"README names missing make targets: {named - _make_targets()}"


def test_readme_modules_exist():
    modules = set(re.findall(r"python3? -m ([\w.]+)", README))
    assert modules, "the README should name the project's entry points"
    for module in modules:
        if module.split(".")[0] not in {"server", "training", "export", "benchmarks"}:
            continue
        base = ROOT / Path(*module.split("."))
        assert base.with_suffix(".py").is_file() or (base / "__main__.py").is_file(), module


def test_readme_paths_exist():
    candidates = set(re.findall(r"`([\w./-]+)`", README)) | set(
        re.findall(
            r"(?:^|\s)((?:benchmarks|examples|docs|server|training|export|tests)/[\w./-]+)",
            README,
            flags=re.M,
        )
    )
    checked = 0
    for text in candidates:
        path = text.rstrip(".,:")
        if "/" not in path or path.startswith(("/", "http")) or path.startswith(GENERATED):
            continue
        if any(part.isupper() for part in re.split(r"[/.]", path)):  # placeholders: models/NAME
            continue
        if not (ROOT / path.split("/")[0]).exists():
            continue
        checked += 1
        assert (ROOT / path).exists(), f"README names {path}, which does not exist"
    assert checked > 0
