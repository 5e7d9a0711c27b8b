"""What the stream state machine asks its driver to do: send, infer, cancel, promote, close."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from server.inference.requests import Priority


@dataclass(frozen=True)
class Send:
    payload: dict[str, Any]
    certain_at: float | None = None  # a final's: when its endpoint became certain (metrics)


@dataclass(frozen=True)
class Infer:
    key: int
    audio: np.ndarray
    priority: Priority


@dataclass(frozen=True)
class Cancel:
    key: int


@dataclass(frozen=True)
class Promote:
    """A guess in flight became its utterance's final: serve it at final priority."""

    key: int


@dataclass(frozen=True)
class Close:
    code: int
    reason: str


Action = Send | Infer | Cancel | Promote | Close
