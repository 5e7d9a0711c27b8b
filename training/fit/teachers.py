"""The teachers' fit: fine-tuning, inference, and each teacher's training run (single process;
teachers are cheap).

A teacher is an ``nn.Module`` whose ``forward(**inputs)`` returns ``(logits, embedding)``;
``collate(items) -> inputs`` turns a list of per-utterance inputs into a batch. Selection is on
validation UA, as for the student.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from training.data.utterance import Utterance
from training.eval.metrics import compute_metrics
from training.fit.loop import warmup_cosine
from training.models.teachers import LinguisticTeacher, ProsodicTeacher
from training.models.teachers.linguistic import make_collate, texts
from training.models.teachers.prosodic import collate as prosodic_collate

log = logging.getLogger("emodistill.training")

Collate = Callable[[Sequence], dict[str, torch.Tensor]]


@dataclass
class FitOptions:
    epochs: int
    lr: float
    batch_size: int
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0
    device: str = "cpu"
    desc: str = "teacher"
    progress: bool = True
    max_steps: int = 0  # batches per epoch at most (0 = all): rehearsals, smoke runs


@dataclass
class FitResult:
    best_epoch: int
    valid: dict
    history: list[dict] = field(default_factory=list)


def _batches(n: int, batch_size: int, rng: np.random.Generator | None) -> list[np.ndarray]:
    order = rng.permutation(n) if rng is not None else np.arange(n)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def _to(inputs: dict[str, torch.Tensor], device: str) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in inputs.items()}


@torch.no_grad()
def predict(
    model: nn.Module, collate: Collate, items: Sequence, batch_size: int, device: str
) -> tuple[np.ndarray, np.ndarray]:
    """(logits [N, C], embeddings [N, D]) as float32 numpy, in ``items`` order."""
    model.eval().to(device)
    logits, embeddings = [], []
    for idx in _batches(len(items), batch_size, None):
        out_logits, out_emb = model(**_to(collate([items[i] for i in idx]), device))
        logits.append(out_logits.float().cpu())
        embeddings.append(out_emb.float().cpu())
    return torch.cat(logits).numpy(), torch.cat(embeddings).numpy()


def evaluate(
    model: nn.Module,
    collate: Collate,
    items: Sequence,
    y: np.ndarray,
    labels: Sequence[str],
    batch_size: int,
    device: str,
) -> dict:
    logits, _ = predict(model, collate, items, batch_size, device)
    return compute_metrics(list(y), list(logits.argmax(-1)), list(range(len(labels))))


def fit(
    model: nn.Module,
    collate: Collate,
    train: tuple[Sequence, np.ndarray],
    valid: tuple[Sequence, np.ndarray],
    labels: Sequence[str],
    opts: FitOptions,
    train_collate: Collate | None = None,
) -> FitResult:
    """Fine-tune with cross-entropy; keep (and load) the weights of the best validation UA.
    Without validation items (the ``final`` protocol) the last epoch is kept.

    ``train_collate`` (default ``collate``) may augment, e.g. crop; evaluation uses ``collate``.
    """
    train_collate = train_collate or collate
    torch.manual_seed(opts.seed)
    rng = np.random.default_rng(opts.seed)
    items, y = train
    model.to(opts.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)
    per_epoch = len(_batches(len(items), opts.batch_size, None))
    if opts.max_steps > 0:
        per_epoch = min(per_epoch, opts.max_steps)
    steps = opts.epochs * per_epoch
    scheduler = warmup_cosine(optimizer, steps, opts.warmup_ratio)
    best: tuple[float, int, dict] = (-1.0, 0, {})
    history = []
    for epoch in range(1, opts.epochs + 1):
        model.train()
        losses, hits = [], 0
        batches = _batches(len(items), opts.batch_size, rng)[:per_epoch]
        bar = tqdm(batches, desc=f"{opts.desc} {epoch}/{opts.epochs}", disable=not opts.progress)
        for idx in bar:
            logits, _ = model(**_to(train_collate([items[i] for i in idx]), opts.device))
            target = torch.as_tensor(y[idx], device=opts.device)
            loss = F.cross_entropy(logits.float(), target)
            hits += int((logits.argmax(-1) == target).sum())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if opts.grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), opts.grad_clip)
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses):.3f}")
        # Training accuracy: the epoch's own batches as trained on (dropout on, weights moving).
        train_accuracy = hits / sum(len(b) for b in batches)
        if not len(valid[0]):
            history.append(
                {"epoch": epoch, "loss": float(np.mean(losses)), "train_accuracy": train_accuracy}
            )
            best = (0.0, epoch, {})
            continue
        metrics = evaluate(model, collate, *valid, labels, opts.batch_size, opts.device)
        history.append(
            {
                "epoch": epoch,
                "loss": float(np.mean(losses)),
                "train_accuracy": train_accuracy,
                "valid_ua": metrics["ua"],
                "valid_wa": metrics["wa"],
            }
        )
        log.info(
            "%s epoch %d/%d: train loss %.3f, valid UA %.3f WA %.3f",
            opts.desc,
            epoch,
            opts.epochs,
            np.mean(losses),
            metrics["ua"],
            metrics["wa"],
        )
        if metrics["ua"] > best[0]:
            state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            best = (metrics["ua"], epoch, state)
            best_metrics = metrics
    if not len(valid[0]):
        return FitResult(best_epoch=best[1], valid=None, history=history)
    model.load_state_dict(best[2])
    # Evaluation is deterministic: the best epoch's figures are those of the loaded weights.
    return FitResult(best_epoch=best[1], valid=best_metrics, history=history)


def fit_and_test(
    model: nn.Module,
    collate: Collate,
    parts: dict[str, tuple[Sequence, np.ndarray]],
    labels: Sequence[str],
    opts: FitOptions,
    train_collate: Collate | None = None,
) -> dict:
    """``fit`` on parts["train"] (selection on parts["valid"]), then score parts["test"]
    (None when empty): the metrics a teacher reports (best epoch, its training accuracy,
    valid, test, history, embedding size)."""
    result = fit(model, collate, parts["train"], parts["valid"], labels, opts, train_collate)

    def score(part: str) -> dict | None:
        if not len(parts[part][0]):
            return None
        return evaluate(model, collate, *parts[part], labels, opts.batch_size, opts.device)

    return {
        "best_epoch": result.best_epoch,
        "train_accuracy": result.history[result.best_epoch - 1]["train_accuracy"],
        "valid": result.valid,
        "test": score("test"),
        "history": result.history,
        "embedding_dim": model.embedding_dim,
    }


def cropping_collate(max_frames: int, seed: int) -> Collate:
    """Random crops of at most ``max_frames`` frames (an augmentation; 0 = whole utterances)."""
    rng = np.random.default_rng(seed)

    def crop(feats: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
        out = []
        for f in feats:
            start = int(rng.integers(0, len(f) - max_frames + 1)) if len(f) > max_frames else 0
            out.append(f[start : start + max_frames])
        return prosodic_collate(out)

    return crop if max_frames > 0 else prosodic_collate


def train_prosodic(
    feats: dict[str, list[np.ndarray]],
    y: dict[str, np.ndarray],
    labels: Sequence[str],
    *,
    hidden: int,
    layers: int,
    dropout: float,
    max_frames: int,
    opts: FitOptions,
    out_dir: Path,
) -> dict:
    """Train on normalised ``feats["train"]``, select on valid UA, save, return metrics."""
    torch.manual_seed(opts.seed)
    teacher = ProsodicTeacher(len(labels), feats["train"][0].shape[1], hidden, layers, dropout)
    report = fit_and_test(
        teacher,
        prosodic_collate,
        {part: (feats[part], y[part]) for part in ("train", "valid", "test")},
        labels,
        opts,
        train_collate=cropping_collate(max_frames, opts.seed),
    )
    teacher.cpu().save(out_dir)
    return report


def train_linguistic(
    parts: dict[str, list[Utterance]],
    y: dict[str, np.ndarray],
    labels: Sequence[str],
    *,
    model: str,
    dropout: float,
    max_tokens: int,
    opts: FitOptions,
    out_dir: Path,
) -> dict:
    """Fine-tune on ``parts["train"]`` transcripts, select on valid UA, save, return metrics."""
    missing = sum(not u.transcript for u in parts["train"])
    if missing == len(parts["train"]):
        raise ValueError("the linguistic teacher needs transcripts; the training part has none")
    torch.manual_seed(opts.seed)  # the new head's initialisation
    teacher, tokenizer = LinguisticTeacher.from_pretrained(model, len(labels), dropout)
    collate = make_collate(tokenizer, max_tokens)
    report = fit_and_test(
        teacher,
        collate,
        {part: (texts(parts[part]), y[part]) for part in ("train", "valid", "test")},
        labels,
        opts,
    )
    teacher.cpu().save(out_dir, tokenizer)
    return {**report, "model": model}
