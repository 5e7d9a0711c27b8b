"""The student's training augmentation: each transform does what it says, draws are seeded per
clip, everything off leaves the clips as they were, and a student trains with everything on."""

from __future__ import annotations

import logging
import random

import numpy as np
import pytest
import soundfile as sf

from emocore.audio import SAMPLE_RATE
from training.config import ConfigError, load_config
from training.data.utterance import EMOTIONS
from training.eval.metrics import compute_metrics
from training.fit.augment import (
    Augmentation,
    AugmentOptions,
    perturb_speed,
    rms,
)
from training.fit.batches import AudioSet, EpochBatches, crop, item_seed
from training.fit.loop import StudentOptions, train_student
from training.fit.losses import LossWeights
from training.stages.students import student_options

EVERYTHING = AugmentOptions(
    gain_db=20, noise_p=1, babble_p=1, reverb_p=1, rooms=3, telephone_p=1, codec_p=1
)


class Pool:
    """A few utterances for babble."""

    def __init__(self, n: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.audio = [
            (0.1 * rng.standard_normal(int(rng.integers(8000, 40000)))).astype(np.float32)
            for _ in range(n)
        ]

    def __len__(self) -> int:
        return len(self.audio)

    def samples(self, i: int) -> np.ndarray:
        return self.audio[i]


def _speechlike(n: int = 3 * SAMPLE_RATE, seed: int = 0) -> np.ndarray:
    """Tones between 200 Hz and 3 kHz under a syllable-rate envelope."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SAMPLE_RATE
    tones = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) for f in rng.uniform(200, 3000, 6))
    return (0.05 * tones * (1.2 + np.sin(2 * np.pi * 4 * t))).astype(np.float32)


def _energy_above(x: np.ndarray, hz: float) -> float:
    spectrum = np.abs(np.fft.rfft(x)) ** 2
    return float(spectrum[np.fft.rfftfreq(len(x), 1 / SAMPLE_RATE) > hz].sum())


def _only(**kw) -> Augmentation:
    return Augmentation(AugmentOptions(**kw))


def test_speed_perturbation():
    rng = np.random.default_rng(0)
    x = np.arange(32000, dtype=np.float32)
    assert perturb_speed(x, 0.0, rng) is x
    lengths = [len(perturb_speed(x, 0.2, rng)) for _ in range(20)]
    assert min(lengths) >= 0.8 * 32000 - 1 and max(lengths) <= 1.2 * 32000 + 1
    assert len(set(lengths)) > 1


@pytest.mark.parametrize("speed", [0.0, 0.15])
def test_off_leaves_the_clips_as_they_were(speed):
    """Defaults off: the same crop (and speed) as without augmentation, the same array."""
    pool = Pool(6)
    plain = EpochBatches(
        pool, [], 16000, seed=3, epoch=2, augment=Augmentation(AugmentOptions(), speed)
    )
    for i in range(len(pool)):
        rng = np.random.default_rng(item_seed(3, 2, i))
        before = crop(perturb_speed(pool.samples(i), speed, rng), 16000, rng)
        assert np.array_equal(plain.clip(i), before)
    off = Augmentation(AugmentOptions.from_config(load_config("demo")))
    assert not off.on and off.describe() == "off"
    clip = pool.samples(0)
    assert off(clip, np.random.default_rng(0), pool, 0) is clip
    if not speed:
        default = EpochBatches(pool, [], 16000, seed=3, epoch=2)
        assert all(np.array_equal(default.clip(i), plain.clip(i)) for i in range(len(pool)))


def test_gain_changes_the_level_by_the_drawn_db():
    aug = _only(gain_db=20)
    clip = _speechlike()
    changes = []
    for seed in range(5):
        out = aug(clip, np.random.default_rng(seed), Pool(2), 0)
        db = 20 * np.log10(rms(out) / rms(clip))
        assert db == pytest.approx(20 * np.log10(aug.gain.parameters["amplitude_ratio"]), abs=1e-3)
        assert -20 <= db <= 20
        changes.append(db)
    assert np.ptp(changes) > 5


@pytest.mark.parametrize("kind", ["noise", "babble"])
def test_noise_and_babble_at_the_drawn_snr(kind):
    clip, pool = _speechlike(), Pool(8)
    for snr in (0.0, 12.0, 25.0):
        aug = _only(**{f"{kind}_p": 1.0}, snr_db=(snr, snr))
        out = aug(clip, np.random.default_rng(1), pool, 0)
        assert len(out) == len(clip)
        assert 20 * np.log10(rms(clip) / rms(out - clip)) == pytest.approx(snr, abs=1.0)
    ranged = _only(**{f"{kind}_p": 1.0}, snr_db=(5, 30))
    measured = [
        20 * np.log10(rms(clip) / rms(ranged(clip, np.random.default_rng(s), pool, 0) - clip))
        for s in range(6)
    ]
    assert all(4 <= m <= 31 for m in measured) and np.ptp(measured) > 3


def test_babble_needs_another_utterance():
    clip, alone = _speechlike(), Pool(1)
    assert _only(babble_p=1.0)(clip, np.random.default_rng(0), alone, 0) is clip


def test_reverb_convolves_with_a_simulated_room():
    aug = _only(reverb_p=1.0, rooms=4, seed=0)
    assert len(aug.rirs) == 4 and len({len(r) for r in aug.rirs}) > 1  # rooms differ
    impulse = np.zeros(SAMPLE_RATE, dtype=np.float32)
    impulse[0] = 1.0
    out = aug(impulse, np.random.default_rng(0), Pool(2), 0)
    assert len(out) == len(impulse)
    best = max(
        abs(np.corrcoef(out[: len(r)], r[: len(out)])[0, 1]) for r in aug.rirs
    )  # the room's impulse response itself
    assert best > 0.99
    burst = np.zeros(SAMPLE_RATE, dtype=np.float32)
    burst[:4000] = _speechlike(4000)
    wet = aug(burst, np.random.default_rng(1), Pool(2), 0)
    assert rms(wet) == pytest.approx(rms(burst), rel=1e-3)  # the level stays the gain's job
    tail = slice(4000 + 800, 4000 + 2400)  # 50-150 ms after the burst ends
    assert rms(burst[tail]) == 0 and rms(wet[tail]) > 0.01 * rms(wet)


def test_the_room_bank_is_seeded():
    from training.fit.augment import room_bank

    room_bank.cache_clear()
    first = room_bank(3, 7)
    room_bank.cache_clear()
    again, other = room_bank(3, 7), room_bank(3, 8)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(
        len(a) == len(b) and np.allclose(a, b) for a, b in zip(first, other, strict=True)
    )


def test_telephone_removes_everything_above_4_khz():
    noise = (0.1 * np.random.default_rng(0).standard_normal(3 * SAMPLE_RATE)).astype(np.float32)
    out = _only(telephone_p=1.0)(noise, np.random.default_rng(0), Pool(2), 0)
    assert len(out) == len(noise)
    assert _energy_above(out, 4000) < 1e-3 * _energy_above(noise, 4000)
    band = _energy_above(noise, 1000) - _energy_above(noise, 3000)
    assert _energy_above(out, 1000) - _energy_above(out, 3000) > 0.5 * band  # speech band stays


@pytest.mark.parametrize("codec", ["mp3", "opus"])
def test_codec_round_trip_keeps_the_length(codec):
    aug = _only(codec_p=1.0, codecs=(codec,))
    for n in (3 * SAMPLE_RATE, 12345):
        clip = _speechlike(n)
        out = aug(clip, np.random.default_rng(0), Pool(2), 0)
        assert len(out) == n and out.dtype == np.float32
        assert not np.array_equal(out, clip)
        assert np.corrcoef(out, clip)[0, 1] > 0.7  # aligned, not delayed


def test_draws_are_seeded_per_clip_and_leave_the_global_generators_alone():
    aug, pool, clip = Augmentation(EVERYTHING, speed_perturb=0.1), Pool(6), _speechlike()
    random.seed(5)
    np.random.seed(5)
    expected = random.random(), np.random.random()
    random.seed(5)
    np.random.seed(5)
    first = aug(clip, np.random.default_rng(11), pool, 2)
    assert (random.random(), np.random.random()) == expected
    assert np.array_equal(first, aug(clip, np.random.default_rng(11), pool, 2))
    assert not np.array_equal(first, aug(clip, np.random.default_rng(12), pool, 2))
    assert len(first) == len(clip) and np.isfinite(first).all()


def test_config_reaches_the_options():
    cfg = load_config(
        "demo",
        overrides=["--aug_noise_p=0.5", "--aug_snr_db=0,10", "--aug_codecs=opus", "--seed=4"],
    )
    options = AugmentOptions.from_config(cfg)
    assert options.noise_p == 0.5 and options.snr_db == (0.0, 10.0)
    assert options.codecs == ("opus",) and options.seed == 4
    with pytest.raises(ConfigError, match="aug_codecs"):
        AugmentOptions.from_config(load_config("demo", overrides=["--aug_codecs=aac"]))
    with pytest.raises(ValueError, match="aug_snr_db"):
        AugmentOptions(snr_db=(10.0, 0.0))


def test_a_student_trains_with_everything_on(tmp_path, caplog):
    from training.config import load_config as config
    from training.distill import make_accelerator

    rng = np.random.default_rng(0)
    n = 8
    paths = []
    for i in range(n):
        paths.append(str(tmp_path / f"{i}.wav"))
        sf.write(paths[-1], 0.1 * rng.standard_normal(int(rng.integers(6000, 12000))), 16000)
    targets = {
        "ling": {
            "logits": rng.standard_normal((n, 4)).astype(np.float32),
            "embedding": rng.standard_normal((n, 8)).astype(np.float32),
        }
    }
    train = AudioSet(paths, np.arange(n) % 4, targets)
    valid = AudioSet(paths[:4], np.arange(4) % 4)
    opts = StudentOptions(
        model="tiny", labels=EMOTIONS, epochs=1, batch_size=4, max_seconds=0.5, max_steps=1,
        weights=LossWeights().for_variant("ce+ling"), progress=False, speed_perturb=0.1,
        augment=EVERYTHING,
    )  # fmt: skip
    accelerator = make_accelerator(config("demo", overrides=["--cpu", "--threads=1"]))

    def score(y, logits):
        return compute_metrics(list(y), list(np.asarray(logits).argmax(-1)), list(range(4)))

    with caplog.at_level(logging.INFO, logger="emodistill.training"):
        result = train_student(train, valid, opts, tmp_path / "student", accelerator, score)
    assert np.isfinite(result["history"][0]["loss"])
    line = next(r.getMessage() for r in caplog.records if "augmentation" in r.getMessage())
    for name in ("speed", "reverb", "coloured noise", "babble", "telephone", "codec", "gain"):
        assert name in line


def test_the_config_reaches_the_students_training():
    cfg = load_config("demo", overrides=["--aug_reverb_p=0.3", "--aug_codecs=mp3", "--seed=4"])
    options = student_options(cfg, LossWeights(), seed=0, desc="s").augment
    assert options.reverb_p == 0.3 and options.codecs == ("mp3",) and options.seed == 4
    assert student_options(load_config("demo"), LossWeights(), 0, "s").augment == AugmentOptions()
