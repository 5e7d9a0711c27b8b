"""A training run directory -> model directory: the best student of a fold + its validation audio."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from emocore.audio import SAMPLE_RATE, load_audio
from emocore.model_dir import MAX_SECONDS
from export.model_dir import build_model_dir
from export.quantize import (
    CALIBRATION_MAX,
    EVALUATION_MAX,
    INT8_MAX_CCC_DROP,
    INT8_MAX_DIMENSIONS_DIFF,
    INT8_MAX_UA_DROP,
)
from training.data.splits import FINAL_FOLD
from training.data.utterance import Utterance, dimension_array, read_jsonl
from training.eval.calibration import fold_temperature
from training.models.student import load_student

# Where a fold's exported student lives, in order of preference: retrained on all non-test
# speakers (refit), trained without validation speakers (the final protocol), best on validation.
CHECKPOINTS = ("student/refit/last", "student/last", "student/best")
SUMMARY = "summary.json"


def checkpoint_dir(fold_dir: Path) -> Path | None:
    return next((fold_dir / c for c in CHECKPOINTS if (fold_dir / c / SUMMARY).is_file()), None)


def fold_dirs(run_dir: Path) -> list[Path]:
    folds = sorted(p for p in (run_dir / "folds").glob("*") if checkpoint_dir(p) is not None)
    if not folds:
        raise FileNotFoundError(f"no trained student in {run_dir}/folds/*/student/")
    return folds


def choose_fold(run_dir: Path, fold: str | None) -> Path:
    """The named fold; else the ``final`` fold (trained on every speaker) or the only fold.

    Folds are never compared to pick one: each fold validates on other speakers, so their
    validation UAs are not comparable (and test UAs must not choose)."""
    if fold is not None:
        path = run_dir / "folds" / str(fold)
        if checkpoint_dir(path) is None:
            raise FileNotFoundError(f"fold {fold!r} has no trained student in {run_dir}")
        return path
    folds = fold_dirs(run_dir)
    final = [p for p in folds if p.name == FINAL_FOLD]
    if final or len(folds) == 1:
        return (final or folds)[0]
    raise ValueError(
        f"{run_dir} has {len(folds)} folds ({', '.join(p.name for p in folds)}); their validation "
        "speakers differ, so their scores do not choose one: name it (--fold), or train the "
        "model for export on every speaker (python -m training.distill --protocol=final ...)"
    )


def read_summary(fold_dir: Path) -> dict:
    return json.loads((checkpoint_dir(fold_dir) / SUMMARY).read_text())


def resolve_audio(path: str, run_dir: Path) -> Path:
    candidate = Path(path)
    if candidate.is_absolute() or candidate.exists():
        return candidate
    return run_dir / candidate


def speaker_rounds(utterances: list[Utterance], seed: int = 0) -> list[list[Utterance]]:
    """Every speaker's utterances shuffled (fixed seed), then dealt in rounds of one utterance
    per speaker: any run of rounds spreads over all speakers (the first 64 validation
    utterances had been one speaker's)."""
    rng = np.random.default_rng(seed)
    by_speaker: dict[str, list[Utterance]] = {}
    for u in utterances:
        by_speaker.setdefault(u.speaker, []).append(u)
    queues = [[q[i] for i in rng.permutation(len(q))] for _, q in sorted(by_speaker.items())]
    return [[q[k] for q in queues if k < len(q)] for k in range(max(map(len, queues), default=0))]


def int8_sets(fold_dir: Path, run_dir: Path, labels: list[str]) -> tuple[dict, dict]:
    """(calibration, evaluation) for int8, each {"audio", "labels", "speakers", "source",
    "dimensions"}: the activation ranges from training clips, the accuracy check on the
    held-out validation clips (every one, up to EVALUATION_MAX), both dealt in rounds over the
    speakers so that a capped set spans them all. Calibration clips need not be held out; the
    check's do, and all of them count: on the demo's 120 validation clips one changed answer
    of 60 had been 2.1 points of UA. A ``final`` model has no validation speakers: its training
    clips are dealt in rounds, even rounds calibrating and odd ones checking (no clip in both);
    so are the validation clips of a fold without training clips listed."""
    train, valid = (_utterances(fold_dir / f"{part}.jsonl") for part in ("train", "valid"))
    if valid and train:
        calibration = [u for r in speaker_rounds(train) for u in r]
        evaluation = [u for r in speaker_rounds(valid) for u in r]
        sources = ("training", "validation")
    else:
        rounds = speaker_rounds(valid or train)
        calibration = [u for r in rounds[0::2] for u in r]
        evaluation = [u for r in rounds[1::2] for u in r]
        source = "validation" if valid else "training (no validation speakers)"
        sources = (source, source)
    limit = int(MAX_SECONDS * SAMPLE_RATE)

    def load(part: list[Utterance], source: str) -> dict:
        return {
            "audio": [load_audio(resolve_audio(u.audio_path, run_dir))[:limit] for u in part],
            "labels": [labels.index(u.label) for u in part],
            "speakers": sorted({u.speaker for u in part}),
            "source": source,
            # rated clips: the dimensions' CCC with the ratings (NaN rows: unrated)
            "dimensions": dimension_array(part) if any(u.dimensions for u in part) else None,
        }

    return (
        load(calibration[:CALIBRATION_MAX], sources[0]),
        load(evaluation[:EVALUATION_MAX], sources[1]),
    )


def _utterances(path: Path) -> list[Utterance]:
    return read_jsonl(path) if path.is_file() else []


def export_run(
    run_dir: Path | str,
    out_dir: Path | str,
    *,
    fold: str | None = None,
    int8: bool | None = None,
    triton_dir: Path | str | None = None,
    int8_max_ua_drop: float = INT8_MAX_UA_DROP,
    int8_max_dimensions_diff: float = INT8_MAX_DIMENSIONS_DIFF,
    int8_max_ccc_drop: float = INT8_MAX_CCC_DROP,
) -> Path:
    """``int8`` None: int8 for Whisper students (static int8 is 1.45-1.6x their fp32 speed and
    batch-invariant), shipped only if the accuracy gate passes; True or False: for any student
    or none."""
    run_dir = Path(run_dir)
    fold_dir = choose_fold(run_dir, fold)
    student = load_student(checkpoint_dir(fold_dir)).eval()
    if int8 is None:
        int8 = int8_by_default(student)
    temperature = (read_summary(fold_dir).get("calibration") or {}).get("temperature")
    if temperature:  # fitted on the validation speakers; every exported artefact carries it
        fold_temperature(student, temperature)
    calibration, evaluation = (None, None)
    if int8:
        calibration, evaluation = int8_sets(fold_dir, run_dir, student.labels)
    return build_model_dir(
        student,
        out_dir,
        summary=read_summary(fold_dir),
        int8=int8,
        calibration=calibration["audio"] if calibration else None,
        int8_check=evaluation,
        int8_max_ua_drop=int8_max_ua_drop,
        calibration_info=calibration and {k: calibration[k] for k in ("speakers", "source")},
        int8_limits={
            "max_dimensions_diff": int8_max_dimensions_diff,
            "max_ccc_drop": int8_max_ccc_drop,
        },
        triton_dir=triton_dir,
    )


def int8_by_default(student) -> bool:
    """Whether an export writes int8 unless told: for Whisper students (docs/export.md)."""
    return bool(getattr(student, "whisper", False))
