"""The one definition of how audio becomes model input: bytes or a path -> mono float32 at 16 kHz.

Training imports this module too, so training and serving can never disagree on decoding,
downmixing or resampling. Pure numpy + soundfile + soxr: no torch.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

SAMPLE_RATE = 16_000
# The wav2vec2/HuBERT feature encoder's receptive field: shorter inputs crash its first conv.
MIN_SAMPLES = 400
MIN_SECONDS = MIN_SAMPLES / SAMPLE_RATE
ACCEPTED_FORMATS = (
    "WAV (8/16/24/32-bit int, 32/64-bit float)",
    "FLAC",
    "OGG Vorbis",
    "Opus",
    "MP3",
)


class AudioError(ValueError):
    """Input audio that cannot be used, with a machine-readable ``code`` and a human message."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class DecodedAudio:
    samples: np.ndarray  # float32 [frames, channels] at the file's own rate
    sample_rate: int


def _undecodable(exc: Exception) -> AudioError:
    return AudioError(
        "undecodable",
        f"could not decode the audio ({exc}); accepted formats: {', '.join(ACCEPTED_FORMATS)}",
    )


def decode(source: bytes | str | Path) -> DecodedAudio:
    """Decode anything libsndfile reads into float32 [frames, channels]."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise AudioError("empty", "the audio is empty (0 bytes)")
        handle: io.BytesIO | str = io.BytesIO(bytes(source))
    else:
        path = Path(source)
        if not path.is_file():
            raise AudioError("not_found", f"no audio file at {path}")
        if path.stat().st_size == 0:
            raise AudioError("empty", f"the audio file {path} is empty (0 bytes)")
        handle = str(path)
    try:
        samples, sample_rate = sf.read(handle, dtype="float32", always_2d=True)
    except sf.LibsndfileError as exc:
        # libsndfile refuses a header that declares zero channels before we see any samples.
        if "channel count is zero" in exc.error_string.lower():
            raise AudioError("no_channels", "the audio header declares zero channels") from exc
        raise _undecodable(exc) from exc
    except (RuntimeError, TypeError, ValueError) as exc:
        raise _undecodable(exc) from exc
    if samples.shape[1] == 0:
        raise AudioError("no_channels", "the audio has zero channels")
    if sample_rate <= 0:
        raise AudioError("undecodable", f"invalid sample rate {sample_rate}")
    return DecodedAudio(samples, int(sample_rate))


def to_mono(samples: np.ndarray) -> np.ndarray:
    """Average channels: [frames, channels] -> [frames]."""
    if samples.ndim == 1:
        return samples.astype(np.float32, copy=False)
    return samples.mean(axis=1, dtype=np.float32)


def resample(samples: np.ndarray, rate: int, target: int = SAMPLE_RATE) -> np.ndarray:
    if rate == target:
        return samples.astype(np.float32, copy=False)
    return soxr.resample(samples, rate, target, quality="HQ").astype(np.float32, copy=False)


def validate(
    samples: np.ndarray, *, min_seconds: float = MIN_SECONDS, max_seconds: float | None = None
) -> np.ndarray:
    """Reject what no model can use: empty, NaN/Inf, shorter than the receptive field, too long."""
    if samples.size == 0:
        raise AudioError("empty", "the audio holds no samples")
    if not np.isfinite(samples).all():
        raise AudioError("non_finite", "the audio contains NaN or infinite samples")
    seconds = samples.shape[0] / SAMPLE_RATE
    if samples.shape[0] < max(MIN_SAMPLES, int(round(min_seconds * SAMPLE_RATE))):
        raise AudioError(
            "too_short",
            f"the audio is {seconds:.3f} s long; at least {max(min_seconds, MIN_SECONDS):.3f} s is needed",
        )
    if max_seconds is not None and seconds > max_seconds:
        raise AudioError(
            "too_long", f"the audio is {seconds:.1f} s long; the limit is {max_seconds:.1f} s"
        )
    return samples


def load_audio(
    source: bytes | str | Path,
    *,
    min_seconds: float = MIN_SECONDS,
    max_seconds: float | None = None,
) -> np.ndarray:
    """Bytes or a path -> validated mono float32 samples at 16 kHz."""
    decoded = decode(source)
    # Check finiteness before resampling: soxr would smear one NaN over its filter length.
    if not np.isfinite(decoded.samples).all():
        raise AudioError("non_finite", "the audio contains NaN or infinite samples")
    mono = resample(to_mono(decoded.samples), decoded.sample_rate)
    return validate(mono, min_seconds=min_seconds, max_seconds=max_seconds)
