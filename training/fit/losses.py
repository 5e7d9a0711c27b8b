"""The distillation loss: ``CE + a_ling*KD_ling + a_pros*KD_pros + b_ling*EMB_ling + b_pros*EMB_pros``,
plus, for a student with the dimensions head, ``dim*CCC + c_ling*DIM_ling + c_pros*DIM_pros``.

``KD = KL(softmax(t/T) || softmax(s/T)) * T^2`` (Hinton et al.; the T^2 keeps its gradient scale
independent of T). ``EMB`` pulls the student's projected embedding towards the teacher's
embedding (cosine distance or MSE). A weight of 0 switches its term off, and the ablation
variants are just weight settings.

``teacher_weighting="confidence"`` scales both terms of each teacher, per utterance, by how much
probability that teacher gives the true label, relative to the other active teachers
(confidence-aware multi-teacher KD, Zhang et al., ICASSP 2022): ``w_t = K * p_t(y) / sum p(y)``
over the K active teachers, so the weights average 1 and a single teacher keeps weight 1. An
utterance whose emotion only the words carry is then distilled mostly from the linguistic
teacher, and one carried only by the melody from the prosodic teacher; ``fixed`` (the paper's
loss) gives every teacher weight 1 everywhere.

Dimensional affect (arousal, valence, dominance): ``CCC = 1 - mean over the 3 dimensions of
Lin's concordance correlation coefficient`` between the student's predictions and the rated
values, over the batch's utterances that have ratings (the others are masked out; fewer than
2 rated utterances in a batch leave the term out of that step). ``dim`` = 0 switches it off
and leaves the head out of the student. ``DIM_t`` distils the dimensions teacher ``t``
predicts (``training.fit.targets``: a ridge regression on the teacher's embedding): the mean
squared difference in normalised units (-1..1 spans the 1-5 scale), per utterance, weighted
by the same per-utterance teacher shares as the logit KD; it needs ``dim`` > 0 (the head).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from training.data.utterance import DIMENSION_SCALE

TEACHERS: tuple[str, ...] = ("ling", "pros")
TEACHER_WEIGHTINGS: tuple[str, ...] = ("fixed", "confidence")

_ALL = dict(a_ling=True, a_pros=True, b_ling=True, b_pros=True, c_ling=True, c_pros=True, dim=True)
# Ablation variants: which of the configured weights stay on (the rest become 0). The ``c_``
# weights (dimension distillation) follow the teachers a variant distils; ``dim`` (the CCC
# term, and so the head) stays on except in ``no_dims``.
VARIANTS: dict[str, dict[str, bool]] = {
    "ce_only": dict(_ALL, a_ling=False, a_pros=False, b_ling=False, b_pros=False, c_ling=False,
                    c_pros=False),
    "ce+ling": dict(_ALL, a_pros=False, b_pros=False, c_pros=False),
    "ce+pros": dict(_ALL, a_ling=False, b_ling=False, c_ling=False),
    "logit_only": dict(_ALL, b_ling=False, b_pros=False),
    "embedding_only": dict(_ALL, a_ling=False, a_pros=False, c_ling=False, c_pros=False),
    "full": dict(_ALL),
    # The dimensions learnt from the ratings only (no teacher dimensions) ...
    "full_no_dim_kd": dict(_ALL, c_ling=False, c_pros=False),
    # ... and not at all: what learning them costs or brings the categories.
    "no_dims": dict(_ALL, c_ling=False, c_pros=False, dim=False),
}  # fmt: skip


@dataclass(frozen=True)
class LossWeights:
    a_ling: float = 1.0
    a_pros: float = 1.0
    b_ling: float = 1.0
    b_pros: float = 1.0
    temperature: float = 2.0
    emb_loss: str = "cosine"
    teacher_weighting: str = "fixed"
    c_ling: float = 0.0
    c_pros: float = 0.0
    dim: float = 0.0
    # KD temperature on unlabelled (transfer) utterances; 0 = ``temperature``
    transfer_temperature: float = 0.0

    def for_variant(self, variant: str) -> LossWeights:
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; variants: {', '.join(VARIANTS)}")
        keep = VARIANTS[variant]
        return LossWeights(
            **{k: getattr(self, k) if keep[k] else 0.0 for k in keep},
            temperature=self.temperature,
            emb_loss=self.emb_loss,
            teacher_weighting=self.teacher_weighting,
            transfer_temperature=self.transfer_temperature,
        )

    def kd(self, teacher: str) -> float:
        return getattr(self, f"a_{teacher}")

    def emb(self, teacher: str) -> float:
        return getattr(self, f"b_{teacher}")

    def dim_kd(self, teacher: str) -> float:
        """Weight of the teacher's dimensions (0 without the head: nothing to distil into)."""
        return getattr(self, f"c_{teacher}") if self.dim > 0 else 0.0

    def uses(self, teacher: str) -> bool:
        return self.kd(teacher) > 0 or self.emb(teacher) > 0 or self.dim_kd(teacher) > 0

    @property
    def dimensions(self) -> bool:
        """Whether the student has the dimensions head (the CCC term is on)."""
        return self.dim > 0

    def without_dimensions(self) -> LossWeights:
        return dataclasses.replace(self, dim=0.0)

    @property
    def embedding_teachers(self) -> list[str]:
        """Teachers whose embedding term is on (they need a projection head)."""
        return [t for t in TEACHERS if self.emb(t) > 0]

    @property
    def uses_teachers(self) -> bool:
        return any(self.uses(t) for t in TEACHERS)

    @property
    def dimension_teachers(self) -> list[str]:
        """Teachers whose dimensions are distilled (their targets must carry them)."""
        return [t for t in TEACHERS if self.dim_kd(t) > 0]


def kd_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, t: float, per_row: bool = False
) -> torch.Tensor:
    """KL(softmax(teacher/T) || softmax(student/T)) * T^2, averaged over the batch (or per row)."""
    log_p_student = F.log_softmax(student_logits.float() / t, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits.float() / t, dim=-1)
    kl = F.kl_div(log_p_student, log_p_teacher, log_target=True, reduction="none").sum(-1)
    return (kl if per_row else kl.mean()) * t * t


def embedding_loss(
    projected: torch.Tensor, target: torch.Tensor, kind: str, per_row: bool = False
) -> torch.Tensor:
    projected, target = projected.float(), target.float()
    if kind == "cosine":
        rows = 1.0 - F.cosine_similarity(projected, target, dim=-1)
    elif kind == "mse":
        rows = (projected - target).pow(2).mean(-1)
    else:
        raise ValueError(f"unknown embedding loss {kind!r} (cosine | mse)")
    return rows if per_row else rows.mean()


def normalised(values: torch.Tensor) -> torch.Tensor:
    """Scale units (1-5) -> -1..1, the units of the dimension losses."""
    low, high = DIMENSION_SCALE
    return (values.float() - (low + high) / 2) / ((high - low) / 2)


def ccc(pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Lin's concordance correlation coefficient per column of [N, D] tensors (population
    moments): 2 cov / (var_p + var_t + (mean_p - mean_t)^2); 1 = identical."""
    pred, truth = pred.double(), truth.double()
    mp, mt = pred.mean(0), truth.mean(0)
    cov = ((pred - mp) * (truth - mt)).mean(0)
    denominator = pred.var(0, unbiased=False) + truth.var(0, unbiased=False) + (mp - mt) ** 2
    return (2 * cov / denominator.clamp_min(1e-12)).float()


def ccc_loss(pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor | None:
    """1 - mean CCC over the dimensions, on the rows whose ``truth`` has no NaN (unrated
    utterances are masked out); None when fewer than 2 rows are rated."""
    rated = ~torch.isnan(truth).any(-1)
    if int(rated.sum()) < 2:
        return None
    return 1.0 - ccc(normalised(pred[rated]), normalised(truth[rated])).mean()


def dimension_kd_loss(pred: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Per-utterance mean squared difference to the teacher's dimensions (normalised units)."""
    return (normalised(pred) - normalised(teacher)).pow(2).mean(-1)


def teacher_weights(
    labels: torch.Tensor, targets: dict[str, dict[str, torch.Tensor]], teachers: list[str]
) -> dict[str, torch.Tensor]:
    """Per-utterance weight of each teacher: K * p_t(true label) / sum over the K teachers
    that apply to it (``applies``); 1 for every teacher on unlabelled utterances (label -1: no
    true label to weigh by); 0 where a teacher does not apply."""
    known = labels >= 0
    applies = torch.stack([applying(targets[t], labels) for t in teachers])
    probs = applies * torch.stack(
        [
            torch.softmax(targets[t]["logits"].float(), -1).gather(1, labels.clamp_min(0)[:, None])[
                :, 0
            ]
            for t in teachers
        ]
    )
    shares = applies.sum(0) * probs / probs.sum(0).clamp_min(1e-8)
    shares = torch.where(known[None], shares, applies)
    return dict(zip(teachers, shares, strict=True))


def applying(targets: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """Per utterance, 1 where the teacher's terms apply and 0 where they are left out (the
    targets' optional "applies": the linguistic teacher on a corpus whose texts are fixed
    sentences spoken in every emotion, ``scripted_corpora``)."""
    if "applies" in targets:
        return targets["applies"].float()
    return torch.ones_like(labels, dtype=torch.float32)


def distill_loss(
    logits: torch.Tensor,
    projected: dict[str, torch.Tensor],
    labels: torch.Tensor,
    targets: dict[str, dict[str, torch.Tensor]],
    weights: LossWeights,
    dimensions: torch.Tensor | None = None,
    rated: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss and its terms (for the log). ``targets[teacher]`` has "logits" and
    "embedding" (and "dimensions" for dimension distillation). ``dimensions``: the student's
    [N, 3] predictions (scale units) when it has the head; ``rated``: the utterances' rated
    dimensions [N, 3], NaN rows for unrated utterances. An utterance labelled -1 (the transfer
    set) has no CE term: it learns from the teachers' terms only, its KD at
    ``transfer_temperature``."""
    known = labels >= 0
    if known.any():
        total = F.cross_entropy(logits[known].float(), labels[known])
        terms = {"ce": total.item()}
    else:  # a batch of transfer utterances only
        total, terms = logits.sum() * 0.0, {}
    if weights.dimensions and dimensions is not None and rated is not None:
        term = ccc_loss(dimensions, rated)
        if term is not None:
            total = total + weights.dim * term
            terms["ccc"] = term.item()
    active = [t for t in TEACHERS if weights.uses(t)]
    if weights.teacher_weighting not in TEACHER_WEIGHTINGS:
        raise ValueError(
            f"unknown teacher weighting {weights.teacher_weighting!r} "
            f"({' | '.join(TEACHER_WEIGHTINGS)})"
        )
    shares = (
        teacher_weights(labels, targets, active)
        if weights.teacher_weighting == "confidence" and active
        else {t: applying(targets[t], labels) for t in active}
    )
    for teacher in active:
        share = shares[teacher]
        if weights.teacher_weighting == "confidence":
            terms[f"w_{teacher}"] = share.mean().item()
        if weights.kd(teacher) > 0:
            kd = kd_loss(logits, targets[teacher]["logits"], weights.temperature, per_row=True)
            if not known.all():
                t_transfer = weights.transfer_temperature or weights.temperature
                kd_transfer = kd_loss(logits, targets[teacher]["logits"], t_transfer, per_row=True)
                kd = torch.where(known, kd, kd_transfer)
            total = total + weights.kd(teacher) * (share * kd).mean()
            terms[f"kd_{teacher}"] = kd.mean().item()
        if weights.emb(teacher) > 0:
            emb = embedding_loss(
                projected[teacher], targets[teacher]["embedding"], weights.emb_loss, per_row=True
            )
            total = total + weights.emb(teacher) * (share * emb).mean()
            terms[f"emb_{teacher}"] = emb.mean().item()
        if weights.dim_kd(teacher) > 0 and dimensions is not None:
            dim = dimension_kd_loss(dimensions, targets[teacher]["dimensions"])
            total = total + weights.dim_kd(teacher) * (share * dim).mean()
            terms[f"dim_{teacher}"] = dim.mean().item()
    return total, terms
