"""``kill -9`` during a student's epoch, then the same command again: does it resume and reach
the uninterrupted run's final metrics? Shared by tests/training/test_faults.py and
``make reliability`` (benchmarks/reliability.py).

The recipe is the tiny one of tests/training/test_distill.py (seconds per epoch on 2 cores), as
``python -m training.distill`` processes: the kill is a real SIGKILL, not an exception.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.training.test_distill import TINY

ROOT = Path(__file__).resolve().parents[2]
# The tiny recipe of tests/training/test_distill.py with smaller batches: an epoch lasts long
# enough to be killed in.
ARGS = [
    "--preset=demo",
    *(arg for arg in TINY if not arg.startswith("--batch_size=")),
    "--batch_size=4",
    "--variant=ce+ling",
]
TOLERANCE = 1e-6  # CPU, one thread, same seed: the resumed run should match to float precision


def command(corpus: Path, run_dir: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "training.distill",
        *ARGS,
        f"--data_path={corpus}",
        f"--run_dir={run_dir}",
        f"--prosody_cache={corpus / 'prosody'}",
    ]


def _env() -> dict[str, str]:
    return os.environ | {"HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}


def run(corpus: Path, run_dir: Path, timeout_s: float = 900) -> float:
    """The command to completion; returns its wall seconds."""
    started = time.monotonic()
    subprocess.run(
        command(corpus, run_dir),
        cwd=ROOT,
        env=_env(),
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=timeout_s,
    )
    return time.monotonic() - started


def student_dir(run_dir: Path) -> Path:
    (fold,) = (run_dir / "folds").iterdir()
    return fold / "student"


def kill_during_epoch(corpus: Path, run_dir: Path, after_s: float = 0.5) -> dict:
    """Start the command, SIGKILL it ``after_s`` after the student's first epoch was saved
    (so inside its second), then run the same command to completion."""
    process = subprocess.Popen(
        command(corpus, run_dir),
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 900
    saved = None
    while time.monotonic() < deadline and process.poll() is None:
        found = list(run_dir.glob("folds/*/student/last/trainer.pt"))
        if found:
            saved = found[0]
            break
        time.sleep(0.05)
    if saved is None:
        process.kill()
        raise RuntimeError(f"the student never saved an epoch (exit {process.poll()})")
    time.sleep(after_s)
    finished_before_kill = process.poll() is not None
    process.send_signal(signal.SIGKILL)
    process.wait()
    interrupted = not (student_dir(run_dir) / "result.json").exists()
    started = time.monotonic()
    resumed = subprocess.run(
        command(corpus, run_dir), cwd=ROOT, env=_env(), capture_output=True, text=True
    )
    log = (run_dir / "log.txt").read_text()
    return {
        "killed_mid_student": interrupted and not finished_before_kill,
        "resume_exit_code": resumed.returncode,
        "resume_s": round(time.monotonic() - started, 1),
        "resumed_after_epoch": _resumed_after(log),
        "stderr_tail": resumed.stderr[-2000:] if resumed.returncode else "",
    }


def _resumed_after(log: str) -> int | None:
    marker = "resuming after epoch "
    lines = [line for line in log.splitlines() if marker in line]
    return int(lines[-1].split(marker)[1].split()[0]) if lines else None


def final_metrics(run_dir: Path) -> dict:
    """The student's final figures: test UA/WA (last and best epoch) and the loss history."""
    result = json.loads((student_dir(run_dir) / "result.json").read_text())
    return {
        "test_last": {k: result["test_last"][k] for k in ("ua", "wa")},
        "test_best": {k: result["test_best"][k] for k in ("ua", "wa")}
        if "test_best" in result
        else None,
        "losses": [h["loss"] for h in result["history"]],
        "valid_ua": [h["valid_ua"] for h in result["history"]],
    }


def max_difference(a: dict, b: dict) -> float:
    """The largest absolute difference between two final_metrics (nested numbers)."""

    def numbers(x) -> list[float]:
        if isinstance(x, dict):
            return [n for key in sorted(x) for n in numbers(x[key])]
        if isinstance(x, list):
            return [n for item in x for n in numbers(item)]
        return [float(x)] if x is not None else []

    left, right = numbers(a), numbers(b)
    if len(left) != len(right):
        return float("inf")
    return max((abs(p - q) for p, q in zip(left, right, strict=True)), default=0.0)


def compare(work: Path) -> dict:
    """An uninterrupted run and a killed-and-resumed one on the same corpus and seed."""
    corpus = work / "corpus"
    clean_s = run(corpus, work / "clean")  # also generates the corpus and its prosody cache
    killed = kill_during_epoch(corpus, work / "killed")
    clean = final_metrics(work / "clean")
    resumed = final_metrics(work / "killed") if killed["resume_exit_code"] == 0 else None
    return {
        "uninterrupted_s": round(clean_s, 1),
        **killed,
        "uninterrupted": clean,
        "resumed": resumed,
        "max_abs_difference": max_difference(clean, resumed) if resumed else float("inf"),
        "tolerance": TOLERANCE,
    }


def bad_manifest(work: Path, *, in_process: bool = False) -> dict:
    """A manifest with two missing files and two unknown labels: the command must stop before
    any training, list every problem, and exit non-zero without a traceback. ``in_process``
    calls ``training.distill.main`` here (fast) instead of starting ``python -m``."""
    import numpy as np
    import soundfile as sf

    work.mkdir(parents=True, exist_ok=True)
    sf.write(work / "a.wav", np.zeros(8000, np.float32), 16000)
    manifest = work / "manifest.csv"
    manifest.write_text(
        "path,label,speaker\n"
        "a.wav,happy,s1\n"
        "missing1.wav,sad,s1\n"
        "a.wav,joy,s2\n"
        "missing2.wav,bored,s2\n"
    )
    run_dir = work / "run"
    argv = [
        "--preset=demo",
        "--dataset=manifest",
        "--protocol=manifest",
        f"--data_path={manifest}",
        f"--run_dir={run_dir}",
    ]
    started = time.monotonic()
    code, stderr = _main_in_process(argv) if in_process else _main_as_process(argv)
    wanted = ("missing1.wav", "missing2.wav", "'joy'", "'bored'")
    return {
        "exit_code": code,
        "seconds": round(time.monotonic() - started, 1),
        "problems_listed": sum(needle in stderr for needle in wanted),
        "problems": len(wanted),
        "traceback": "Traceback" in stderr,
        "trained_anything": (run_dir / "folds").exists(),
        "stderr_tail": stderr[-1500:],
    }


def _main_as_process(argv: list[str]) -> tuple[int, str]:
    result = subprocess.run(
        [sys.executable, "-m", "training.distill", *argv],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    return result.returncode, result.stderr


def _main_in_process(argv: list[str]) -> tuple[int, str]:
    import contextlib
    import io
    import traceback

    from training import distill

    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        try:
            code = distill.main(argv)
        except Exception:
            traceback.print_exc()
            code = 1
    return code, stderr.getvalue()
