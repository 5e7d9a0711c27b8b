"""Speech synthesis with eSpeak NG: the library from the ``espeakng-loader`` wheel via ctypes,
or the Debian ``espeak-ng`` CLI when the library cannot be loaded.

Only what the synthetic corpus needs: a voice, four prosody knobs and SSML text -> samples.
"""

from __future__ import annotations

import ctypes
import io
import shutil
import subprocess
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf

# espeak_AUDIO_OUTPUT, espeak_PARAMETER, espeak_POSITION_TYPE and flag values from speak_lib.h.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_PARAM_RATE, _PARAM_VOLUME, _PARAM_PITCH, _PARAM_RANGE = 1, 2, 3, 4
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_SSML = 0x10
_EE_OK = 0
_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)
INT16_SCALE = 32768.0


class SynthesisError(RuntimeError):
    pass


@dataclass(frozen=True)
class Prosody:
    """eSpeak's own units: pitch 0-100 (50 = voice default), range 0-100 (50 default),
    rate in words per minute, volume in percent (100 default)."""

    pitch: int = 50
    range: int = 50
    rate: int = 175
    volume: int = 100

    def clipped(self) -> Prosody:
        return Prosody(
            pitch=int(np.clip(self.pitch, 0, 100)),
            range=int(np.clip(self.range, 0, 100)),
            rate=int(np.clip(self.rate, 80, 450)),
            volume=int(np.clip(self.volume, 0, 200)),
        )


class _Library:
    """libespeak-ng in synchronous mode; the library is a process-wide singleton, hence the lock."""

    def __init__(self) -> None:
        import espeakng_loader

        self._lib = ctypes.CDLL(espeakng_loader.get_library_path())
        data_parent = str(Path(espeakng_loader.get_data_path()).parent).encode()
        self._lib.espeak_Initialize.argtypes = [
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_char_p,
            ctypes.c_int,
        ]
        self._lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self._lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self._lib.espeak_Synth.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
            ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]  # fmt: skip
        self.sample_rate = int(
            self._lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_parent, 0)
        )
        if self.sample_rate <= 0:
            raise SynthesisError(f"espeak_Initialize failed ({self.sample_rate})")
        self._chunks: list[np.ndarray] = []
        # Keep a reference: ctypes callbacks are freed when garbage-collected.
        self._callback = _CALLBACK(self._collect)
        self._lib.espeak_SetSynthCallback(self._callback)
        self._lock = threading.Lock()

    def _collect(self, wav, numsamples, _events) -> int:
        if wav and numsamples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(numsamples,)).copy())
        return 0

    def synthesize(self, ssml: str, voice: str, prosody: Prosody) -> np.ndarray:
        with self._lock:
            if self._lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
                raise SynthesisError(f"unknown eSpeak voice {voice!r}")
            for param, value in (
                (_PARAM_PITCH, prosody.pitch),
                (_PARAM_RANGE, prosody.range),
                (_PARAM_RATE, prosody.rate),
                (_PARAM_VOLUME, prosody.volume),
            ):
                self._lib.espeak_SetParameter(param, value, 0)
            text = ssml.encode() + b"\0"
            self._chunks = []
            status = self._lib.espeak_Synth(
                text, len(text), 0, _POS_CHARACTER, 0, _SSML | _CHARS_UTF8, None, None
            )
            self._lib.espeak_Synchronize()
            if status != _EE_OK:
                raise SynthesisError(f"espeak_Synth failed ({status})")
            chunks, self._chunks = self._chunks, []
        pcm = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)
        return pcm.astype(np.float32) / INT16_SCALE


class _Cli:
    """Fallback: the Debian ``espeak-ng`` program (its WAV header sizes are bogus; soundfile copes)."""

    def __init__(self) -> None:
        self._exe = shutil.which("espeak-ng")
        if self._exe is None:
            raise SynthesisError(
                "neither libespeak-ng (espeakng-loader) nor the espeak-ng CLI is available"
            )
        self.sample_rate = 0

    def synthesize(self, ssml: str, voice: str, prosody: Prosody) -> np.ndarray:
        args = [self._exe, "--stdout", "-m", "-v", voice, "-p", str(prosody.pitch),
                "-s", str(prosody.rate), "-a", str(prosody.volume)]  # fmt: skip
        # The CLI has no range flag: pitch range goes into the SSML (as a relative change).
        ssml = f'<speak><prosody range="{(prosody.range - 50) * 2:+d}%">{ssml}</prosody></speak>'
        out = subprocess.run(args + [ssml], capture_output=True, check=True).stdout
        samples, self.sample_rate = sf.read(io.BytesIO(out), dtype="float32")
        return samples


@lru_cache(maxsize=1)
def engine() -> _Library | _Cli:
    """The library if it loads, else the CLI."""
    try:
        return _Library()
    except (OSError, ImportError, SynthesisError, AttributeError):
        return _Cli()


def synthesize(ssml: str, voice: str, prosody: Prosody) -> tuple[np.ndarray, int]:
    """SSML fragment -> (mono float32 samples, sample rate)."""
    tts = engine()
    samples = tts.synthesize(ssml, voice, prosody.clipped())
    return samples, tts.sample_rate
