"""Small training-run directories shaped like a finished `python -m training.distill` run's
(config.json, metrics.json as training.stages.report.collect writes it, stages.jsonl), for the
real-voices benchmark's tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from training.config import load_config
from training.eval.metrics import compute_metrics

LABELS = ["neutral", "happy", "angry", "sad"]


def scored(seed: int, n: int = 16) -> dict:
    """compute_metrics over ``n`` made-up answers (a quarter of them wrong)."""
    rng = np.random.default_rng(seed)
    truth = [LABELS[i % 4] for i in range(n)]
    answers = [t if rng.random() > 0.25 else LABELS[rng.integers(4)] for t in truth]
    return compute_metrics(truth, answers, LABELS)


def calibration(seed: int) -> dict:
    return {
        "temperature": 1.5 + seed / 10,
        "test_ece_before": 0.2,
        "test_ece_after": 0.08,
        "test_nll_before": 1.1,
        "test_nll_after": 0.9,
        "valid_selective": [{"min_confidence": 0.5, "coverage": 0.8, "accuracy": 0.7}],
    }


def student(fold: str, corpora: list[str], seed: int = 0) -> dict:
    return {
        "fold": fold, "variant": "full", "seed": 0, "weights": {}, "speakers": {"test": [fold]},
        "best_epoch": 2, "best_valid_ua": 0.7, "valid_best": scored(seed + 10),
        "test_best": scored(seed), "test_last": scored(seed + 1),
        "corpora_best": {c: {**scored(seed + i + 2), "n": 16} for i, c in enumerate(corpora)},
        "corpora_last": {c: {**scored(seed + i + 5), "n": 16} for i, c in enumerate(corpora)},
        "calibration": calibration(seed),
        "calibration_corpora": {c: calibration(seed + i) for i, c in enumerate(corpora)},
        "seconds": 12.5,
    }  # fmt: skip


def stages(folds: list[str]) -> list[dict]:
    records = [{"stage": "data", "rank": 0, "seconds": 1.5, "peak_rss_mb": 400.0}]
    for fold in folds:
        for name, seconds in (("teachers", 30.0), ("student", 120.0)):
            for rank in (0, 1):
                records.append({"stage": name, "rank": rank, "fold": fold, "skipped": False,
                                "seconds": seconds, "peak_rss_mb": 900.0 + rank})  # fmt: skip
    records.append({"stage": "teachers", "rank": 0, "skipped": True, "seconds": 0.0,
                    "peak_rss_mb": 300.0})  # fmt: skip
    return records


def write_run(folder: Path, folds: list[str], corpora: list[str], **config: object) -> Path:
    """A finished run of the voices preset with ``config`` changed, one student per fold."""
    folder.mkdir(parents=True, exist_ok=True)
    values = load_config("voices").to_dict() | {"run_dir": str(folder), "variant": "full"}
    values |= config
    teachers = {"ling": {"test": scored(20), "valid": scored(21)},
                "pros": {"test": scored(22), "valid": scored(23)}}  # fmt: skip
    metrics = {
        "config": values,
        "folds": folds,
        "summary": {},
        "teachers": [teachers for _ in folds],
        "students": [student(fold, corpora, seed) for seed, fold in enumerate(folds)],
        "seconds": 300.0,
    }
    (folder / "config.json").write_text(json.dumps(values), encoding="utf-8")
    (folder / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    lines = [json.dumps(record) for record in stages(folds)]
    (folder / "stages.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder
