"""Stage 3, teachers: which teachers the planned students need, and training each one (the
linguistic teacher on transcripts, the prosodic one on LLDs) in ``FOLD/teachers/NAME/``.

A teacher is trained on the fold's training speakers and selected on its validation speakers
(the last epoch when there are none); ``metrics.json`` marks it done. Its outputs on other
utterances and its dimension read-out serve the targets (``training.stages.targets``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from training.config import Config
from training.data.utterance import Utterance, dimension_array
from training.fit.losses import TEACHERS, LossWeights
from training.fit.targets import (
    PROBE_FILE,
    DimensionProbe,
    has_dimensions,
    linguistic_outputs,
    prosodic_outputs,
    target_path,
)
from training.fit.teachers import FitOptions, train_linguistic, train_prosodic
from training.stages.data import PARTS

log = logging.getLogger("emodistill.training")


def needed(plan: Sequence[tuple[str, int]], weights: LossWeights) -> list[str]:
    """The teachers some (variant, seed) of ``plan`` distils."""
    used = set()
    for variant, _ in plan:
        w = weights.for_variant(variant)
        used |= {t for t in TEACHERS if w.uses(t)}
    return [t for t in TEACHERS if t in used]


def dimensions_needed(
    plan: Sequence[tuple[str, int]], weights: LossWeights, train: Sequence[Utterance]
) -> bool:
    """Whether the cached targets must carry the teachers' dimensions: some variant distils
    them and some training utterance is rated (the teachers' read-out is fitted on those)."""
    wanted = any(weights.for_variant(v).dimension_teachers for v, _ in plan)
    return wanted and any(u.dimensions is not None for u in train)


def done(fold_dir: Path, teacher: str, dimensions: bool = False) -> bool:
    """Targets cached (with the teacher's dimensions when they are needed)."""
    path = target_path(fold_dir / "targets", teacher)
    return path.is_file() and (not dimensions or has_dimensions(path))


def pending(fold_dir: Path, teachers: list[str], dimensions: bool) -> list[str]:
    """The teachers whose targets are still to make; the others are logged as skipped."""
    todo = [t for t in teachers if not done(fold_dir, t, dimensions)]
    for teacher in teachers:
        if teacher not in todo:
            log.info("%s teacher and targets: done, skipped", teacher)
    return todo


def teacher_options(cfg: Config, teacher: str, device: str, desc: str) -> FitOptions:
    return FitOptions(
        epochs=getattr(cfg, f"{teacher}_epochs"),
        lr=getattr(cfg, f"{teacher}_lr"),
        batch_size=getattr(cfg, f"{teacher}_batch_size"),
        weight_decay=cfg.weight_decay,
        warmup_ratio=cfg.warmup_ratio,
        grad_clip=cfg.grad_clip,
        seed=cfg.seed,
        device=device,
        desc=desc,
        max_steps=cfg.teacher_max_steps,
    )


def fit_teacher(
    cfg: Config,
    teacher: str,
    parts: dict[str, list[Utterance]],
    feats: dict[str, np.ndarray] | None,
    tdir: Path,
    device: str,
    desc: str,
) -> dict:
    """Train one teacher on parts["train"] (selection on parts["valid"]; the last epoch when it
    is empty), score it, save it in ``tdir``; skipped when ``tdir/metrics.json`` exists."""
    metrics_file = tdir / "metrics.json"
    if metrics_file.is_file():
        log.info("%s: done, skipped (%s)", desc, metrics_file)
        return json.loads(metrics_file.read_text(encoding="utf-8"))
    y = {p: np.array([cfg.labels.index(u.label) for u in parts[p]], dtype=int) for p in PARTS}
    started = time.monotonic()
    opts = teacher_options(cfg, teacher, device, desc)
    if teacher == "ling":
        metrics = train_linguistic(
            parts, y, cfg.labels, model=cfg.ling_model, dropout=cfg.ling_dropout,
            max_tokens=cfg.ling_max_tokens, opts=opts, out_dir=tdir,
        )  # fmt: skip
    else:
        part_feats = {p: [feats[u.id] for u in parts[p]] for p in PARTS}
        metrics = train_prosodic(
            part_feats, y, cfg.labels, hidden=cfg.pros_hidden, layers=cfg.pros_layers,
            dropout=cfg.pros_dropout, max_frames=cfg.pros_max_frames, opts=opts, out_dir=tdir,
        )  # fmt: skip
    metrics["seconds"] = round(time.monotonic() - started, 1)
    metrics["speakers"] = {p: sorted({u.speaker for u in parts[p]}) for p in PARTS}
    metrics_file.write_text(json.dumps(metrics, indent=1), encoding="utf-8")

    def ua(part: str) -> str:
        return f"{metrics[part]['ua']:.3f}" if metrics.get(part) else "-"

    log.info(
        "%s: best epoch %d, training accuracy %.3f, valid UA %s, test UA %s (%.0fs)",
        desc, metrics["best_epoch"], metrics["train_accuracy"], ua("valid"), ua("test"),
        metrics["seconds"],
    )  # fmt: skip
    return metrics


def teacher_outputs(
    cfg: Config,
    teacher: str,
    tdir: Path,
    utts: list[Utterance],
    feats: dict[str, np.ndarray] | None,
    device: str,
) -> tuple[np.ndarray, np.ndarray]:
    """The saved teacher's logits and embeddings of ``utts``."""
    bs = getattr(cfg, f"{teacher}_batch_size")
    if teacher == "ling":
        return linguistic_outputs(tdir, utts, cfg.ling_max_tokens, bs, device)
    return prosodic_outputs(tdir, [feats[u.id] for u in utts], bs, device)


def teacher_probe(
    cfg: Config,
    teacher: str,
    tdir: Path,
    train: list[Utterance],
    feats: dict[str, np.ndarray] | None,
    device: str,
    embedding: np.ndarray | None = None,
) -> DimensionProbe:
    """The teacher's dimension read-out, fitted on its own training utterances
    (``embedding``: the teacher's on ``train``, when already computed) and saved beside it;
    loaded when saved."""
    path = tdir / PROBE_FILE
    if path.is_file():
        return DimensionProbe.load(path)
    if embedding is None:
        _, embedding = teacher_outputs(cfg, teacher, tdir, train, feats, device)
    probe = DimensionProbe.fit(embedding, dimension_array(train))
    probe.save(path)
    return probe


def read_metrics(fold_dir: Path) -> dict:
    """Each trained teacher's ``metrics.json`` of the fold, by teacher."""
    out = {}
    for teacher in TEACHERS:
        path = fold_dir / "teachers" / teacher / "metrics.json"
        if path.is_file():
            out[teacher] = json.loads(path.read_text(encoding="utf-8"))
    return out
