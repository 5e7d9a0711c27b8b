"""Turning model outputs into answers: probabilities, the verdict, top-k, dimensions and the
duration-weighted summary of a segmented file.

Pure functions over arrays, shared by the HTTP route, the stream, the offline scorer and
training (calibration, cross-fitted targets).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from emocore.audio import SAMPLE_RATE

# Answer times (HTTP, the offline scorer) keep 10 us, so sample offsets survive the round
# trip; stream events are rounded to the millisecond.
SECONDS_DIGITS = 5
STREAM_SECONDS_DIGITS = 3


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def verdict(
    labels: Sequence[str],
    probabilities: np.ndarray,
    min_confidence: float = 0.0,
    *,
    digits: int | None = None,
) -> dict:
    """label (the most probable), confidence (its probability), uncertain (confidence below
    ``min_confidence``) and the probability of every label; ``digits`` rounds the floats
    (the stream's events), None keeps them whole (HTTP and the CLI)."""
    best = int(np.argmax(probabilities))
    return {
        "label": labels[best],
        "confidence": _float(probabilities[best], digits),
        "uncertain": bool(probabilities[best] < min_confidence),
        "probabilities": named(labels, probabilities, digits),
    }


def named(names: Sequence[str], values: np.ndarray, digits: int | None = None) -> dict:
    """{name: value} in model order, rounded like the scores (``digits``)."""
    return {name: _float(v, digits) for name, v in zip(names, values, strict=True)}


def _float(value: float, digits: int | None) -> float:
    return float(value) if digits is None else round(float(value), digits)


def scores(
    labels: Sequence[str],
    probabilities: np.ndarray,
    *,
    top_k: int | None = None,
    embedding: np.ndarray | None = None,
    min_confidence: float = 0.0,
) -> dict:
    """The verdict, optional top-k and embedding. An uncertain answer keeps its label and
    probabilities."""
    ranked = np.argsort(-probabilities, kind="stable")[:top_k] if top_k else None
    return verdict(labels, probabilities, min_confidence) | {
        "top_k": None
        if ranked is None
        else [{"label": labels[i], "probability": float(probabilities[i])} for i in ranked],
        "embedding": None if embedding is None else [float(x) for x in embedding],
    }


def dimension_fields(
    names: Sequence[str] | None, values: np.ndarray | None, digits: int | None = None
) -> dict:
    """The answer's ``dimensions`` (model.json names -> values on its scale): no key at all
    for a model without them (answers unchanged), null when there was no speech."""
    if names is None:
        return {}
    return {"dimensions": None if values is None else named(names, values, digits)}


def summary(
    labels: Sequence[str],
    names: Sequence[str] | None,
    spans: Sequence[tuple[int, int]],
    probabilities: Sequence[np.ndarray],
    dimensions: Sequence[np.ndarray | None],
    *,
    top_k: int | None = None,
    min_confidence: float = 0.0,
) -> dict:
    """A segmented file's answer: its segments' probabilities (and dimensions) weighted by
    their durations; null scores when no speech was found."""
    if not spans:
        return no_scores() | dimension_fields(names, None)
    mean = summarise(spans, np.stack(probabilities))
    affect = summarise(spans, np.stack(dimensions)) if names is not None else None
    return scores(labels, mean, top_k=top_k, min_confidence=min_confidence) | dimension_fields(
        names, affect
    )


def no_scores() -> dict:
    return {
        "label": None,
        "confidence": None,
        "uncertain": None,
        "probabilities": None,
        "top_k": None,
        "embedding": None,
    }


def summarise(spans: Sequence[tuple[int, int]], probabilities: np.ndarray) -> np.ndarray:
    """Segment probabilities [S, C] -> one distribution, each segment weighted by its duration."""
    weights = np.array([end - start for start, end in spans], dtype=np.float64)
    return (probabilities * weights[:, None]).sum(0) / weights.sum()


def seconds(samples: int, digits: int = SECONDS_DIGITS) -> float:
    """A sample count at 16 kHz in seconds, rounded to ``digits``."""
    return round(samples / SAMPLE_RATE, digits)


def ms(value_s: float) -> float:
    return round(value_s * 1000, 3)
