"""Streaming endpointing: 16 kHz audio in pieces of any size -> utterance events with their audio.

Pure and synchronous (no I/O, no asyncio): the websocket session feeds it samples and turns
what comes out into inference requests and JSON events. The VAD runs on fixed 512-sample
windows counted from the start of the stream, so the cuts do not depend on how the client
chunked its audio, and `SegmentTracker` applies the same rule as offline `speech_segments`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from emocore.audio import SAMPLE_RATE
from emocore.segments import WINDOW, SegmentEnd, SegmentParams, SegmentStart, SegmentTracker
from server.inference.vad import SileroVad


@dataclass(frozen=True)
class SpeechStarted:
    utterance: int
    start: int  # samples since the stream began (16 kHz), padding included


@dataclass(frozen=True)
class PartialDue:
    """The open utterance grew by another partial interval: audio so far, for an interim result."""

    utterance: int
    start: int
    end: int
    audio: np.ndarray


@dataclass(frozen=True)
class EndpointLikely:
    """The open utterance is in a pause that may end it: if the pause lasts, its Endpoint will
    have exactly this span, so its inference can start before the endpoint is certain."""

    utterance: int
    start: int
    end: int
    audio: np.ndarray


@dataclass(frozen=True)
class Endpoint:
    """An utterance is complete."""

    utterance: int
    start: int
    end: int
    audio: np.ndarray


StreamEvent = SpeechStarted | PartialDue | EndpointLikely | Endpoint


class AudioBuffer:
    """The recent part of one stream, addressed by absolute sample offsets.

    Preallocated and compacted in place, so appending a 20 ms frame never copies the whole
    utterance; `discard_before` marks what can no longer be needed.
    """

    def __init__(self, capacity: int):
        self._data = np.zeros(capacity, np.float32)
        self._base = 0  # absolute offset of _data[0]
        self._size = 0
        self._keep_from = 0

    @property
    def end(self) -> int:
        return self._base + self._size

    @property
    def capacity(self) -> int:
        return self._data.shape[0]

    def append(self, samples: np.ndarray) -> None:
        if self._size + samples.shape[0] > self._data.shape[0]:
            self._compact()
        if self._size + samples.shape[0] > self._data.shape[0]:
            grown = np.zeros(
                max(2 * self._data.shape[0], self._size + samples.shape[0]), np.float32
            )
            grown[: self._size] = self._data[: self._size]
            self._data = grown
        self._data[self._size : self._size + samples.shape[0]] = samples
        self._size += samples.shape[0]

    def slice(self, start: int, end: int) -> np.ndarray:
        """A copy of samples [start, end); both must still be held."""
        if start < self._base or end > self.end or start > end:
            raise IndexError(f"[{start}, {end}) is not within [{self._base}, {self.end})")
        return self._data[start - self._base : end - self._base].copy()

    def discard_before(self, offset: int) -> None:
        self._keep_from = max(self._keep_from, offset)

    def _compact(self) -> None:
        drop = min(self._keep_from, self.end) - self._base
        if drop > 0:
            self._data[: self._size - drop] = self._data[drop : self._size]
            self._size -= drop
            self._base += drop


class Endpointer:
    """VAD + segmentation + audio buffering for one stream.

    `feed` returns, in stream order: SpeechStarted when an utterance becomes certain,
    PartialDue every `partial_interval_ms` of its growth (if set), EndpointLikely once a pause
    has lasted `speculate_after` samples (if set), and Endpoint when the utterance ends
    (silence, `max_speech_s` in `params`, or `flush`).
    """

    def __init__(
        self,
        params: SegmentParams,
        *,
        partial_interval_ms: float | None = None,
        vad: SileroVad | None = None,
    ):
        self.vad = vad or SileroVad()
        self.tracker = SegmentTracker(params)
        self._partial_every = (
            None if partial_interval_ms is None else int(partial_interval_ms * SAMPLE_RATE / 1000)
        )
        self._audio = AudioBuffer(self.capacity_for(params.max_speech_s or 60.0))
        self._next_partial: int | None = None
        self.utterances = 0  # index of the next utterance
        self.speculate_after: int | None = None  # pause length (samples) for EndpointLikely
        self._speculated: tuple[int, int] | None = None

    @staticmethod
    def capacity_for(max_speech_s: float) -> int:
        """The buffer: the longest segment (the hard cut counts from its first trigger, so an
        open segment never holds more) and room for a frame and the padding."""
        return int((max_speech_s + 2.0) * SAMPLE_RATE)

    @property
    def buffer_capacity(self) -> int:
        """Samples allocated for this stream's recent audio (it grows only past the bound)."""
        return self._audio.capacity

    @property
    def position(self) -> int:
        """Samples received so far (16 kHz)."""
        return self._audio.end

    def feed(self, samples: np.ndarray) -> list[StreamEvent]:
        self._audio.append(samples.astype(np.float32, copy=False))
        events: list[StreamEvent] = []
        while self.tracker.position + WINDOW <= self._audio.end:
            start = self.tracker.position
            window = self._audio.slice(start, start + WINDOW)
            events += self._convert(self.tracker.push(self.vad(window)))
            events += self._partial()
            events += self._likely()
        self._audio.discard_before(self.tracker.keep_from())
        return events

    def flush(self) -> list[StreamEvent]:
        """End the open utterance now (a client's flush or the end of the stream)."""
        events = self._convert(self.tracker.finish())
        self._audio.discard_before(self.tracker.keep_from())
        return events

    def _convert(self, segment_events: list) -> list[StreamEvent]:
        events: list[StreamEvent] = []
        for event in segment_events:
            if isinstance(event, SegmentStart):
                events.append(SpeechStarted(self.utterances, event.start))
                if self._partial_every is not None:
                    self._next_partial = event.start + self._partial_every
            elif isinstance(event, SegmentEnd):
                audio = self._audio.slice(event.start, event.end)
                events.append(Endpoint(self.utterances, event.start, event.end, audio))
                self.utterances += 1
                self._next_partial = None
        return events

    @property
    def likely_span(self) -> tuple[int, int] | None:
        """The span of the current pause's EndpointLikely while it can still come true."""
        pending = self.tracker.pending_end()
        return pending[0] if pending is not None else None

    def _likely(self) -> list[StreamEvent]:
        pending = self.tracker.pending_end()
        if pending is None or self.speculate_after is None:
            return []
        span, pause = pending
        if pause < self.speculate_after or span == self._speculated:
            return []
        self._speculated = span
        return [EndpointLikely(self.utterances, *span, self._audio.slice(*span))]

    def _partial(self) -> list[StreamEvent]:
        start = self.tracker.segment_start
        if (
            start is None
            or self._next_partial is None
            or self.tracker.position < self._next_partial
        ):
            return []
        end = self.tracker.position
        assert self._partial_every is not None
        self._next_partial = end + self._partial_every
        return [PartialDue(self.utterances, start, end, self._audio.slice(start, end))]
