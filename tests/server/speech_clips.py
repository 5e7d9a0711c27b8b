"""Synthesized test speech with known boundaries (espeak-ng CLI), shared by the VAD and stream tests."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from functools import cache

import numpy as np
import pytest

from emocore.audio import SAMPLE_RATE, load_audio

SENTENCES = (
    "I am so happy about the weather today.",
    "Please close the door behind you.",
    "That was the worst meal I have ever had.",
)
# espeak-ng writes exact zeros around speech; anything above this (after resampling) is speech.
SPEECH_FLOOR = 1e-3


@dataclass(frozen=True)
class Utterances:
    samples: np.ndarray  # float32 mono 16 kHz
    truth: list[tuple[int, int]]  # speech [start, end) in samples


def require_espeak() -> None:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng CLI not installed (Debian package espeak-ng; `make sys-deps`)")


def synthesize(text: str, voice: str = "en-us") -> np.ndarray:
    require_espeak()
    wav = subprocess.run(
        ["espeak-ng", "-v", voice, "--stdout", text], capture_output=True, check=True
    ).stdout
    return load_audio(wav)


@cache
def three_utterances(
    voice: str = "en-us", lead_s: float = 0.5, gap_s: float = 1.0, tail_s: float = 1.0
) -> Utterances:
    """SENTENCES separated by silence; truth is each sentence's non-silent extent."""
    parts = [np.zeros(int(lead_s * SAMPLE_RATE), np.float32)]
    truth = []
    position = parts[0].shape[0]
    for index, sentence in enumerate(SENTENCES):
        speech = synthesize(sentence, voice)
        loud = np.nonzero(np.abs(speech) > SPEECH_FLOOR)[0]
        truth.append((position + int(loud[0]), position + int(loud[-1]) + 1))
        silence = np.zeros(int((gap_s if index < len(SENTENCES) - 1 else tail_s) * SAMPLE_RATE))
        parts += [speech, silence.astype(np.float32)]
        position += speech.shape[0] + silence.shape[0]
    return Utterances(np.concatenate(parts), truth)
