"""The one definition of how audio becomes model input: bytes or a path -> mono float32 at 16 kHz.

Training imports this module too, so training and serving can never disagree on decoding,
downmixing or resampling. Pure numpy + soundfile + soxr: no torch.

Decoding is bounded (docs/api.md, "Security"): the header is read first and a file is refused
before any sample is decoded when its container, encoding, sample rate, channel count or
declared duration is outside the accepted range; then at most ``max_seconds`` (plus one block)
of frames are decoded, ``BLOCK_FRAMES`` at a time, each block checked, downmixed and resampled
to 16 kHz at once. A header whose frame count lies therefore costs nothing, and the memory a
decode holds is the 16 kHz mono output (twice, while the blocks are joined) plus one block.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

SAMPLE_RATE = 16_000
# The wav2vec2/HuBERT feature encoder's receptive field: shorter inputs crash its first conv.
MIN_SAMPLES = 400
MIN_SECONDS = MIN_SAMPLES / SAMPLE_RATE
ACCEPTED_FORMATS = (
    "WAV (8/16/24/32-bit int, 32/64-bit float, u-law, A-law)",
    "FLAC",
    "OGG Vorbis",
    "Opus",
    "MP3",
)
# libsndfile container -> the encodings (subtypes) accepted in it. Everything else libsndfile
# could parse (AIFF, CAF, ADPCM, GSM, ...) is refused from the header: less parser surface.
ACCEPTED_ENCODINGS: dict[str, frozenset[str]] = {
    "WAV": frozenset({"PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE", "ULAW", "ALAW"}),
    "FLAC": frozenset({"PCM_S8", "PCM_16", "PCM_24"}),
    "OGG": frozenset({"VORBIS", "OPUS"}),
    "MP3": frozenset({"MPEG_LAYER_I", "MPEG_LAYER_II", "MPEG_LAYER_III"}),
}
ACCEPTED_ENCODINGS["WAVEX"] = ACCEPTED_ENCODINGS["RF64"] = ACCEPTED_ENCODINGS["WAV"]
# The sample rates and channel counts a file may declare (the streaming websocket takes the
# same rate range). Below 8 kHz speech loses what the model listens to; 8 channels is 7.1.
MIN_RATE, MAX_RATE = 8_000, 192_000
MAX_CHANNELS = 8
# Largest sample magnitude accepted: float files may go over full scale (1.0), but 1e30 is not
# audio, and squaring it (the model's normalisation) overflows float32.
MAX_ABS_SAMPLE = 1_000.0
# Frames decoded per read: one block is at most BLOCK_FRAMES * MAX_CHANNELS * 4 B = 512 KiB.
BLOCK_FRAMES = 16_384
UNKNOWN_FRAMES = 2**62


class AudioError(ValueError):
    """Input audio that cannot be used, with a machine-readable ``code`` and a human message."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def _undecodable(reason: str) -> AudioError:
    return AudioError(
        "undecodable",
        f"could not decode the audio ({reason}); accepted formats: {', '.join(ACCEPTED_FORMATS)}",
    )


def _libsndfile_reason(exc: Exception) -> str:
    """libsndfile's own words, never soundfile's message (it holds the file object's repr or
    the path); anything else is summarised."""
    text = getattr(exc, "error_string", "") or "not a recognised audio file"
    return text.strip().rstrip(".") or "not a recognised audio file"


def to_mono(samples: np.ndarray) -> np.ndarray:
    """Average channels: [frames, channels] -> [frames]."""
    if samples.ndim == 1:
        return samples.astype(np.float32, copy=False)
    return samples.mean(axis=1, dtype=np.float32)


def resample(samples: np.ndarray, rate: int, target: int = SAMPLE_RATE) -> np.ndarray:
    if rate == target:
        return samples.astype(np.float32, copy=False)
    return soxr.resample(samples, rate, target, quality="HQ").astype(np.float32, copy=False)


def _open(source: bytes | bytearray | memoryview | str | Path) -> sf.SoundFile:
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise AudioError("empty", "the audio is empty (0 bytes)")
        handle: io.BytesIO | str = io.BytesIO(source)  # bytes are shared, not copied
    else:
        path = Path(source)
        if not path.is_file():
            raise AudioError("not_found", "no audio file at the given path")
        if path.stat().st_size == 0:
            raise AudioError("empty", "the audio file is empty (0 bytes)")
        handle = str(path)
    try:
        return sf.SoundFile(handle)
    except sf.LibsndfileError as exc:
        # libsndfile refuses a header that declares zero channels before we see any samples.
        if "channel count is zero" in exc.error_string.lower():
            raise AudioError("no_channels", "the audio header declares zero channels") from None
        raise _undecodable(_libsndfile_reason(exc)) from None
    except (RuntimeError, TypeError, ValueError, OverflowError, MemoryError) as exc:
        raise _undecodable(_libsndfile_reason(exc)) from None


def _check_header(
    audio: sf.SoundFile, max_seconds: float | None, max_channels: int = MAX_CHANNELS
) -> None:
    """Refuse, before decoding, what the header already shows to be outside the limits."""
    accepted = ACCEPTED_ENCODINGS.get(audio.format)
    if accepted is None or audio.subtype not in accepted:
        raise AudioError(
            "unsupported_format",
            f"{audio.format} audio encoded as {audio.subtype} is not accepted; "
            f"accepted formats: {', '.join(ACCEPTED_FORMATS)}",
        )
    if audio.channels <= 0:
        raise AudioError("no_channels", "the audio header declares zero channels")
    if audio.channels > max_channels:
        raise AudioError(
            "too_many_channels",
            f"the audio has {audio.channels} channels; at most {max_channels} are accepted",
        )
    if not MIN_RATE <= audio.samplerate <= MAX_RATE:
        raise AudioError(
            "bad_sample_rate",
            f"the audio's sample rate is {audio.samplerate} Hz; "
            f"accepted: {MIN_RATE} to {MAX_RATE} Hz",
        )
    # libsndfile reports an unknown length (a FLAC stream without a total) as 2**63 - 1.
    declared = audio.frames if 0 < audio.frames < UNKNOWN_FRAMES else None
    if (
        max_seconds is not None
        and declared is not None
        and declared > max_seconds * audio.samplerate
    ):
        raise _too_long(declared / audio.samplerate, max_seconds, declared=True)


def _too_long(seconds: float | None, max_seconds: float, *, declared: bool = False) -> AudioError:
    if seconds is None:
        length = f"longer than {max_seconds:.1f} s"
    elif declared:
        length = f"{seconds:.1f} s long (as its header declares)"
    else:
        length = f"{seconds:.1f} s long"
    return AudioError("too_long", f"the audio is {length}; the limit is {max_seconds:.1f} s")


def _check_block(block: np.ndarray) -> None:
    """NaN/Inf and absurd magnitudes, without allocating (max/min propagate NaN)."""
    high, low = float(block.max()), float(block.min())
    if not (math.isfinite(high) and math.isfinite(low)):
        raise AudioError("non_finite", "the audio contains NaN or infinite samples")
    if max(high, -low) > MAX_ABS_SAMPLE:
        raise AudioError(
            "out_of_range",
            f"the audio has samples of magnitude {max(high, -low):.3g}; at most "
            f"{MAX_ABS_SAMPLE:g} is accepted (full scale is 1.0)",
        )


def _read_block(audio: sf.SoundFile, out: np.ndarray) -> np.ndarray:
    """Decode up to ``len(out)`` frames into ``out`` (C-contiguous float32 [frames, channels]).

    Calls libsndfile directly: ``SoundFile.read`` seeks to its own position after every read,
    and a seek resets the MP3 decoder (mpg123 loses its bit reservoir), which garbles the
    samples after each block boundary of some MP3 files.
    """
    done = sf._snd.sf_readf_float(audio._file, sf._ffi.from_buffer("float[]", out), len(out))
    error = sf._snd.sf_error(audio._file)
    if error:
        reason = sf._ffi.string(sf._snd.sf_error_number(error)).decode("utf-8", "replace")
        raise _undecodable(reason.strip().rstrip(".") or "a damaged audio stream")
    return out[: max(done, 0)]


def _decode_mono_16k(audio: sf.SoundFile, max_frames: int | None) -> tuple[np.ndarray, int]:
    """Read block by block, at most ``max_frames + 1`` frames: (16 kHz mono, frames read)."""
    resampler = (
        None
        if audio.samplerate == SAMPLE_RATE
        else soxr.ResampleStream(audio.samplerate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
    )
    buffer = np.empty((BLOCK_FRAMES, audio.channels), dtype=np.float32)
    pieces: list[np.ndarray] = []
    frames = 0
    while max_frames is None or frames <= max_frames:
        want = BLOCK_FRAMES if max_frames is None else min(BLOCK_FRAMES, max_frames + 1 - frames)
        block = _read_block(audio, buffer[:want])
        if len(block) == 0:
            break
        frames += len(block)
        if max_frames is not None and frames > max_frames:
            break  # one frame past the limit: too long, whatever the header said
        _check_block(block)
        # One channel is its own mean (the same floats); a copy, as the buffer is reused.
        mono = block[:, 0].copy() if audio.channels == 1 else block.mean(axis=1, dtype=np.float32)
        pieces.append(mono if resampler is None else resampler.resample_chunk(mono))
    if resampler is not None and (max_frames is None or frames <= max_frames):
        pieces.append(resampler.resample_chunk(np.zeros(0, np.float32), last=True))
    if not pieces:
        return np.zeros(0, np.float32), frames
    return np.concatenate(pieces).astype(np.float32, copy=False), frames


def decode_budget_bytes(max_seconds: float) -> int:
    """The most memory (bytes, numpy arrays) one decode may hold: twice the allowed 16 kHz mono
    output (the blocks and their join) plus one block and its downmix, plus soxr's margin."""
    allowed = math.ceil(max_seconds * SAMPLE_RATE) * 4
    return 2 * allowed + 2 * BLOCK_FRAMES * MAX_CHANNELS * 4 + (1 << 20)


def validate(
    samples: np.ndarray,
    *,
    min_seconds: float = MIN_SECONDS,
    max_seconds: float | None = None,
    finite: bool = False,
) -> np.ndarray:
    """Reject what no model can use: empty, NaN/Inf, shorter than the receptive field, too long.
    ``finite``: the samples were already checked block by block (``load_audio``)."""
    if samples.size == 0:
        raise AudioError("empty", "the audio holds no samples")
    if not finite and not np.isfinite(samples).all():
        raise AudioError("non_finite", "the audio contains NaN or infinite samples")
    seconds = samples.shape[0] / SAMPLE_RATE
    if samples.shape[0] < max(MIN_SAMPLES, int(round(min_seconds * SAMPLE_RATE))):
        raise AudioError(
            "too_short",
            f"the audio is {seconds:.3f} s long; at least {max(min_seconds, MIN_SECONDS):.3f} s is needed",
        )
    if max_seconds is not None and seconds > max_seconds:
        raise _too_long(seconds, max_seconds)
    return samples


def load_audio(
    source: bytes | str | Path,
    *,
    min_seconds: float = MIN_SECONDS,
    max_seconds: float | None = None,
) -> np.ndarray:
    """Bytes or a path -> validated mono float32 samples at 16 kHz, decoded within the limits
    (header first, then at most ``max_seconds`` of frames; see the module docstring)."""
    with _open(source) as audio:
        _check_header(audio, max_seconds)
        max_frames = None if max_seconds is None else math.floor(max_seconds * audio.samplerate)
        mono, frames = _decode_mono_16k(audio, max_frames)
        if max_frames is not None and frames > max_frames:
            raise _too_long(None, max_seconds)
    # every decoded block passed _check_block (finite, in range), and resampling keeps that
    return validate(mono, min_seconds=min_seconds, max_seconds=max_seconds, finite=True)
