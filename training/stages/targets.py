"""Stage 4, targets: each teacher's logits, embeddings and (when distilled) dimensions for the
fold's training and validation utterances, cached in ``FOLD/targets/NAME.npz`` (validation
targets serve a refit on all non-test speakers), with their statistics beside them.

``teacher_targets=crossfit``: the training speakers are split into ``crossfit_folds`` groups
(training.fit.crossfit); a teacher trained on the other groups (selected on the validation
speakers) gives each group's targets. ``insample``: the fold's teacher gives them all. Either
way the fold's teacher (all training speakers) is what the report scores, and it gives the
validation speakers' targets (it never trained on them). With ``dimensions`` the targets also
carry each teacher's predicted dimensions: the read-out of the teacher that gave the
utterance's logits.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from training.config import Config
from training.data.utterance import Utterance, dimension_array
from training.eval.reports import ccc_scores
from training.fit.crossfit import speaker_groups, target_stats
from training.fit.targets import DimensionProbe, target_path, write_targets
from training.stages.data import PARTS
from training.stages.teachers import fit_teacher, teacher_outputs, teacher_probe

log = logging.getLogger("emodistill.training")


def teacher_rows(
    utts: list[Utterance], logits: np.ndarray, emb: np.ndarray, probe: DimensionProbe | None
) -> dict[str, tuple]:
    """{id: (logits, embedding, dimensions or None)}: one teacher's targets of ``utts``."""
    dims = probe.predict(emb) if probe is not None else [None] * len(utts)
    return {u.id: (logits[i], emb[i], dims[i]) for i, u in enumerate(utts)}


def crossfit_rows(
    cfg: Config,
    teacher: str,
    fold_dir: Path,
    parts: dict[str, list[Utterance]],
    feats: dict[str, np.ndarray] | None,
    device: str,
    dimensions: bool,
) -> tuple[dict[str, tuple], list[dict]]:
    """The training utterances' targets, each group's from a teacher trained without its
    speakers (in ``FOLD/teachers/NAME/crossfit/G``), and where each group's came from."""
    tdir = fold_dir / "teachers" / teacher
    rows: dict[str, tuple] = {}
    sources = []
    for g, held in enumerate(speaker_groups(parts["train"], cfg.crossfit_folds)):
        inner = {
            "train": [u for u in parts["train"] if u.speaker not in held],
            "valid": parts["valid"],
            "test": [],
        }
        sub_dir = tdir / "crossfit" / str(g)
        desc = f"{teacher} teacher, cross-fit {g} (without {'+'.join(held)})"
        sub = fit_teacher(cfg, teacher, inner, feats, sub_dir, device, desc)
        out_of_fold = [u for u in parts["train"] if u.speaker in held]
        logits, emb = teacher_outputs(cfg, teacher, sub_dir, out_of_fold, feats, device)
        probe = (
            teacher_probe(cfg, teacher, sub_dir, inner["train"], feats, device)
            if dimensions
            else None
        )
        rows.update(teacher_rows(out_of_fold, logits, emb, probe))
        sources.append(
            {"dir": str(sub_dir.relative_to(fold_dir)), "predicts": held,
             "train_accuracy": sub["train_accuracy"]}
        )  # fmt: skip
    return rows, sources


def make_targets(
    cfg: Config,
    teacher: str,
    fold_dir: Path,
    parts: dict[str, list[Utterance]],
    feats: dict[str, np.ndarray] | None,
    device: str,
    dimensions: bool,
) -> None:
    """Cache ``teacher``'s targets of the training and validation utterances (the fold's
    teacher is trained first, ``training.stages.teachers.fit_teacher``)."""
    tdir = fold_dir / "teachers" / teacher
    if cfg.teacher_targets == "crossfit":
        rows, sources = crossfit_rows(cfg, teacher, fold_dir, parts, feats, device, dimensions)
        rest = parts["valid"]
    else:
        rows, sources = {}, []
        rest = parts["train"] + parts["valid"]
    if rest:
        logits, emb = teacher_outputs(cfg, teacher, tdir, rest, feats, device)
        # in-sample: ``rest`` starts with the fold teacher's own training utterances
        own = emb[: len(parts["train"])] if cfg.teacher_targets == "insample" else None
        probe = (
            teacher_probe(cfg, teacher, tdir, parts["train"], feats, device, own)
            if dimensions
            else None
        )
        rows.update(teacher_rows(rest, logits, emb, probe))
    labels = {u.id: cfg.labels.index(u.label) for p in PARTS for u in parts[p]}
    ids = [u.id for u in parts["train"] + parts["valid"]]
    logits = np.stack([rows[i][0] for i in ids])
    emb = np.stack([rows[i][1] for i in ids])
    dims = np.stack([rows[i][2] for i in ids]) if dimensions else None
    n_train = len(parts["train"])
    y = np.array([labels[i] for i in ids])
    stats = {
        "mode": cfg.teacher_targets,
        "train": target_stats(logits[:n_train], y[:n_train], cfg.temperature),
        "valid": target_stats(logits[n_train:], y[n_train:], cfg.temperature),
        "crossfit": sources,
    }
    out = target_path(fold_dir / "targets", teacher)
    out.parent.mkdir(parents=True, exist_ok=True)
    if dims is not None:  # how well the read-out matches the ratings (CCC per dimension)
        rated = dimension_array(parts["train"] + parts["valid"])
        stats["dimensions_ccc"] = {
            "train": ccc_scores(dims[:n_train], rated[:n_train]),
            "valid": ccc_scores(dims[n_train:], rated[n_train:]),
        }
        log.info("%s dimensions (CCC): %s", teacher, stats["dimensions_ccc"])
    out.with_suffix(".json").write_text(json.dumps(stats, indent=1), encoding="utf-8")
    write_targets(out, ids, logits, emb, dims)
    t = stats["train"]
    log.info(
        "%s targets (%s) on %d training utterances: accuracy %.3f, mean entropy %.3f nats "
        "(%.3f at T=%g; uniform %.3f), mean top probability %.3f",
        teacher, cfg.teacher_targets, t["n"], t["accuracy"], t["mean_entropy"],
        t[f"mean_entropy_T{cfg.temperature:g}"], cfg.temperature, t["max_entropy"],
        t["mean_top_probability"],
    )  # fmt: skip
