import shutil

import numpy as np
import pytest

from emocore.audio import resample
from training.data.espeak import Prosody, SynthesisError, _Cli, engine, synthesize
from training.features.prosody import extract_lld, feature_names

TEXT = "I am so happy about the <break time='200ms'/> news."


def mean_f0(samples: np.ndarray, rate: int) -> float:
    """Mean voiced F0 in semitones (opensmile), on the 16 kHz samples the models see."""
    feats = extract_lld(resample(samples, rate))
    f0 = feats[:, feature_names().index("F0semitoneFrom27.5Hz_sma3nz")]
    return float(f0[f0 > 0].mean())


def test_library_engine_synthesises_speech():
    tts = engine()
    assert type(tts).__name__ == "_Library", "libespeak-ng from espeakng-loader should load"
    samples, rate = synthesize(TEXT, "en-us+f2", Prosody())
    assert rate == 22050 and samples.dtype == np.float32
    assert 1.0 < len(samples) / rate < 5.0 and 0.1 < np.abs(samples).max() <= 1.0


def test_prosody_knobs_move_duration_and_loudness():
    slow, rate = synthesize(TEXT, "en-us+m2", Prosody(rate=120))
    fast, _ = synthesize(TEXT, "en-us+m2", Prosody(rate=260))
    assert len(slow) > 1.5 * len(fast)
    quiet, _ = synthesize(TEXT, "en-us+m2", Prosody(volume=40))
    loud, _ = synthesize(TEXT, "en-us+m2", Prosody(volume=160))
    assert np.sqrt(np.mean(loud**2)) > 2 * np.sqrt(np.mean(quiet**2))
    high, _ = synthesize(TEXT, "en-us+m2", Prosody(pitch=80))
    low, _ = synthesize(TEXT, "en-us+m2", Prosody(pitch=20))
    assert mean_f0(high, rate) > mean_f0(low, rate) + 3  # semitones


def test_unknown_voice_is_an_error():
    with pytest.raises(SynthesisError, match="voice"):
        synthesize(TEXT, "xx-nonexistent", Prosody())


def test_cli_fallback():
    if shutil.which("espeak-ng") is None:
        pytest.skip("Debian espeak-ng CLI not installed (make sys-deps)")
    cli = _Cli()
    samples = cli.synthesize(TEXT, "en-us+m1", Prosody(pitch=70, range=80, rate=170, volume=100))
    assert cli.sample_rate == 22050 and len(samples) > cli.sample_rate
    low = cli.synthesize(TEXT, "en-us+m1", Prosody(pitch=20, range=30, rate=170, volume=100))
    assert mean_f0(samples, cli.sample_rate) > mean_f0(low, cli.sample_rate) + 3  # semitones
