"""Stage 7, report: ``metrics.json`` (everything measured), ``results.md`` (the tables) and the
figures (confusion matrices, training curves, layer weights) in the run directory."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from training.config import Config
from training.data.splits import Fold
from training.eval.reports import (
    aggregate,
    calibration_table,
    confusion_png,
    corpus_table,
    plot_curves,
    plot_layer_weights,
    probe_table,
    refit_table,
    results_table,
    speakers_table,
    subset_table,
)

log = logging.getLogger("emodistill.training")


def collect(
    cfg: Config, folds: list[Fold], students: list[dict], teachers: list[dict], seconds: float
) -> dict:
    """The run's metrics: its config, the per-variant summary over (fold, seed) runs, each
    fold's teachers and every student's result without its epoch history."""
    return {
        "config": cfg.to_dict(),
        "folds": [f.name for f in folds],
        "summary": aggregate([s for s in students if "test_best" in s], teachers),
        "teachers": teachers,
        "students": [{k: v for k, v in s.items() if k != "history"} for s in students],
        "seconds": round(seconds, 1),
    }


def transcripts_note(metrics: dict) -> str:
    """Where the transcripts came from (the transcribe stage), e.g. "720 given, 240 by
    asr:whisper-tiny.en"; empty for a run without that record."""
    sources = metrics.get("transcripts", {}).get("sources")
    if not sources:
        return ""
    return "Transcripts: " + ", ".join(f"{n} {s}" for s, n in sources.items()) + ".\n"


def write_report(
    cfg: Config,
    run_dir: Path,
    folds: list[Fold],
    students: list[dict],
    teachers: list[dict],
    histories: dict[str, list[dict]],
    metrics: dict,
) -> None:
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=1), encoding="utf-8")
    seeds = sorted({s["seed"] for s in students})
    title = (
        f"{cfg.dataset}, protocol {cfg.protocol}, folds {', '.join(f.name for f in folds)}, "
        f"seeds {', '.join(map(str, seeds))}, student {cfg.student_model}, {cfg.epochs} epochs"
    )
    speakers = speakers_table(students)
    scored = [s for s in students if "test_best" in s]
    if not scored:  # the final protocol: nothing held out, nothing to score
        text = (
            f"### {title}\n\nFinal model(s): trained on every speaker for {cfg.epochs} epochs, "
            f"no validation or test speakers.\n{speakers}"
        )
        (run_dir / "results.md").write_text(text, encoding="utf-8")
        plot_curves(histories, run_dir / "training_curves.png")
        log.info("results (%s):\n%s", run_dir / "results.md", text)
        return
    students = scored
    table = (
        results_table(students, teachers, title) + subset_table(students) + probe_table(students)
    )
    table += corpus_table(students)
    table += calibration_table(students) + refit_table(students) + speakers
    note = (
        "\nUA/WA in % on the held-out test speakers, mean ± std over (fold, seed) runs; teachers "
        "over folds. 'best valid' = the epoch with the best validation UA, 'last epoch' = the "
        f"final epoch. Total time {metrics['seconds'] / 60:.1f} min.\n"
    ) + transcripts_note(metrics)
    (run_dir / "results.md").write_text(table + note, encoding="utf-8")
    for fold, fold_teachers in zip(folds, teachers, strict=True):
        for name, tm in fold_teachers.items():
            if not tm.get("test"):
                continue
            confusion_png(tm["test"], cfg.labels, run_dir / f"confusion_{fold.name}_{name}_teacher.png",
                          f"{name} teacher, fold {fold.name} (test)")  # fmt: skip
        main = [s for s in students if s["fold"] == fold.name and s["variant"] == cfg.variant]
        if main:
            confusion_png(main[0]["test_best"], cfg.labels, run_dir / f"confusion_{fold.name}_student.png",
                          f"student {cfg.variant}, fold {fold.name} (test)")  # fmt: skip
            for corpus, scores in main[0].get("corpora_best", {}).items():
                confusion_png(scores, cfg.labels, run_dir / f"confusion_{fold.name}_student_{corpus}.png",
                              f"student {cfg.variant}, fold {fold.name}, {corpus} (test)")  # fmt: skip
    plot_curves(histories, run_dir / "training_curves.png")
    weighted = [s for s in students if s.get("layer_weights")]
    if weighted:
        plot_layer_weights(weighted, run_dir / "layer_weights.png")
    log.info("results (%s):\n%s", run_dir / "results.md", table)
