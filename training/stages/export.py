"""Stage 8, export (``--export DIR``): the first fold's student as a model directory, written by
``python -m export`` in a process of its own, so that ``training`` never imports ``export``
(export builds on training, not the other way round)."""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import sys
from pathlib import Path

from training.config import Config

log = logging.getLogger("emodistill.training")
# The folder that holds the ``training`` package, and with it ``export``: the export process
# imports the same source tree as this one, wherever it was started from.
SOURCE_ROOT = Path(__file__).resolve().parents[2]


class ExportFailed(RuntimeError):
    """``python -m export`` exited with a non-zero status (its own output says why)."""


def command(cfg: Config, run_dir: Path, fold: str) -> list[str]:
    """``python -m export`` for the student of ``fold`` of the run, into ``cfg.export``."""
    cmd = [sys.executable, "-m", "export", "--run", str(run_dir), "--fold", fold]
    cmd += ["--out", cfg.export]
    # auto: the export decides by the student (int8 for Whisper students), gated as below
    cmd += {"true": ["--int8"], "false": ["--no-int8"]}.get(cfg.int8, [])
    if cfg.int8 != "false":
        cmd += [
            f"--int8-max-ua-drop={cfg.int8_max_ua_drop}",
            f"--int8-max-dimensions-diff={cfg.int8_max_dimensions_diff}",
            f"--int8-max-ccc-drop={cfg.int8_max_ccc_drop}",
        ]
    return cmd


def export_model(cfg: Config, run_dir: Path, fold: str) -> Path:
    """Run the export with its output streamed to this process's; raises ``ExportFailed`` when
    it fails. Returns the model directory."""
    cmd = command(cfg, run_dir, fold)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SOURCE_ROOT), env.get("PYTHONPATH")) if p)
    if cfg.threads > 0:  # the recipe's torch thread count (torch reads it at start-up)
        env["OMP_NUM_THREADS"] = str(cfg.threads)
    log.info("exporting the student of fold %s: %s", fold, shlex.join(cmd))
    sys.stdout.flush()  # our lines before the export's
    sys.stderr.flush()
    code = subprocess.run(cmd, env=env, check=False).returncode
    if code != 0:
        raise ExportFailed(
            f"the export of fold {fold} to {cfg.export} failed: `python -m export` exited with "
            f"status {code} (its output is above)"
        )
    return Path(cfg.export)
