"""Cross-fitted (out-of-fold) teacher targets.

A teacher's outputs on the utterances it was trained (and selected) on are close to one-hot,
so distilling them is little more than a second cross-entropy. Cross-fitting splits the
training speakers into ``k`` groups; for each group a teacher is trained on the other groups
and predicts that group, so every utterance's target comes from a teacher that never saw its
speaker (the way the student will meet a test speaker). ``insample`` keeps the old behaviour:
one teacher trained on all training speakers predicts them all.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from emocore.scoring import softmax as probabilities
from training.data.utterance import Utterance

MODES = ("crossfit", "insample")


def speaker_groups(utts: Sequence[Utterance], k: int) -> list[list[str]]:
    """``k`` groups of speakers of similar utterance counts (largest speaker first into the
    smallest group; ties by name, so the grouping is deterministic). ``k`` is capped at the
    number of speakers; at least 2 are needed."""
    counts = Counter(u.speaker for u in utts)
    if len(counts) < 2:
        raise ValueError(
            f"cross-fitted targets need >= 2 training speakers, got {sorted(counts)}; "
            "use --teacher_targets=insample"
        )
    k = max(2, min(k, len(counts)))
    groups: list[list[str]] = [[] for _ in range(k)]
    sizes = [0] * k
    for speaker, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        i = int(np.argmin(sizes))
        groups[i].append(speaker)
        sizes[i] += n
    return [sorted(g) for g in groups]


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    return probabilities(np.asarray(logits, dtype=np.float64) / temperature)


def target_stats(logits: np.ndarray, y: np.ndarray, temperature: float) -> dict:
    """How soft and how right cached targets are: accuracy of their argmax, mean entropy (nats)
    at T = 1 and at the KD temperature, mean top probability."""
    if not len(y):
        return {"n": 0}
    p1, pt = softmax(logits), softmax(logits, temperature)

    def entropy(p: np.ndarray) -> float:
        return float(-(p * np.log(np.clip(p, 1e-12, 1.0))).sum(-1).mean())

    return {
        "n": int(len(y)),
        "accuracy": float((p1.argmax(-1) == y).mean()),
        "mean_entropy": entropy(p1),
        f"mean_entropy_T{temperature:g}": entropy(pt),
        "max_entropy": float(np.log(p1.shape[-1])),
        "mean_top_probability": float(p1.max(-1).mean()),
    }
