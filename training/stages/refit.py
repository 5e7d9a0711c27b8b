"""Stage 6, refit (``--refit``): a student retrained on all non-test speakers (train + valid)
for the epoch count its validation speakers chose, then tested: ``student/refit/`` beside
``student/best``."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from accelerate import Accelerator

from training.config import Config
from training.data.utterance import Utterance
from training.eval.reports import brief, ccc_scores, scorer
from training.fit.batches import AudioSet
from training.fit.loop import predict_outputs, release_host_memory, train_student
from training.fit.targets import load_targets, without_scripted
from training.models.student import load_student
from training.stages.data import audio_set
from training.stages.students import DONE, finish, student_dir, student_options, weights_for

log = logging.getLogger("emodistill.training")


def run_refit(
    cfg: Config,
    fold_dir: Path,
    variant: str,
    seed: int,
    result: dict,
    parts: dict[str, list[Utterance]],
    data: dict[str, AudioSet],
    teachers: list[str],
    accelerator: Accelerator,
) -> dict:
    """Retrain the student of ``result`` on all non-test speakers for its best epoch count and
    score it on the test speakers."""
    sdir = student_dir(cfg, fold_dir, variant, seed) / "refit"
    if (sdir / DONE).is_file():
        log.info("refit %s seed %d: done, skipped (%s)", variant, seed, sdir)
        return json.loads((sdir / DONE).read_text(encoding="utf-8"))
    epochs = int(result["best_epoch"])
    pool = parts["train"] + parts["valid"]
    train = audio_set(cfg, pool)
    weights = weights_for(cfg, variant, train)
    used = [t for t in teachers if weights.uses(t)]
    train.targets = without_scripted(
        load_targets(fold_dir / "targets", used, [u.id for u in pool]), pool, cfg.scripted_corpora
    )
    empty = AudioSet([], np.zeros(0, dtype=int), cache=False, durations=[])
    opts = student_options(cfg, weights, seed, f"refit {variant} s{seed}")
    opts.epochs = epochs
    score = scorer(cfg.labels)
    trained = train_student(train, empty, opts, sdir, accelerator, score)
    trained.pop("best_valid_logits")
    trained.pop("best_valid_dimensions")
    student = load_student(sdir / "last").to(accelerator.device)
    logits, _, dims = predict_outputs(student, data["test"], cfg.eval_batch_size, accelerator)
    del student
    release_host_memory()
    speakers = {
        "train": sorted({u.speaker for u in pool}),
        "valid": [],
        "test": sorted({u.speaker for u in parts["test"]}),
    }
    refit = {
        "epochs": epochs,
        "epochs_chosen_on": sorted({u.speaker for u in parts["valid"]}),
        "train_utterances": len(pool),
        "speakers": speakers,
        "test": score(data["test"].y, logits),
        "history": trained["history"],
    }
    if dims is not None:
        refit["test"]["ccc"] = ccc_scores(dims, data["test"].dimensions)
    log.info(
        "refit %s seed %d: %d epochs on %d utterances (%s), test UA %.3f",
        variant, seed, epochs, len(pool), ",".join(speakers["train"]), refit["test"]["ua"],
    )  # fmt: skip
    summary = {
        "fold": result["fold"], "epoch": epochs, "valid": None, "test": brief(refit["test"]),
        "seed": seed, "variant": variant, "refit": True, "speakers": speakers,
        "calibration": result.get("calibration"),
    }  # fmt: skip
    return finish(cfg, sdir, "last", refit, summary, accelerator)
