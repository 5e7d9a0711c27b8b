"""The training-run figures of the real-voices benchmark (benchmarks/real_voices.py): a run
directory's configuration, main student, teachers, calibration and stage times, and the rows of
leave-one-corpus-out runs, read from metrics.json (training/stages/report.py collect),
config.json and stages.jsonl (training/runs.py)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from training.data.corpora import corpus_names
from training.runs import read_stages

SCORE_KEYS = ("ua", "wa", "macro_f1", "confusion", "n")
CALIBRATION_KEYS = (
    "temperature", "test_ece_before", "test_ece_after", "test_nll_before", "test_nll_after",
)  # fmt: skip


class Failure(RuntimeError):
    """An input the measurement cannot use; the message says which and why."""


def read_json(path: Path) -> dict:
    if not path.is_file():
        raise Failure(f"{path} is missing: not a finished training run")
    return json.loads(path.read_text(encoding="utf-8"))


def preset_of(config: dict) -> str | None:
    """The most specific preset whose every key but run_dir the run's config holds (presets do
    not record themselves in config.json); None when none does."""
    from training.config import preset_names, preset_values

    matches = []
    for name in preset_names():
        values = {k: v for k, v in preset_values(name).items() if k != "run_dir"}
        if all(config.get(key) == value for key, value in values.items()):
            matches.append((len(values), name))
    return max(matches)[1] if matches else None


def main_students(metrics: dict) -> list[dict]:
    """The configured (variant, seed) student of every fold, in fold order."""
    config = metrics["config"]
    return [
        s
        for s in metrics["students"]
        if s["variant"] == config["variant"] and s["seed"] == config["seed"] and "test_best" in s
    ]


def scores(result: dict) -> dict:
    return {key: result[key] for key in SCORE_KEYS if key in result}


def stage_times(run_dir: Path) -> dict:
    """Rank 0's stages: runs, seconds of work (resumed-over stages count as skipped) and the
    highest peak RSS, in the order they first ran."""
    out: dict[str, dict] = {}
    for record in read_stages(run_dir):
        if record.get("rank", 0) != 0:
            continue
        entry = out.setdefault(
            record["stage"], {"runs": 0, "skipped": 0, "seconds": 0.0, "peak_rss_mb": None}
        )
        if record.get("skipped"):
            entry["skipped"] += 1
            continue
        entry["runs"] += 1
        entry["seconds"] = round(entry["seconds"] + record["seconds"], 2)
        peak = record.get("peak_rss_mb")
        if peak is not None:
            entry["peak_rss_mb"] = max(entry["peak_rss_mb"] or 0.0, peak)
    return out


def run_summary(run_dir: Path) -> dict:
    metrics = read_json(run_dir / "metrics.json")
    config = metrics["config"]
    found = main_students(metrics)
    if not found:
        raise Failure(f"{run_dir}/metrics.json has no scored {config['variant']} student")
    student = found[0]  # the first fold's: the one export reads
    fold_index = metrics["folds"].index(student["fold"])
    teachers = metrics["teachers"][fold_index] if fold_index < len(metrics["teachers"]) else {}
    calibration = student.get("calibration") or {}
    stages = stage_times(run_dir)
    return {
        "dir": str(run_dir),
        "preset": preset_of(config),
        "dataset": config["dataset"],
        "data_path": config["data_path"],
        "protocol": config["protocol"],
        "student_model": config["student_model"],
        "epochs": config["epochs"],
        "labels": config["labels"],
        "fold": student["fold"],
        "variant": student["variant"],
        "seed": student["seed"],
        "best_epoch": student["best_epoch"],
        "speakers": student.get("speakers", {}),
        "test_best": scores(student["test_best"]),
        "test_last": scores(student["test_last"]),
        "corpora_best": {c: scores(r) for c, r in student.get("corpora_best", {}).items()},
        "corpora_last": {c: scores(r) for c, r in student.get("corpora_last", {}).items()},
        "teachers": {
            name: {"test_ua": t["test"]["ua"], "test_wa": t["test"]["wa"]}
            for name, t in teachers.items()
            if t.get("test")
        },
        "calibration": {key: calibration[key] for key in CALIBRATION_KEYS if key in calibration},
        "calibration_corpora": {
            corpus: {key: report[key] for key in CALIBRATION_KEYS if key in report}
            for corpus, report in student.get("calibration_corpora", {}).items()
        },
        "refit_test": scores(student["refit"]["test"]) if student.get("refit") else None,
        "seconds": metrics["seconds"],
        "stages": stages,
        "stage_seconds": round(sum(s["seconds"] for s in stages.values()), 1),
    }


def loco_rows(run_dirs: Sequence[Path]) -> list[dict]:
    """One row per leave-one-corpus-out fold: trained on the run's other corpora."""
    rows = []
    for run_dir in run_dirs:
        metrics = read_json(run_dir / "metrics.json")
        config = metrics["config"]
        corpora = corpus_names(config["dataset"], config["data_path"])
        if config["protocol"] != "loso" or len(corpora) < 2:
            raise Failure(
                f"{run_dir}: protocol {config['protocol']} over {corpora or config['dataset']}; "
                "a leave-one-corpus-out run is --dataset=corpora --protocol=loso over >= 2 corpora"
            )
        for student in main_students(metrics):
            rows.append({
                "run": str(run_dir),
                "train": [c for c in corpora if c != student["fold"]],
                "test": student["fold"],
                "student_model": config["student_model"],
                "epochs": config["epochs"],
                "valid_speakers": config["valid_speakers"],
                "best_epoch": student["best_epoch"],
                "test_best": scores(student["test_best"]),
                "test_last": scores(student["test_last"]),
            })  # fmt: skip
    return rows
