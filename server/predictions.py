"""Turning model outputs into answers: scores, top-k, segment spans and the segment summary.

Pure functions over arrays, shared by the HTTP route and the offline CLI.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from server.audio import SAMPLE_RATE

if TYPE_CHECKING:
    from server.vad import SegmentParams


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def scores(
    labels: Sequence[str],
    probabilities: np.ndarray,
    *,
    top_k: int | None = None,
    embedding: np.ndarray | None = None,
    min_confidence: float = 0.0,
) -> dict:
    """label, confidence, uncertain (confidence below ``min_confidence``), probabilities per
    label, optional top-k and embedding. An uncertain answer keeps its label and probabilities."""
    best = int(np.argmax(probabilities))
    ranked = np.argsort(-probabilities, kind="stable")[:top_k] if top_k else None
    return {
        "label": labels[best],
        "confidence": float(probabilities[best]),
        "uncertain": bool(probabilities[best] < min_confidence),
        "probabilities": {label: float(p) for label, p in zip(labels, probabilities, strict=True)},
        "top_k": None
        if ranked is None
        else [{"label": labels[i], "probability": float(probabilities[i])} for i in ranked],
        "embedding": None if embedding is None else [float(x) for x in embedding],
    }


def no_scores() -> dict:
    return {
        "label": None,
        "confidence": None,
        "uncertain": None,
        "probabilities": None,
        "top_k": None,
        "embedding": None,
    }


def split_span(start: int, end: int, max_samples: int, min_samples: int) -> list[tuple[int, int]]:
    """One speech span -> pieces of at most ``max_samples`` (equal lengths), none under ``min_samples``."""
    pieces = max(1, math.ceil((end - start) / max_samples))
    bounds = np.linspace(start, end, pieces + 1).round().astype(int)
    return [
        (int(a), int(b))
        for a, b in zip(bounds[:-1], bounds[1:], strict=True)
        if b - a >= min_samples
    ]


def summarise(spans: Sequence[tuple[int, int]], probabilities: np.ndarray) -> np.ndarray:
    """Segment probabilities [S, C] -> one distribution, each segment weighted by its duration."""
    weights = np.array([end - start for start, end in spans], dtype=np.float64)
    return (probabilities * weights[:, None]).sum(0) / weights.sum()


def seconds(samples: int) -> float:
    return round(samples / SAMPLE_RATE, 5)  # 10 us: sample offsets survive the round trip


def ms(value_s: float) -> float:
    return round(value_s * 1000, 3)


def utterance_spans(
    audio: np.ndarray, max_samples: int, min_samples: int, params: SegmentParams
) -> list[tuple[int, int]]:
    """Speech spans of a long clip (Silero VAD, ``params`` from `server.vad.segment_params`),
    each split into equal pieces of at most ``max_samples``."""
    from server.vad import speech_segments  # the VAD model loads only when segmenting

    return [
        piece
        for start, end in speech_segments(audio, params)
        for piece in split_span(start, end, max_samples, min_samples)
    ]
