"""The distillation loss: ``CE + a_ling*KD_ling + a_pros*KD_pros + b_ling*EMB_ling + b_pros*EMB_pros``.

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
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

TEACHERS: tuple[str, ...] = ("ling", "pros")
TEACHER_WEIGHTINGS: tuple[str, ...] = ("fixed", "confidence")

# Ablation variants: which of the configured weights stay on (the rest become 0).
VARIANTS: dict[str, dict[str, bool]] = {
    "ce_only": dict(a_ling=False, a_pros=False, b_ling=False, b_pros=False),
    "ce+ling": dict(a_ling=True, a_pros=False, b_ling=True, b_pros=False),
    "ce+pros": dict(a_ling=False, a_pros=True, b_ling=False, b_pros=True),
    "logit_only": dict(a_ling=True, a_pros=True, b_ling=False, b_pros=False),
    "embedding_only": dict(a_ling=False, a_pros=False, b_ling=True, b_pros=True),
    "full": dict(a_ling=True, a_pros=True, b_ling=True, b_pros=True),
}


@dataclass(frozen=True)
class LossWeights:
    a_ling: float = 1.0
    a_pros: float = 1.0
    b_ling: float = 1.0
    b_pros: float = 1.0
    temperature: float = 2.0
    emb_loss: str = "cosine"
    teacher_weighting: str = "fixed"

    def for_variant(self, variant: str) -> LossWeights:
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; variants: {', '.join(VARIANTS)}")
        keep = VARIANTS[variant]
        return LossWeights(
            **{k: getattr(self, k) if keep[k] else 0.0 for k in keep},
            temperature=self.temperature,
            emb_loss=self.emb_loss,
            teacher_weighting=self.teacher_weighting,
        )

    def kd(self, teacher: str) -> float:
        return getattr(self, f"a_{teacher}")

    def emb(self, teacher: str) -> float:
        return getattr(self, f"b_{teacher}")

    @property
    def embedding_teachers(self) -> list[str]:
        """Teachers whose embedding term is on (they need a projection head)."""
        return [t for t in TEACHERS if self.emb(t) > 0]

    @property
    def uses_teachers(self) -> bool:
        return any(self.kd(t) > 0 or self.emb(t) > 0 for t in TEACHERS)


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


def teacher_weights(
    labels: torch.Tensor, targets: dict[str, dict[str, torch.Tensor]], teachers: list[str]
) -> dict[str, torch.Tensor]:
    """Per-utterance weight of each teacher: K * p_t(true label) / sum over the K teachers."""
    probs = torch.stack(
        [
            torch.softmax(targets[t]["logits"].float(), -1).gather(1, labels[:, None])[:, 0]
            for t in teachers
        ]
    )
    shares = len(teachers) * probs / probs.sum(0).clamp_min(1e-8)
    return dict(zip(teachers, shares, strict=True))


def distill_loss(
    logits: torch.Tensor,
    projected: dict[str, torch.Tensor],
    labels: torch.Tensor,
    targets: dict[str, dict[str, torch.Tensor]],
    weights: LossWeights,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss and its terms (for the log). ``targets[teacher]`` has "logits" and "embedding"."""
    total = F.cross_entropy(logits.float(), labels)
    terms = {"ce": total.item()}
    active = [t for t in TEACHERS if weights.kd(t) > 0 or weights.emb(t) > 0]
    if weights.teacher_weighting not in TEACHER_WEIGHTINGS:
        raise ValueError(
            f"unknown teacher weighting {weights.teacher_weighting!r} "
            f"({' | '.join(TEACHER_WEIGHTINGS)})"
        )
    shares = (
        teacher_weights(labels, targets, active)
        if weights.teacher_weighting == "confidence" and active
        else {t: torch.ones_like(labels, dtype=torch.float32) for t in active}
    )
    for teacher in active:
        share = shares[teacher]
        if weights.teacher_weighting == "confidence":
            terms[f"w_{teacher}"] = share.mean().item()
        if weights.kd(teacher) > 0:
            kd = kd_loss(logits, targets[teacher]["logits"], weights.temperature, per_row=True)
            total = total + weights.kd(teacher) * (share * kd).mean()
            terms[f"kd_{teacher}"] = kd.mean().item()
        if weights.emb(teacher) > 0:
            emb = embedding_loss(
                projected[teacher], targets[teacher]["embedding"], weights.emb_loss, per_row=True
            )
            total = total + weights.emb(teacher) * (share * emb).mean()
            terms[f"emb_{teacher}"] = emb.mean().item()
    return total, terms
