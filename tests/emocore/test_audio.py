"""The one audio path (emocore/audio.py): every format, channel layout and rate, real human
speech, every error code, and path vs bytes."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import soundfile as sf

from emocore.audio import MIN_SAMPLES, SAMPLE_RATE, AudioError, load_audio, resample, to_mono
from tests.fixtures import (
    ALSA_PACKAGE,
    ASTERISK_PACKAGE,
    FORMATS,
    OPUS_RATES,
    WAV_SUBTYPES,
    encode_clip,
    make_signal,
    real_speech_files,
    write_clip,
)

FREQ = 440.0
# Worst-case quantisation step of each WAV subtype (8-bit WAV is unsigned, 1/128 per step).
WAV_TOLERANCE = {
    "PCM_U8": 1 / 64,
    "PCM_16": 1e-4,
    "PCM_24": 1e-6,
    "PCM_32": 1e-6,
    "FLOAT": 1e-7,
    "DOUBLE": 1e-7,
}
SOURCE_RATES = (8000, 16000, 22050, 44100, 48000)
LOSSY = ("ogg", "opus", "mp3")


def dominant_hz(samples: np.ndarray, rate: int = SAMPLE_RATE) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[np.argmax(spectrum)])


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))


def _check_output(samples: np.ndarray) -> None:
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert np.isfinite(samples).all()


@pytest.mark.parametrize("subtype", WAV_SUBTYPES)
def test_wav_subtypes_decode_to_the_written_signal(subtype):
    original = make_signal("noise", SAMPLE_RATE, 1, 0.5, seed=1)[:, 0]
    samples = load_audio(encode_clip("wav", subtype, data=original))
    _check_output(samples)
    assert samples.shape == original.shape
    np.testing.assert_allclose(samples, original, atol=WAV_TOLERANCE[subtype])


@pytest.mark.parametrize(
    ("fmt", "sr"),
    # libopus only encodes at OPUS_RATES
    [(f, r) for f in sorted(FORMATS) for r in SOURCE_RATES if f != "opus" or r in OPUS_RATES],
)
def test_every_format_and_rate_keeps_duration_and_pitch(fmt, sr):
    seconds = 1.0
    samples = load_audio(encode_clip(fmt, sr=sr, seconds=seconds, kind="sine", freq=FREQ))
    _check_output(samples)
    # lossy codecs may pad or trim a few ms of encoder delay
    slack = 0.05 * SAMPLE_RATE if fmt in LOSSY else 1
    assert abs(len(samples) - seconds * SAMPLE_RATE) <= slack
    assert dominant_hz(samples) == pytest.approx(FREQ, abs=2.0)
    assert rms(samples) == pytest.approx(0.5 / np.sqrt(2), rel=0.1)


@pytest.mark.parametrize("sr", [22050, 44100, 48000])
def test_resampling_matches_soxr_hq_and_keeps_a_high_tone(sr):
    # 7 kHz survives 16 kHz (Nyquist 8 kHz); an 8 kHz source cannot hold it, so not tested there
    tone = make_signal("sine", sr, 1, 0.5, freq=7000.0)[:, 0]
    out = load_audio(encode_clip("wav", "FLOAT", data=tone, sr=sr))
    assert dominant_hz(out) == pytest.approx(7000.0, abs=4.0)
    np.testing.assert_array_equal(out, resample(tone, sr))
    np.testing.assert_array_equal(resample(tone, SAMPLE_RATE), tone)  # same rate: untouched


def test_aliasing_is_filtered():
    # 12 kHz at 48 kHz is above 16 kHz's Nyquist: HQ resampling removes it instead of folding it to 4 kHz
    tone = make_signal("sine", 48000, 1, 0.5, freq=12000.0)[:, 0]
    out = load_audio(encode_clip("wav", "FLOAT", data=tone, sr=48000))
    assert rms(out) < 0.01 * rms(tone)  # at least 40 dB down


@pytest.mark.parametrize("channels", [2, 6])
def test_multichannel_is_averaged(channels):
    data = make_signal("noise", SAMPLE_RATE, channels, 0.5, seed=channels)
    out = load_audio(encode_clip("wav", "FLOAT", data=data))
    np.testing.assert_allclose(out, data.mean(axis=1), atol=1e-7)


def test_stereo_downmix_with_resampling_and_lossy_codec():
    data = make_signal("sine", 44100, 2, 1.0, freq=FREQ)
    data[:, 1] *= 0.2  # an unbalanced pair: the mean keeps 0.6 of the amplitude
    out = load_audio(encode_clip("ogg", data=data, sr=44100))
    assert dominant_hz(out) == pytest.approx(FREQ, abs=2.0)
    assert rms(out) == pytest.approx(0.6 * 0.5 / np.sqrt(2), rel=0.1)
    assert to_mono(data).shape == (len(data),)


@pytest.mark.parametrize(
    ("fmt", "subtype", "sr", "channels"),
    [
        ("wav", "PCM_16", 48000, 2),
        ("flac", "PCM_24", 22050, 1),
        ("ogg", None, 44100, 2),
        ("opus", None, 48000, 1),
        ("mp3", None, 8000, 1),
    ],  # fmt: skip
)
def test_path_and_bytes_give_identical_samples(tmp_path, fmt, subtype, sr, channels):
    path = write_clip(
        tmp_path / f"clip{FORMATS[fmt][2]}", fmt, subtype, sr=sr, channels=channels, kind="noise"
    )
    np.testing.assert_array_equal(load_audio(path), load_audio(path.read_bytes()))
    np.testing.assert_array_equal(load_audio(str(path)), load_audio(bytearray(path.read_bytes())))


@pytest.mark.parametrize("package", [ALSA_PACKAGE, ASTERISK_PACKAGE])
def test_real_human_speech(package):
    files = real_speech_files(package, limit=8)
    for path in files:
        info = sf.info(str(path))
        samples = load_audio(path)
        _check_output(samples)
        assert abs(len(samples) / SAMPLE_RATE - info.duration) < 0.01, path
        # speech: clearly above silence, and its loudness varies (syllables and gaps)
        frames = samples[: len(samples) // 320 * 320].reshape(-1, 320)
        energy = np.sqrt(np.mean(frames**2, axis=1))
        assert energy.max() > 0.01 and energy.max() > 10 * max(np.percentile(energy, 10), 1e-6), (
            path
        )
        np.testing.assert_array_equal(samples, load_audio(path.read_bytes()))
    rates = {sf.info(str(p)).samplerate for p in files}
    assert rates == ({48000} if package == ALSA_PACKAGE else {8000})


def test_real_speech_through_every_codec(tmp_path):
    """A real 48 kHz recording re-encoded in every format still decodes to the same speech."""
    path = real_speech_files(ALSA_PACKAGE)[0]
    data, sr = sf.read(str(path), dtype="float32")
    reference = load_audio(path)
    for fmt in FORMATS:
        out = load_audio(encode_clip(fmt, data=data, sr=sr))
        n = min(len(out), len(reference))
        assert abs(len(out) - len(reference)) < 0.05 * SAMPLE_RATE, fmt
        if fmt not in LOSSY:
            np.testing.assert_allclose(out, reference, atol=1e-3)
        else:
            # codec delay shifts lossy output: compare loudness envelopes, not samples
            assert rms(out[:n]) == pytest.approx(rms(reference[:n]), rel=0.25), fmt


def _assert_error(source, code, **kwargs):
    with pytest.raises(AudioError) as info:
        load_audio(source, **kwargs)
    assert info.value.code == code
    assert str(info.value) == info.value.message and len(info.value.message) > 10
    return info.value


def test_empty(tmp_path):
    _assert_error(b"", "empty")
    (tmp_path / "empty.wav").write_bytes(b"")
    _assert_error(tmp_path / "empty.wav", "empty")
    # a valid header with no frames
    _assert_error(encode_clip("wav", data=np.zeros(0, dtype=np.float32)), "empty")


def test_undecodable_lists_accepted_formats(tmp_path):
    error = _assert_error(b"this is not audio" * 20, "undecodable")
    assert "FLAC" in error.message and "MP3" in error.message
    truncated = encode_clip("wav")[:30]
    _assert_error(truncated, "undecodable")
    _assert_error(tmp_path / "missing.wav", "not_found")


def test_zero_channels():
    header = bytearray(encode_clip("wav", seconds=0.1))
    header[22:24] = struct.pack("<H", 0)  # the fmt chunk's channel count
    _assert_error(bytes(header), "no_channels")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("subtype", ["FLOAT", "DOUBLE"])
def test_non_finite(bad, subtype):
    data = make_signal("sine", 48000, 2, 0.5)
    data[1000, 1] = bad
    _assert_error(encode_clip("wav", subtype, data=data, sr=48000), "non_finite")


def test_too_short_and_too_long():
    short = np.full(MIN_SAMPLES - 1, 0.1, dtype=np.float32)
    _assert_error(encode_clip("wav", "FLOAT", data=short), "too_short")
    assert (
        len(load_audio(encode_clip("wav", "FLOAT", data=np.full(MIN_SAMPLES, 0.1)))) == MIN_SAMPLES
    )
    # long enough at 48 kHz, too short once resampled to 16 kHz
    _assert_error(
        encode_clip("wav", data=np.full(3 * MIN_SAMPLES - 30, 0.1), sr=48000), "too_short"
    )
    one_second = encode_clip("wav", seconds=1.0)
    _assert_error(one_second, "too_short", min_seconds=1.5)
    error = _assert_error(one_second, "too_long", max_seconds=0.5)
    assert "0.5" in error.message
    assert len(load_audio(one_second, min_seconds=0.9, max_seconds=1.1)) == SAMPLE_RATE
