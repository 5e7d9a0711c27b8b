"""Measured inference speed: the moving average of timings, and the batcher's speed figures.

`moving_average` is the one smoothing of measured times in the server: the batcher's speed
and capacity (`InferenceSpeed`) and a stream's model time (server/stream/inferences.py).
"""

from __future__ import annotations

from dataclasses import dataclass

SMOOTHING = 0.3  # weight of the newest measurement in a moving average


def moving_average(previous: float | None, value: float, weight: float = SMOOTHING) -> float:
    """An exponentially weighted moving average: ``weight`` to the newest ``value``; the first
    value (``previous`` None) is taken as it is."""
    return value if previous is None else (1 - weight) * previous + weight * value


@dataclass
class InferenceSpeed:
    """How fast the model serves, in audio samples per second of inference."""

    samples_per_s: float | None = None  # every batch, averaged (None before the first)
    # What the model serves at full batches: the warm-up's full batch (`seed`), then an
    # average over the batches served at least half full. Small batches do not count: their
    # speed is per-call overhead, and an idle server would otherwise look slow.
    capacity: float | None = None

    def seed(self, samples: int, seconds: float) -> None:
        """The warm-up's full batch (cautious: it includes the model's initialisation)."""
        if self.capacity is None and seconds > 0:
            self.capacity = samples / seconds

    def observe(self, samples: float, seconds: float, *, half_full: bool) -> None:
        """A batch of ``samples`` audio ran in ``seconds``."""
        speed = samples / max(seconds, 1e-6)
        self.samples_per_s = moving_average(self.samples_per_s, speed)
        if half_full:
            self.capacity = moving_average(self.capacity, speed)

    def work_s(self, samples: int) -> float | None:
        """Seconds of inference ``samples`` of audio take at the measured speed (None before
        the first batch)."""
        return samples / self.samples_per_s if self.samples_per_s else None
