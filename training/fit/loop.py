"""The student's training loop: cached teacher targets in, best/last checkpoints out.

Device and process handling is ``accelerate``'s (CPU, one GPU, or DDP under ``torchrun``); the
batches and their sharding are ``training.fit.batches``', the checkpoint folders
``training.fit.checkpoints``'.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from tqdm.auto import tqdm

from emocore.audio import SAMPLE_RATE
from training.eval.metrics import ccc_per_dimension
from training.fit.augment import Augmentation, AugmentOptions
from training.fit.batches import AudioSet, EpochBatches, bucketed_batches, epoch_pool, pad
from training.fit.checkpoints import (
    TRAINER_STATE,
    checkpoint,
    recover_checkpoints,
    rng_states,
    set_rng_states,
)
from training.fit.losses import LossWeights, distill_loss
from training.models.student import Student, build_classifier, load_student, save_student

log = logging.getLogger("emodistill.training")


def warmup_cosine(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_ratio: float
) -> LambdaLR:
    """Linear warmup over ``warmup_ratio`` of the steps, then cosine decay to 0."""
    warmup = max(1, int(round(total_steps * warmup_ratio)))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return LambdaLR(optimizer, factor)


@dataclass
class StudentOptions:
    model: str = "tiny"
    labels: tuple[str, ...] = ()
    epochs: int = 10
    batch_size: int = 16
    eval_batch_size: int = 16
    grad_accum: int = 1
    lr_encoder: float = 5e-4
    lr_heads: float = 1e-3
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    grad_clip: float = 1.0
    freeze_feature_encoder: bool = False
    freeze_layers: int = 0
    weighted_layers: bool = False
    max_seconds: float = 3.0
    speed_perturb: float = 0.0
    augment: AugmentOptions = field(default_factory=AugmentOptions)
    bucket_size: int = 8
    num_workers: int = 0
    seed: int = 0
    max_steps: int = 0  # batches per epoch and process at most (0 = all): rehearsals, smoke runs
    # unlabelled (class -1, transfer) utterances drawn per labelled one each epoch
    transfer_mix: float = 1.0
    weights: LossWeights = field(default_factory=LossWeights)
    progress: bool = True
    desc: str = "student"


class DistillModel(nn.Module):
    """The student plus its projection heads in one forward (one DDP module, one backward):
    (logits, embedding, projected, dimensions or None)."""

    def __init__(self, student: Student):
        super().__init__()
        self.student = student

    def forward(self, audio: torch.Tensor, lengths: torch.Tensor):
        logits, embedding, *dimensions = self.student(audio, lengths)
        projected = {t: self.student.project(embedding, t) for t in self.student.projections}
        return logits, embedding, projected, (dimensions[0] if dimensions else None)


def param_groups(student: Student, opts: StudentOptions) -> list[dict]:
    """Encoder vs heads learning rates; no weight decay on biases and norms (1-D tensors)."""
    groups: dict[tuple[str, bool], list[nn.Parameter]] = {}
    encoder = {id(p) for p in student.classifier.base_model.parameters()}
    for p in student.parameters():
        if p.requires_grad:
            groups.setdefault(("enc" if id(p) in encoder else "head", p.ndim > 1), []).append(p)
    return [
        {
            "params": params,
            "lr": opts.lr_encoder if part == "enc" else opts.lr_heads,
            "weight_decay": opts.weight_decay if decay else 0.0,
        }
        for (part, decay), params in groups.items()
    ]


def _to_device(batch, device):
    audio, lengths, y, rated, targets = batch
    targets = {t: {k: v.to(device) for k, v in parts.items()} for t, parts in targets.items()}
    return audio.to(device), lengths.to(device), y.to(device), rated.to(device), targets


def predict(
    student: Student, data: AudioSet, batch_size: int, accelerator: Accelerator
) -> tuple[np.ndarray, np.ndarray]:
    """(logits [N, C], embeddings [N, D]) on whole clips; work sharded over processes."""
    return predict_outputs(student, data, batch_size, accelerator)[:2]


@torch.no_grad()
def predict_outputs(
    student: Student, data: AudioSet, batch_size: int, accelerator: Accelerator
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(logits [N, C], embeddings [N, D], dimensions [N, 3] or None without the head)."""
    from accelerate.utils import gather_object

    student.eval()
    order = np.argsort(data.lengths, kind="stable")
    mine = order[accelerator.process_index :: accelerator.num_processes]
    # Whisper encoders hear at most 30 s: a longer clip is scored on its first 30 s.
    limit = student.max_samples
    rows = []
    for start in range(0, len(mine), batch_size):
        idx = mine[start : start + batch_size]
        audio, lengths = pad([data.samples(i)[:limit] for i in idx])
        with accelerator.autocast():
            outputs = student(audio.to(accelerator.device), lengths.to(accelerator.device))
        arrays = [o.float().cpu().numpy() for o in outputs]
        rows += list(zip(idx.tolist(), *arrays, strict=True))
    if accelerator.num_processes > 1:
        rows = gather_object(rows)
    rows.sort(key=lambda r: r[0])
    dims = np.stack([r[3] for r in rows]) if student.dimension_head is not None else None
    return np.stack([r[1] for r in rows]), np.stack([r[2] for r in rows]), dims


def new_student(opts: StudentOptions, teacher_dims: dict[str, int]) -> Student:
    classifier = build_classifier(
        opts.model, opts.labels, use_weighted_layer_sum=opts.weighted_layers
    )
    return Student(classifier, teacher_dims, dimensions=opts.weights.dimensions)


def freeze(student: Student, opts: StudentOptions) -> Student:
    """What stays fixed during training (a new or a resumed student alike)."""
    if opts.freeze_feature_encoder:
        student.freeze_feature_encoder()
    student.freeze_layers(opts.freeze_layers)
    return student


def release_host_memory() -> None:
    """Hand freed heap memory back to the OS (glibc keeps it otherwise): each hubert-base student
    allocates ~1.5 GB of weights, gradients and Adam state on a CPU run, and without this the
    next student's peak RSS started above the last one's (measured over consecutive hubert-base
    students on CPU)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def train_student(
    train: AudioSet,
    valid: AudioSet,
    opts: StudentOptions,
    out_dir: Path,
    accelerator: Accelerator,
    metric_fn,
) -> dict:
    """Train with ``opts.weights``; save ``out_dir/best`` (on validation UA) and ``out_dir/last``.

    Resumes from ``out_dir/last`` when it exists. ``metric_fn(y_true, logits) -> dict`` scores
    validation (the best epoch's validation logits come back as ``best_valid_logits``, or None
    when that epoch ran before a resume; its dimensions as ``best_valid_dimensions``). An empty
    ``valid`` set (a refit on all non-test speakers, or the ``final`` protocol) trains the fixed
    number of epochs: best is then the last epoch. Returns
    {"history", "best_epoch", "best_valid"}. The accelerator keeps no reference to this
    student's model or optimizer afterwards (one accelerator serves many students).
    """
    from accelerate.utils import set_seed

    set_seed(opts.seed)
    dims = {t: train.targets[t]["embedding"].shape[1] for t in opts.weights.embedding_teachers}
    last_dir, best_dir = out_dir / "last", out_dir / "best"
    if accelerator.is_main_process:
        recover_checkpoints(last_dir, best_dir)
    accelerator.wait_for_everyone()
    resume = (last_dir / TRAINER_STATE).is_file()
    student = freeze(load_student(last_dir) if resume else new_student(opts, dims), opts)
    optimizer = torch.optim.AdamW(param_groups(student, opts), lr=opts.lr_heads)
    model, optimizer = accelerator.prepare(DistillModel(student), optimizer)
    world, rank = accelerator.num_processes, accelerator.process_index
    pool_size = len(epoch_pool(train.labelled, opts.transfer_mix, opts.seed, 1))
    n_batches = len(bucketed_batches(np.zeros(pool_size), opts.batch_size, 1, 0, 0, rank, world))
    if opts.max_steps > 0:
        n_batches = min(n_batches, opts.max_steps)
    steps = opts.epochs * math.ceil(n_batches / opts.grad_accum)
    scheduler = warmup_cosine(optimizer, steps, opts.warmup_ratio)
    state = {"epoch": 0, "history": [], "best_ua": -1.0, "best_epoch": 0}
    # The best epoch's validation logits (and dimensions), when this call computed them.
    best_valid_logits = best_valid_dimensions = None
    if resume:
        # map_location: a run saved on a GPU resumes on another device (or CPU) too.
        saved = torch.load(last_dir / TRAINER_STATE, map_location="cpu", weights_only=False)
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        state = saved["state"]
        if "rng" in saved:  # states saved before RNG states were kept resume without them
            set_rng_states(saved["rng"])
        log.info("%s: resuming after epoch %d of %d", opts.desc, state["epoch"], opts.epochs)
    max_samples = int(opts.max_seconds * SAMPLE_RATE)
    if student.max_samples is not None:  # 0 (whole clips) or longer: the encoder's own limit
        max_samples = min(max_samples or student.max_samples, student.max_samples)
    accelerator.gradient_accumulation_steps = opts.grad_accum
    # The training clips only (validation is scored on clean whole clips); rooms simulated here.
    augment = Augmentation(opts.augment, opts.speed_perturb)
    log.info("%s: augmentation %s", opts.desc, augment.describe())
    for epoch in range(state["epoch"] + 1, opts.epochs + 1):
        model.train()
        started = time.monotonic()
        # Bucket by the length the model sees: utterances longer than the crop all count as
        # equal, so their batches stay random (lengths correlate with emotion through speech rate).
        pool = epoch_pool(train.labelled, opts.transfer_mix, opts.seed, epoch)
        lengths = train.lengths[pool]
        batches = bucketed_batches(
            np.minimum(lengths, max_samples) if max_samples > 0 else lengths,
            opts.batch_size,
            opts.bucket_size,
            opts.seed,
            epoch,
            rank,
            world,
        )
        batches = [pool[b] for b in batches]
        if opts.max_steps > 0:
            batches = batches[: opts.max_steps]
        sums: dict[str, float] = {}
        loader = torch.utils.data.DataLoader(
            EpochBatches(train, batches, max_samples, opts.seed, epoch, augment),
            batch_size=None,
            num_workers=opts.num_workers,
        )
        bar = tqdm(
            loader,
            desc=f"{opts.desc} {epoch}/{opts.epochs}",
            disable=not (opts.progress and accelerator.is_main_process),
            leave=False,
        )
        for step, batch in enumerate(bar, 1):
            audio, lengths, y, rated, targets = _to_device(batch, accelerator.device)
            with accelerator.accumulate(model), accelerator.autocast():
                logits, _, projected, dimensions = model(audio, lengths)
                loss, terms = distill_loss(
                    logits, projected, y, targets, opts.weights, dimensions, rated
                )
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    if opts.grad_clip > 0:
                        accelerator.clip_grad_norm_(model.parameters(), opts.grad_clip)
                    optimizer.step()
                    scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            terms["loss"] = loss.item()
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v
            bar.set_postfix(loss=f"{sums['loss'] / step:.3f}")
        bar.close()
        means = {k: v / len(batches) for k, v in sums.items()}
        student = accelerator.unwrap_model(model).student
        if len(valid):
            logits, _, dims = predict_outputs(student, valid, opts.eval_batch_size, accelerator)
            metrics = metric_fn(valid.y, logits)
            if dims is not None and valid.rated.sum() > 1:
                means["valid_ccc"] = float(np.mean(ccc_per_dimension(dims, valid.dimensions)))
        else:  # no validation speakers: the fixed epoch count decides, best = last
            metrics = {"ua": float("nan"), "wa": float("nan")}
        record = {
            "epoch": epoch,
            **means,
            "valid_ua": metrics["ua"],
            "valid_wa": metrics["wa"],
            "seconds": round(time.monotonic() - started, 1),
        }
        state["history"].append(record)
        improved = metrics["ua"] > state["best_ua"] or not len(valid)
        if improved:
            state.update(best_ua=metrics["ua"], best_epoch=epoch)
            best_valid_logits = logits if len(valid) else None
            best_valid_dimensions = dims if len(valid) else None
        scored = (
            f"valid UA {metrics['ua']:.3f} WA {metrics['wa']:.3f}"
            if len(valid)
            else "no validation speakers"  # a refit or the final protocol: no nan to read
        )
        log.info(
            "%s epoch %d/%d: loss %.3f (%s), %s%s [%.0fs]",
            opts.desc,
            epoch,
            opts.epochs,
            means["loss"],
            ", ".join(f"{k} {v:.3f}" for k, v in means.items() if k != "loss"),
            scored,
            " *best*" if improved and len(valid) else "",
            record["seconds"],
        )
        state["epoch"] = epoch
        if accelerator.is_main_process:
            if improved and len(valid):  # without validation, last is the only checkpoint
                with checkpoint(best_dir) as folder:
                    save_student(student, folder)
                    (folder / "epoch.json").write_text(
                        json.dumps({"epoch": epoch, "valid": metrics if len(valid) else None})
                    )
            with checkpoint(last_dir) as folder:
                save_student(student, folder)
                torch.save(
                    {
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "state": state,
                        "rng": rng_states(),
                    },
                    folder / TRAINER_STATE,
                )
        accelerator.wait_for_everyone()
    # accelerator.prepare() keeps every prepared model and optimizer in lists of its own:
    # without this, each student of a run stayed in (GPU) memory until the run ended.
    del model, optimizer, scheduler, student
    accelerator.free_memory()
    release_host_memory()
    return {
        "history": state["history"],
        "best_epoch": state["best_epoch"],
        "best_valid_ua": state["best_ua"],
        "best_valid_logits": best_valid_logits,
        "best_valid_dimensions": best_valid_dimensions,
    }
