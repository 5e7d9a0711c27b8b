"""Flow control of one stream: the audio received but not yet fed, the intake rate, the
session and idle deadlines.

Part of the pure state machine (server/stream/machine.py): no I/O, the clock comes in as
`now`. Audio is resampled to 16 kHz as it arrives and handed out at most one VAD window at a
time, so the machine can stop feeding between windows when finals pile up.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import soxr

from emocore.audio import SAMPLE_RATE
from emocore.segments import WINDOW
from server.stream.limits import Limits
from server.stream.protocol import CLOSE_POLICY, StreamError


class Intake:
    """Received 16 kHz audio waiting to be fed, and when the stream may or must be read."""

    def __init__(self, limits: Limits, now: float):
        self.limits = limits
        self._resampler: soxr.ResampleStream | None = None
        self._pieces: deque[np.ndarray] = deque()  # 16 kHz audio received, not yet fed
        self.samples = 0  # samples in `_pieces`
        self._received = 0  # 16 kHz samples received in all (intake rate)
        self._session_ends = now + limits.max_session_s
        self._idle_from = now
        self._rate_from = now
        self._was_paused = False

    def __bool__(self) -> bool:
        """Whether received audio waits to be fed."""
        return bool(self._pieces)

    def start(self, sample_rate: int, now: float) -> None:
        """The session is configured: audio at `sample_rate` from now on."""
        if sample_rate != SAMPLE_RATE:
            self._resampler = soxr.ResampleStream(
                sample_rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ"
            )
        self._rate_from = self._idle_from = now

    def receive(self, samples: np.ndarray, now: float) -> None:
        """A frame's samples at the client's rate; the idle time counts from when the intake
        rate lets the next one be read."""
        if self._resampler is not None:
            samples = self._resampler.resample_chunk(samples)
        self._take_in(samples)
        self._idle_from = now + self.read_delay(now)

    def finish(self) -> None:
        """No more audio: take in the resampler's tail."""
        if self._resampler is not None:
            self._take_in(self._resampler.resample_chunk(np.zeros(0, np.float32), last=True))
            self._resampler = None

    def take(self) -> np.ndarray:
        """The next piece to feed, at most one VAD window; only while audio waits."""
        piece = self._pieces.popleft()
        if piece.shape[0] > WINDOW:
            piece, rest = piece[:WINDOW], piece[WINDOW:]
            self._pieces.appendleft(rest)
        self.samples -= piece.shape[0]
        return piece

    def _take_in(self, samples: np.ndarray) -> None:
        if samples.shape[0]:
            self._pieces.append(samples.astype(np.float32, copy=False))
            self.samples += samples.shape[0]
            self._received += samples.shape[0]

    def read_delay(self, now: float) -> float:
        """Seconds to wait before reading more audio: the intake rate, after the burst."""
        allowed = self.limits.intake_burst_s + self.limits.intake_rate * (now - self._rate_from)
        return max(0.0, (self._received / SAMPLE_RATE - allowed) / self.limits.intake_rate)

    def paused(self, paused: bool, now: float) -> None:
        """Whether feeding is paused for the model; waiting for the model is not idling."""
        if self._was_paused and not paused:
            self._idle_from = max(self._idle_from, now)
        self._was_paused = paused

    def deadline(self, reading: bool) -> float:
        """The next time `check` can fail: the session limit, the idle limit while reading."""
        if reading:
            return min(self._session_ends, self._idle_from + self.limits.idle_timeout_s)
        return self._session_ends

    def check(self, now: float, reading: bool) -> None:
        """StreamError once the session is too long, or (while reading) idle too long."""
        if now >= self._session_ends:
            raise StreamError(
                "session_too_long",
                f"sessions last at most {self.limits.max_session_s:g} s",
                CLOSE_POLICY,
            )
        if reading and now >= self._idle_from + self.limits.idle_timeout_s:
            raise StreamError(
                "idle_timeout",
                f"no audio for {self.limits.idle_timeout_s:g} s (keepalives do not count)",
                CLOSE_POLICY,
            )
