"""Helpers that write test audio in every format soundfile handles, and find real speech.

write_clip(path, fmt="wav", subtype="PCM_16", sr=16000, channels=1, seconds=1.0, kind="sine")
encode_clip(fmt="flac", ...) -> bytes
real_speech_files("alsa-utils") -> [Path, ...]   (skips the test when the package is missing)
"""

from __future__ import annotations

import io
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

# fmt -> (soundfile container, default subtype, file suffix)
FORMATS: dict[str, tuple[str, str, str]] = {
    "wav": ("WAV", "PCM_16", ".wav"),
    "flac": ("FLAC", "PCM_16", ".flac"),
    "ogg": ("OGG", "VORBIS", ".ogg"),
    "opus": ("OGG", "OPUS", ".opus"),
    "mp3": ("MP3", "MPEG_LAYER_III", ".mp3"),
}
WAV_SUBTYPES = ("PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE")
# Opus only encodes at these rates (libopus).
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
KINDS = ("sine", "speech", "noise", "silence")
DEFAULT_FREQ_HZ = 440.0
AMPLITUDE = 0.5
SPEECH_TEXT = "The quick brown fox jumps over the lazy dog."

ALSA_PACKAGE = "alsa-utils"
ASTERISK_PACKAGE = "asterisk-core-sounds-en-wav"
ALSA_SOUNDS = Path("/usr/share/sounds/alsa")
ALSA_NON_SPEECH = {"Noise.wav"}
ASTERISK_NON_SPEECH_DIR = "silence"  # silence/1.wav ... : prompts of pure silence


@cache
def _speech_base() -> tuple[np.ndarray, int]:
    """Synthesised once per process: eSpeak's output depends on what it synthesised before."""
    from training.data.espeak import Prosody, synthesize

    return synthesize(SPEECH_TEXT, "en-us+m1", Prosody())


def _speech(sr: int, seconds: float) -> np.ndarray:
    from emocore.audio import resample

    samples, rate = _speech_base()
    samples = resample(samples, rate, sr)
    frames = int(round(seconds * sr))
    reps = int(np.ceil(frames / max(len(samples), 1)))
    return np.tile(samples, reps)[:frames]


def make_signal(
    kind: str = "sine",
    sr: int = 16000,
    channels: int = 1,
    seconds: float = 1.0,
    freq: float = DEFAULT_FREQ_HZ,
    seed: int = 0,
) -> np.ndarray:
    """float32 [frames, channels] in [-1, 1]. "sine": the same tone in every channel;
    "noise": independent white noise per channel; "speech": eSpeak speech (looped or cut to
    ``seconds``); "silence": zeros."""
    frames = int(round(seconds * sr))
    if kind == "sine":
        mono = AMPLITUDE * np.sin(2 * np.pi * freq * np.arange(frames) / sr)
        data = np.repeat(mono[:, None], channels, axis=1)
    elif kind == "noise":
        data = AMPLITUDE * np.random.default_rng(seed).uniform(-1, 1, (frames, channels))
    elif kind == "speech":
        data = np.repeat(_speech(sr, seconds)[:, None], channels, axis=1)
    elif kind == "silence":
        data = np.zeros((frames, channels))
    else:
        raise ValueError(f"unknown kind {kind!r}; choose one of {KINDS}")
    return data.astype(np.float32)


def _resolve(fmt: str, subtype: str | None) -> tuple[str, str]:
    if fmt not in FORMATS:
        raise ValueError(f"unknown fmt {fmt!r}; choose one of {sorted(FORMATS)}")
    container, default_subtype, _ = FORMATS[fmt]
    return container, subtype or default_subtype


def encode_clip(
    fmt: str = "wav",
    subtype: str | None = None,
    sr: int = 16000,
    channels: int = 1,
    seconds: float = 1.0,
    kind: str = "sine",
    freq: float = DEFAULT_FREQ_HZ,
    seed: int = 0,
    data: np.ndarray | None = None,
) -> bytes:
    """The clip as encoded file bytes; ``data`` ([frames] or [frames, channels]) overrides kind."""
    container, subtype = _resolve(fmt, subtype)
    if data is None:
        data = make_signal(kind, sr, channels, seconds, freq, seed)
    buffer = io.BytesIO()
    sf.write(buffer, data, sr, format=container, subtype=subtype)
    return buffer.getvalue()


def write_clip(path: str | Path, fmt: str = "wav", subtype: str | None = None, **clip: Any) -> Path:
    """Write the clip to ``path`` (a folder gets a generated file name); returns the file.
    ``clip``: the keyword arguments of ``encode_clip`` (sr, channels, seconds, kind, ...)."""
    path = Path(path)
    if path.is_dir():
        name = "_".join(str(v) for v in clip.values() if not isinstance(v, np.ndarray))
        path = path / f"{name or 'clip'}_{subtype or FORMATS[fmt][1]}{FORMATS[fmt][2]}"
    path.write_bytes(encode_clip(fmt, subtype, **clip))
    return path


def _package_files(package: str) -> list[Path]:
    if shutil.which("dpkg") is None:
        pytest.skip(f"dpkg is not available: cannot locate Debian package {package}")
    result = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"Debian package {package} is not installed (make sys-deps installs it)")
    return [Path(line) for line in result.stdout.splitlines() if line.endswith(".wav")]


def real_speech_files(package: str | None = None, limit: int | None = None) -> list[Path]:
    """Real human speech from Debian packages: ``alsa-utils`` (48 kHz spoken channel names)
    and/or ``asterisk-core-sounds-en-wav`` (8 kHz prompts; an evenly spaced subset when
    ``limit`` is set). Skips the calling test, with the reason, when a package is missing."""
    packages = [package] if package else [ALSA_PACKAGE, ASTERISK_PACKAGE]
    files: list[Path] = []
    for name in packages:
        found = sorted(p for p in _package_files(name) if p.is_file())
        if name == ALSA_PACKAGE:
            found = [p for p in found if p.name not in ALSA_NON_SPEECH]
        else:
            found = [p for p in found if p.parent.name != ASTERISK_NON_SPEECH_DIR]
        if limit is not None and len(found) > limit:
            found = [found[int(i)] for i in np.linspace(0, len(found) - 1, limit)]
        if not found:
            pytest.skip(f"Debian package {name} is installed but holds no wav files")
        files += found
    return files
