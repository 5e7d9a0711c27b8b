"""A training run directory -> model directory: the best student of a fold + its validation audio."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from export.model_dir import build_model_dir
from export.spec import MAX_SECONDS, SAMPLE_RATE
from server.audio import load_audio
from training.calibration import fold_temperature
from training.data.utterance import read_jsonl
from training.student import load_student


def fold_dirs(run_dir: Path) -> list[Path]:
    folds = sorted(
        p.parent.parent.parent for p in run_dir.glob("folds/*/student/best/summary.json")
    )
    if not folds:
        raise FileNotFoundError(f"no trained student in {run_dir}/folds/*/student/best/")
    return folds


def choose_fold(run_dir: Path, fold: str | None) -> Path:
    """The named fold, else the fold with the best validation UA (never chosen on test)."""
    if fold is not None:
        path = run_dir / "folds" / str(fold)
        if not (path / "student" / "best" / "summary.json").exists():
            raise FileNotFoundError(f"fold {fold!r} has no student/best/summary.json in {run_dir}")
        return path
    return max(fold_dirs(run_dir), key=lambda p: read_summary(p)["valid"]["ua"])


def read_summary(fold_dir: Path) -> dict:
    return json.loads((fold_dir / "student" / "best" / "summary.json").read_text())


def resolve_audio(path: str, run_dir: Path) -> Path:
    candidate = Path(path)
    if candidate.is_absolute() or candidate.exists():
        return candidate
    return run_dir / candidate


def validation_set(
    fold_dir: Path, run_dir: Path, labels: list[str]
) -> tuple[list[np.ndarray], list[int]]:
    """Validation audio, cropped to the verified maximum length, and class indices."""
    audio, targets = [], []
    limit = int(MAX_SECONDS * SAMPLE_RATE)
    for utterance in read_jsonl(fold_dir / "valid.jsonl"):
        audio.append(load_audio(resolve_audio(utterance.audio_path, run_dir))[:limit])
        targets.append(labels.index(utterance.label))
    return audio, targets


def export_run(
    run_dir: Path | str,
    out_dir: Path | str,
    *,
    fold: str | None = None,
    int8: bool = False,
    triton_dir: Path | str | None = None,
) -> Path:
    run_dir = Path(run_dir)
    fold_dir = choose_fold(run_dir, fold)
    student = load_student(fold_dir / "student" / "best").eval()
    temperature = (read_summary(fold_dir).get("calibration") or {}).get("temperature")
    if temperature:  # fitted on the validation speakers; every exported artefact carries it
        fold_temperature(student, temperature)
    audio, targets = (None, None)
    if int8:
        audio, targets = validation_set(fold_dir, run_dir, student.labels)
    return build_model_dir(
        student,
        out_dir,
        summary=read_summary(fold_dir),
        int8=int8,
        calibration=audio,
        calibration_labels=targets,
        triton_dir=triton_dir,
    )
