"""What a request to the batcher carries and gets back: its priority, its answer, its errors."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np


class Priority(IntEnum):
    """Lower runs first: certain work, then guesses, then interim results."""

    FINAL = 0  # a stream's final, or an HTTP request
    SPECULATIVE = 1  # a final's inference started before its endpoint is certain
    PARTIAL = 2  # an interim result: best effort


class QueueFull(RuntimeError):
    """The bounded queue has no room: the caller should retry after ``retry_after_s``."""

    def __init__(self, retry_after_s: int):
        super().__init__(f"the inference queue is full; retry in {retry_after_s} s")
        self.retry_after_s = retry_after_s


class RequestTimeout(RuntimeError):
    """Queue wait plus inference took longer than the per-request timeout."""


class BatcherClosed(RuntimeError):
    """The server is shutting down and takes no new work."""


class InferenceFailed(RuntimeError):
    """ONNX Runtime raised while running a batch (a server fault, not the client's)."""


class BatcherUnavailable(BatcherClosed):
    """The collector crashed more than MAX_RESTARTS times: no inference until a restart."""


@dataclass(frozen=True)
class Inference:
    logits: np.ndarray  # [C]
    probabilities: np.ndarray  # [C]
    embedding: np.ndarray  # [D]
    queue_wait_s: float
    inference_s: float
    batch_size: int
    dimensions: np.ndarray | None = None  # [len(names)]; None: the model has none
