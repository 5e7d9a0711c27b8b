"""A corpus of hostile uploads for POST /predict, generated (nothing binary is checked in).

Each `Case` is what an attacker would send: compression bombs in every accepted codec, headers
that lie, absurd rates and channel counts, NaN/Inf and huge-but-finite samples, truncated and
empty files, text and random bytes, valid audio in formats the server does not take, and
multipart edge cases. Every case expects a 4xx with one of the named error codes, except the
controls (`status=200`), which check that a refusal is about the content, not about the name.

Cases are built once per process (`cases()`); the largest body is about 1 MB. Case data is
produced by small generators: `bomb`, `wav_with`, `flac_total`, `raw`, `multipart`.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass, field
from functools import cache

import numpy as np
import soundfile as sf

# The settings the corpus is sent with (tests/server/api/test_hostile.py): small limits so that a
# bomb only a few hundred KB long is already 10x over them.
MAX_SECONDS = 30.0
MAX_SEGMENTED_SECONDS = 120.0
MAX_FILES = 4


@dataclass(frozen=True)
class Case:
    name: str
    body: bytes = b""
    codes: tuple[str, ...] = ()  # accepted error codes; empty with status 200
    status: int | None = None  # exact status; None: any 4xx
    query: str = ""
    files: tuple[tuple[str, str, bytes, str], ...] | None = None  # (field, name, data, type)
    headers: dict[str, str] = field(default_factory=dict)


def encode(
    data: np.ndarray, rate: int, fmt: str = "WAV", subtype: str | None = None, **kw
) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, data, rate, format=fmt, subtype=subtype, **kw)
    return buffer.getvalue()


def bomb(fmt: str, subtype: str, seconds: float, rate: int, channels: int) -> bytes:
    """Silence, written in blocks: a long, wide recording that compresses to almost nothing."""
    buffer = io.BytesIO()
    block = np.zeros((rate * 10, channels), np.float32)
    with sf.SoundFile(buffer, "w", rate, channels, format=fmt, subtype=subtype) as out:
        for _ in range(int(seconds // 10)):
            out.write(block)
    return buffer.getvalue()


def tone(seconds: float = 1.0, rate: int = 16_000, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    mono = 0.5 * np.sin(2 * np.pi * 440 * t)
    return np.repeat(mono[:, None], channels, axis=1).astype(np.float32)


def wav_with(data: bytes, **fields: int) -> bytes:
    """A WAV's header fields overwritten (offsets of the canonical 44-byte header)."""
    offsets = {
        "riff_size": (4, "<I"),
        "channels": (22, "<H"),
        "rate": (24, "<I"),
        "byte_rate": (28, "<I"),
        "block_align": (32, "<H"),
        "bits": (34, "<H"),
        "data_size": (40, "<I"),
    }
    edited = bytearray(data)
    assert edited[36:40] == b"data", "canonical header expected"
    for name, value in fields.items():
        offset, fmt = offsets[name]
        edited[offset : offset + struct.calcsize(fmt)] = struct.pack(fmt, value)
    return bytes(edited)


def flac_total(data: bytes, total: int) -> bytes:
    """A FLAC whose STREAMINFO declares ``total`` samples (36 bits), whatever it holds."""
    edited = bytearray(data)
    assert edited[:4] == b"fLaC"
    at = 8 + 10  # STREAMINFO body starts at 8; bytes 10..17 end with the 36-bit total
    value = int.from_bytes(edited[at : at + 8], "big") & ~((1 << 36) - 1)
    edited[at : at + 8] = (value | total).to_bytes(8, "big")
    return bytes(edited)


def raw(seed: int, size: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()


def multipart(boundary: str, parts: list[tuple[str, bytes]]) -> bytes:
    """A hand-made multipart body: (part headers, content) pairs."""
    body = b""
    for headers, content in parts:
        body += f"--{boundary}\r\n{headers}\r\n\r\n".encode() + content + b"\r\n"
    return body + f"--{boundary}--\r\n".encode()


def _float_wav(value: float, subtype: str = "FLOAT", channels: int = 1) -> bytes:
    data = tone(1.0, channels=channels).astype(np.float64)
    data[1000:1010] = value
    return encode(data, 16_000, subtype=subtype)


@cache
def cases() -> tuple[Case, ...]:
    wav = encode(tone(), 16_000, subtype="PCM_16")
    long_wav = encode(tone(40.0, 8000), 8000, subtype="PCM_16")
    flac_60s = encode(tone(60.0, 8000), 8000, fmt="FLAC")
    too_long, undecodable = ("too_long",), ("undecodable",)
    bad = ("undecodable", "unsupported_format", "no_channels", "too_many_channels")
    bad_rate = ("bad_sample_rate", "undecodable")
    out: list[Case] = [
        # Compression bombs: 10 minutes of silence in every accepted codec (a few KB to 1 MB).
        Case("bomb-flac-8ch-48k", bomb("FLAC", "PCM_16", 600, 48_000, 8), too_long, 413),
        Case("bomb-flac-8ch-192k", bomb("FLAC", "PCM_24", 120, 192_000, 8), too_long, 413),
        Case("bomb-vorbis-8ch", bomb("OGG", "VORBIS", 600, 48_000, 8), too_long, 413),
        Case("bomb-vorbis-stereo", bomb("OGG", "VORBIS", 600, 44_100, 2), too_long, 413),
        Case("bomb-opus-stereo", bomb("OGG", "OPUS", 600, 48_000, 2), too_long, 413),
        Case("bomb-mp3-mono", bomb("MP3", "MPEG_LAYER_III", 600, 8000, 1), too_long, 413),
        Case("bomb-wav-ulaw", bomb("WAV", "ULAW", 120, 8000, 1), too_long, 413),
        Case(
            "bomb-flac-segmented",
            bomb("FLAC", "PCM_16", 600, 48_000, 8),
            too_long,
            413,
            query="segment=true",
        ),
        # ... and with a header that does not say how long it is (FLAC total 0 = unknown):
        # only decoding one frame past the limit can tell.
        Case(
            "bomb-flac-unknown-length",
            flac_total(bomb("FLAC", "PCM_16", 600, 48_000, 8), 0),
            too_long,
            413,
        ),  # fmt: skip
        Case(
            "bomb-flac-unknown-length-segmented",
            flac_total(bomb("FLAC", "PCM_16", 600, 16_000, 2), 0),
            too_long,
            413,
            query="segment=true",
        ),  # fmt: skip
        # Headers that lie.
        Case(
            "flac-total-2^36",
            flac_total(encode(tone(), 16_000, fmt="FLAC"), (1 << 36) - 1),
            too_long,
            413,
        ),  # fmt: skip
        Case("flac-total-under-data", flac_total(flac_60s, 100), ("too_short",), 422),
        Case(
            "wav-data-size-4GiB",
            wav_with(long_wav, data_size=0xFFFFFFF0, riff_size=0xFFFFFFF8),
            too_long,
            413,
        ),  # fmt: skip
        Case("wav-data-size-0", wav_with(wav, data_size=0), ("empty",) + undecodable),
        Case("wav-bits-0", wav_with(wav, bits=0), bad),
        # Absurd rates and channel counts.
        Case("wav-10Hz", encode(tone(60.0, 10), 10, subtype="PCM_16"), bad_rate, None),
        Case("wav-10MHz", wav_with(wav, rate=10_000_000), bad_rate, None),
        Case("wav-4kHz", encode(tone(1.0, 4000), 4000, subtype="PCM_16"), bad_rate, 422),
        Case("wav-rate-0", wav_with(wav, rate=0), bad_rate + ("no_channels",)),
        Case("wav-rate-2^32-1", wav_with(wav, rate=0xFFFFFFFF), bad_rate),
        Case("wav-0-channels", wav_with(wav, channels=0), bad),
        Case(
            "wav-9-channels",
            encode(tone(1.0, 16_000, 9), 16_000, subtype="PCM_16"),
            ("too_many_channels",),
            422,
        ),  # fmt: skip
        Case("wav-65535-channels", wav_with(wav, channels=0xFFFF), bad),
        Case("wav-384kHz", wav_with(wav, rate=384_000), bad_rate, 422),
        # NaN, Inf and huge-but-finite samples.
        Case("float-nan", _float_wav(np.nan), ("non_finite",), 422),
        Case("float-inf", _float_wav(np.inf), ("non_finite",), 422),
        Case("double-minus-inf", _float_wav(-np.inf, "DOUBLE"), ("non_finite",), 422),
        Case("float-1e30", _float_wav(1e30), ("out_of_range",), 422),
        Case("float-3e38-8ch", _float_wav(3e38, channels=8), ("out_of_range",), 422),
        Case("double-1e300", _float_wav(1e300, "DOUBLE"), ("non_finite", "out_of_range"), 422),
        Case("float-1e4", _float_wav(1e4), ("out_of_range",), 422),
        # Truncated and zero-length files.
        Case("empty", b"", ("empty",), 422),
        Case("wav-header-only", wav[:44], ("empty",) + undecodable),
        Case("wav-30-bytes", wav[:30], undecodable, 415),
        Case("riff-magic-only", b"RIFF", undecodable, 415),
        Case("flac-magic-only", b"fLaC", undecodable, 415),
        Case("ogg-magic-only", b"OggS\x00\x02" + b"\x00" * 20, undecodable, 415),
        Case(
            "flac-truncated", encode(tone(), 16_000, fmt="FLAC")[:200], bad + ("too_short", "empty")
        ),
        Case(
            "ogg-truncated", encode(tone(), 16_000, fmt="OGG")[:300], bad + ("too_short", "empty")
        ),
        Case(
            "mp3-truncated", encode(tone(), 16_000, fmt="MP3")[:100], bad + ("too_short", "empty")
        ),
        Case("id3-tag-only", b"ID3\x04\x00\x00\x7f\x7f\x7f\x7f" + b"\x00" * 64, bad + ("empty",)),
        # Text and random bytes.
        Case("text", b"this is not audio at all\n" * 40, undecodable, 415),
        Case("json", b'{"audio": "<_io.BytesIO object at 0x7f>"}', undecodable, 415),
        Case("server-path", b"/etc/passwd", undecodable, 415),
        Case("random-1KB", raw(0, 1024), bad, None),
        Case("random-1MB", raw(1, 1 << 20), bad, None),
        Case("zeros-64KB", bytes(65536), bad, None),
        # Valid audio in formats the server does not take, whatever the name says.
        Case(
            "aiff",
            encode(tone(), 16_000, fmt="AIFF", subtype="PCM_16"),
            ("unsupported_format",),
            415,
        ),
        Case(
            "au", encode(tone(), 16_000, fmt="AU", subtype="PCM_16"), ("unsupported_format",), 415
        ),
        Case(
            "w64", encode(tone(), 16_000, fmt="W64", subtype="PCM_16"), ("unsupported_format",), 415
        ),
        Case("caf-alac-bomb", bomb("CAF", "ALAC_16", 600, 48_000, 2), ("unsupported_format",), 415),
        Case(
            "wav-ima-adpcm",
            encode(tone(), 16_000, subtype="IMA_ADPCM"),
            ("unsupported_format",),
            415,
        ),
        Case("wav-gsm610", encode(tone(), 8000, subtype="GSM610"), ("unsupported_format",), 415),
        Case(
            "mat5",
            encode(tone(), 16_000, fmt="MAT5", subtype="DOUBLE"),
            ("unsupported_format",),
            415,
        ),
        Case(
            "aiff-named-wav",
            files=(
                (
                    "file",
                    "clip.wav",
                    encode(tone(), 16_000, fmt="AIFF", subtype="PCM_16"),
                    "audio/wav",
                ),
            ),
            codes=("unsupported_format",),
            status=415,
        ),  # fmt: skip
        # Controls: valid audio under a wrong name and content type is judged by its content.
        Case("control-wav-named-mp3", files=(("file", "song.mp3", wav, "image/png"),), status=200),
        Case("control-wav-as-text-plain", wav, status=200, headers={"content-type": "text/plain"}),
        # Multipart edge cases.
        Case(
            "multipart-no-boundary",
            b"--x\r\n\r\n",
            ("bad_request",),
            400,
            headers={"content-type": "multipart/form-data"},
        ),  # fmt: skip
        Case(
            "multipart-garbage",
            raw(2, 4096),
            ("bad_request", "no_audio"),
            headers={"content-type": "multipart/form-data; boundary=zzz"},
        ),  # fmt: skip
        Case(
            "multipart-unterminated",
            b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n' + wav,
            ("bad_request", "undecodable", "no_audio"),
            headers={"content-type": "multipart/form-data; boundary=b"},
        ),  # fmt: skip
        Case(
            "multipart-empty-file",
            files=(("file", "a.wav", b"", "audio/wav"),),
            codes=("empty",),
            status=422,
        ),
        Case(
            "multipart-too-many-files",
            files=tuple(("file", f"{i}.wav", wav, "audio/wav") for i in range(MAX_FILES + 1)),
            codes=("bad_request",),
            status=400,
        ),  # fmt: skip
        Case(
            "multipart-text-field-only",
            multipart("b", [('Content-Disposition: form-data; name="file"', b"not a file")]),
            ("no_audio",),
            422,
            headers={"content-type": "multipart/form-data; boundary=b"},
        ),  # fmt: skip
        Case(
            "multipart-bombs",
            files=tuple(
                ("file", f"{i}.flac", bomb("FLAC", "PCM_16", 600, 48_000, 8), "audio/flac")
                for i in range(MAX_FILES)
            ),
            codes=too_long,
            status=413,
        ),  # fmt: skip
        Case(
            "multipart-control-chars-name",
            files=(
                ("file", "ok.wav", wav, "audio/wav"),
                ("file", "\x1b[31mevil\n" + "x" * 500, b"junk" * 50, "audio/wav"),
            ),
            codes=undecodable,
            status=415,
        ),  # fmt: skip
        Case(
            "multipart-many-fields",
            multipart(
                "b", [(f'Content-Disposition: form-data; name="f{i}"', b"x") for i in range(1200)]
            ),
            ("bad_request", "no_audio"),
            headers={"content-type": "multipart/form-data; boundary=b"},
        ),  # fmt: skip
    ]
    names = [case.name for case in out]
    assert len(names) == len(set(names)), "case names repeat"
    return tuple(out)
