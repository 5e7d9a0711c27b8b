"""The one segmentation rule: per-window speech probabilities -> speech spans, in samples.

`SegmentTracker` applies it online (Silero's hysteresis, min silence, min speech, padding,
the hard cut). The server's `speech_segments` runs it over a whole array (`segment=true`,
the offline scorer) and the streaming endpointer window by window, so offline and streaming
cut the same spans. The one difference is the cut of long speech: offline knows where a span
ends and splits it into equal pieces (`split_span`); a stream cannot wait, so it cuts at
`max_utterance_s` and goes on (docs/streaming.md).

Pure Python over numbers: the voice activity model that gives the probabilities lives in the
server (server/inference/vad.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from emocore.audio import SAMPLE_RATE

# Silero v5+ takes exactly 512 samples (32 ms) per call at 16 kHz: the tracker's step.
WINDOW = 512
# Speech ends when the probability falls below threshold - NEG_MARGIN (Silero's hysteresis).
NEG_MARGIN = 0.15


def ms_to_samples(ms: float) -> int:
    return int(round(ms * SAMPLE_RATE / 1000))


@dataclass(frozen=True)
class SegmentParams:
    """How probabilities become segments; all durations in milliseconds."""

    threshold: float = 0.5
    min_silence_ms: float = 300
    min_speech_ms: float = 250
    pad_ms: float = 30
    # Longer speech is cut here and goes on as a new segment (None: no limit).
    max_speech_s: float | None = None

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")
        if min(self.min_silence_ms, self.min_speech_ms, self.pad_ms) < 0:
            raise ValueError("durations must be >= 0")
        if self.max_speech_s is not None and self.max_speech_s * 1000 <= self.pad_ms:
            raise ValueError("max_speech_s must be longer than pad_ms")


@dataclass(frozen=True)
class SegmentStart:
    """A segment became certain (it lasted min_speech_ms); `start` includes the padding."""

    start: int


@dataclass(frozen=True)
class SegmentEnd:
    """A segment is complete: [start, end) in samples, padding included."""

    start: int
    end: int


SegmentEvent = SegmentStart | SegmentEnd


class SegmentTracker:
    """Online segmentation over per-window speech probabilities, in sample offsets.

    A segment starts at the first window at or above `threshold`, and ends at the first
    window below `threshold - 0.15` that is followed by `min_silence_ms` without speech.
    Segments shorter than `min_speech_ms` are dropped. Each side gets `pad_ms` of context,
    clipped so that segments never overlap and never reach past the audio seen so far.
    """

    def __init__(self, params: SegmentParams = SegmentParams()) -> None:
        self.params = params
        self._neg_threshold = max(params.threshold - NEG_MARGIN, 0.01)
        self._min_silence = ms_to_samples(params.min_silence_ms)
        self._min_speech = ms_to_samples(params.min_speech_ms)
        self._pad = ms_to_samples(params.pad_ms)
        self._max_speech = (
            None if params.max_speech_s is None else int(params.max_speech_s * SAMPLE_RATE)
        )
        self.position = 0  # samples covered by the windows pushed so far
        self._floor = 0  # a padded start may not reach before the previous segment's end
        self._speech_start: int | None = None  # first speech window of the open segment
        self._silence_start: int | None = None  # first quiet window of a pause in it
        self._confirmed = False

    @property
    def in_segment(self) -> bool:
        """A segment is open and already reported by a SegmentStart."""
        return self._confirmed

    @property
    def segment_start(self) -> int | None:
        """Padded start of the open, confirmed segment."""
        return self._padded_start() if self._confirmed else None

    def pending_end(self) -> tuple[tuple[int, int], int] | None:
        """In a pause of a confirmed segment: the span [start, end) the segment gets if the
        pause lasts, and how long the pause is so far (samples). None otherwise, or while the
        end padding has not arrived yet."""
        if not self._confirmed or self._silence_start is None:
            return None
        end = self._silence_start + self._pad
        if end > self.position:
            return None
        return (self._padded_start(), end), self.position - self._silence_start

    def keep_from(self) -> int:
        """The earliest sample a future segment can still include (for buffer trimming)."""
        if self._speech_start is not None:
            return self._padded_start()
        return max(self.position - self._pad, self._floor)

    def push(self, probability: float) -> list[SegmentEvent]:
        """Advance by one window with this speech probability."""
        window_start = self.position
        self.position += WINDOW
        events: list[SegmentEvent] = []
        if probability >= self.params.threshold:
            self._silence_start = None
            if self._speech_start is None:
                self._speech_start = window_start
        elif self._speech_start is not None and probability < self._neg_threshold:
            if self._silence_start is None:
                self._silence_start = window_start
            if self.position - self._silence_start >= self._min_silence:
                events += self._close(self._silence_start)
                return events
        if self._speech_start is not None and not self._confirmed:
            spoken_until = self._silence_start if self._silence_start is not None else self.position
            if spoken_until - self._speech_start >= self._min_speech:
                self._confirmed = True
                events.append(SegmentStart(self._padded_start()))
        if (
            # From the first trigger, confirmed or not: a probability held in the hysteresis
            # band (neither speech nor silence) must not keep a segment, and its audio, open.
            self._speech_start is not None
            and self._max_speech is not None
            # Cut before the next window would take the segment past the limit.
            and self.position + WINDOW - self._padded_start() > self._max_speech
        ):
            events += self._close(self.position, pad=False)
        return events

    def finish(self) -> list[SegmentEvent]:
        """End the open segment now (end of input or a client's flush)."""
        if self._speech_start is None:
            return []
        return self._close(
            self._silence_start if self._silence_start is not None else self.position
        )

    def _padded_start(self) -> int:
        assert self._speech_start is not None
        return max(self._speech_start - self._pad, self._floor)

    def _close(self, speech_end: int, *, pad: bool = True) -> list[SegmentEvent]:
        start = self._padded_start()
        end = min(speech_end + self._pad, self.position) if pad else speech_end
        keep = self._confirmed or speech_end - self._speech_start >= self._min_speech
        events: list[SegmentEvent] = []
        if keep:
            if not self._confirmed:
                events.append(SegmentStart(start))
            events.append(SegmentEnd(start, end))
            self._floor = end
        self._speech_start = None
        self._silence_start = None
        self._confirmed = False
        return events


def split_span(start: int, end: int, max_samples: int, min_samples: int) -> list[tuple[int, int]]:
    """One speech span -> pieces of at most ``max_samples`` (equal lengths), none under ``min_samples``."""
    pieces = max(1, math.ceil((end - start) / max_samples))
    bounds = np.linspace(start, end, pieces + 1).round().astype(int)
    return [
        (int(a), int(b))
        for a, b in zip(bounds[:-1], bounds[1:], strict=True)
        if b - a >= min_samples
    ]
