"""The student's training augmentation: speed, room reverberation, coloured noise, babble,
telephone band, codec round trip and gain of one training clip, seeded per clip.

Only the student's training clips are augmented: the teachers' targets were computed once from
the clean audio and stay as they are, and validation and test clips are scored clean. Every
draw comes from the clip's own generator (``training.fit.batches.item_seed``: seed, epoch and
utterance), so an epoch's audio is the same on every run and resume, whatever the DataLoader
workers. A transform whose probability is 0 draws nothing: with everything off a clip is the
very array it was without this module.

The DSP is the libraries': audiomentations' ``Gain``, ``AddColorNoise`` and ``HighPassFilter``
(which draw from Python's and numpy's global generators: :func:`library_seeded` seeds those from
the clip's generator and restores them afterwards), pyroomacoustics' shoebox rooms, soxr
(``emocore.audio.resample``) for the 8 kHz telephone band, libsndfile (soundfile) for the MP3
and Opus round trips and scipy for the convolution with a room impulse response.
audiomentations' ``ApplyImpulseResponse`` is not used: it reads impulse responses from audio
files and rescales its output to a 0.5 peak, where the rooms here are simulated in memory once
per run and a reverberant clip keeps the level of the dry one (level is the gain's job).
"""

from __future__ import annotations

import contextlib
import functools
import io
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import soundfile as sf
from audiomentations import AddColorNoise, Gain, HighPassFilter
from audiomentations.core.utils import calculate_desired_noise_rms
from scipy.signal import oaconvolve

from emocore.audio import SAMPLE_RATE, resample
from training.config import Config, ConfigError

# Coloured noise: spectral slope in dB per octave, brown (-6) through white (0) to violet (+6).
NOISE_DECAY_DB = (-6.0, 6.0)
# Babble: how many other training utterances talk at once.
BABBLE_TALKERS = (3, 6)
# Rooms: width, depth and height drawn between these (metres), reverberation time (Sabine,
# seconds) between RT60_S, which sets the walls' absorption; source and microphone at least
# WALL_M from every wall. Image sources up to MAX_ORDER reflections: a room's cost grows with
# the cube of the order (RT60_S asks for orders of 30-90, ~0.7 s a room; capped at 25, ~0.03 s),
# and the cap shortens the longest tails: the 64 rooms of seed 0 measure RT60 0.22-0.84 s,
# median 0.47 s (pyroomacoustics.experimental.measure_rt60).
ROOM_MIN_M, ROOM_MAX_M = (3.0, 3.0, 2.4), (10.0, 8.0, 4.0)
RT60_S = (0.2, 0.8)
WALL_M = 0.5
MAX_ORDER = 25
# Telephone: the 8 kHz sampling of a narrow-band line (nothing above 4 kHz) and a low cut.
TELEPHONE_RATE = 8000
TELEPHONE_LOW_CUT_HZ = (200.0, 400.0)
# Codecs: libsndfile's container and subtype, and the range of the compression level drawn
# (0 = best, 1 = smallest; libsndfile's MP3 encoder refuses 1.0 at 16 kHz). On speech-band
# tones at 16 kHz these ranges gave MP3 at 18-26 kbit/s and Opus at 12-60 kbit/s.
CODECS = {
    "mp3": ("MP3", "MPEG_LAYER_III", (0.3, 0.9)),
    "opus": ("OGG", "OPUS", (0.8, 1.0)),
}


class Utterances(Protocol):
    """Where babble comes from: the training set (``training.fit.batches.AudioSet``)."""

    def __len__(self) -> int: ...

    def samples(self, i: int) -> np.ndarray: ...


@dataclass(frozen=True)
class AugmentOptions:
    """Which transforms run, with what probability per clip (0 = off, the default)."""

    gain_db: float = 0.0
    gain_p: float = 1.0
    noise_p: float = 0.0
    babble_p: float = 0.0
    snr_db: tuple[float, float] = (5.0, 30.0)
    reverb_p: float = 0.0
    rooms: int = 64
    telephone_p: float = 0.0
    codec_p: float = 0.0
    codecs: tuple[str, ...] = ("mp3", "opus")
    seed: int = 0  # the room bank's

    def __post_init__(self):
        if len(self.snr_db) != 2 or self.snr_db[0] > self.snr_db[1]:
            raise ValueError(f"aug_snr_db: expected min,max, got {list(self.snr_db)}")
        unknown = sorted(set(self.codecs) - set(CODECS))
        if unknown or (self.codec_p > 0 and not self.codecs):
            raise ValueError(f"aug_codecs: expected names of {', '.join(CODECS)}, got {unknown}")
        if self.reverb_p > 0 and self.rooms < 1:
            raise ValueError("aug_reverb_rooms: at least 1 room with aug_reverb_p > 0")

    @classmethod
    def from_config(cls, cfg: Config) -> AugmentOptions:
        """The ``aug_*`` keys (a bad value is a ``ConfigError``); the rooms' seed is ``seed``."""
        try:
            return cls(
                gain_db=cfg.aug_gain_db, gain_p=cfg.aug_gain_p, noise_p=cfg.aug_noise_p,
                babble_p=cfg.aug_babble_p, snr_db=tuple(cfg.aug_snr_db),
                reverb_p=cfg.aug_reverb_p, rooms=cfg.aug_reverb_rooms,
                telephone_p=cfg.aug_telephone_p, codec_p=cfg.aug_codec_p,
                codecs=tuple(cfg.aug_codecs), seed=cfg.seed,
            )  # fmt: skip
        except ValueError as exc:
            raise ConfigError(str(exc)) from None


def perturb_speed(samples: np.ndarray, spread: float, rng: np.random.Generator) -> np.ndarray:
    """Kaldi-style speed perturbation: resample by a factor in [1 - spread, 1 + spread], so tempo
    and pitch move together, as if another speaker said it (0 = off)."""
    if spread <= 0:
        return samples
    return resample(
        samples, SAMPLE_RATE, int(round(SAMPLE_RATE * rng.uniform(1 - spread, 1 + spread)))
    )


@contextlib.contextmanager
def library_seeded(rng: np.random.Generator) -> Iterator[None]:
    """Python's and numpy's global generators seeded from ``rng`` inside, as they were after."""
    saved = random.getstate(), np.random.get_state()
    seed = int(rng.integers(2**32))
    random.seed(seed)
    np.random.seed(seed)
    try:
        yield
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if len(x) else 0.0


def fit_length(x: np.ndarray, n: int) -> np.ndarray:
    """``x`` cut or zero-padded to ``n`` samples."""
    return x[:n] if len(x) >= n else np.pad(x, (0, n - len(x)))


@functools.lru_cache(maxsize=4)
def room_bank(rooms: int, seed: int) -> tuple[np.ndarray, ...]:
    """``rooms`` impulse responses of simulated shoebox rooms (image source method): random
    size, reverberation time (hence wall absorption) and source and microphone positions.
    Simulated once per (rooms, seed) and process."""
    import pyroomacoustics as pra  # only runs with reverberation need it (imports in ~1 s)

    rng = np.random.default_rng([seed, rooms])
    bank = []
    while len(bank) < rooms:
        size = rng.uniform(ROOM_MIN_M, ROOM_MAX_M)
        try:
            absorption, max_order = pra.inverse_sabine(rng.uniform(*RT60_S), size)
        except ValueError:  # that reverberation time is too short for so large a room
            continue
        room = pra.ShoeBox(
            size,
            fs=SAMPLE_RATE,
            materials=pra.Material(absorption),
            max_order=min(max_order, MAX_ORDER),
        )
        room.add_source(rng.uniform(WALL_M, size - WALL_M))
        room.add_microphone(rng.uniform(WALL_M, size - WALL_M))
        room.compute_rir()
        bank.append(np.asarray(room.rir[0][0], dtype=np.float32))
    return tuple(bank)


class Augmentation:
    """The transforms ``options`` switch on (plus ``speed_perturb``), applied to one clip.

    Order follows a recording's path: the talker's speed, the crop (the caller's), the room,
    noise and babble at the microphone, the telephone line, the codec, then the recording
    level (gain).
    """

    def __init__(self, options: AugmentOptions, speed_perturb: float = 0.0):
        self.options, self.speed_perturb = options, speed_perturb
        o = options
        self.gain = Gain(min_gain_db=-o.gain_db, max_gain_db=o.gain_db, p=1.0)
        self.noise = AddColorNoise(
            min_snr_db=o.snr_db[0], max_snr_db=o.snr_db[1], min_f_decay=NOISE_DECAY_DB[0],
            max_f_decay=NOISE_DECAY_DB[1], p=1.0,
        )  # fmt: skip
        self.low_cut = HighPassFilter(*TELEPHONE_LOW_CUT_HZ, p=1.0)
        self.rirs = room_bank(o.rooms, o.seed) if o.reverb_p > 0 else ()

    @property
    def on(self) -> bool:
        o = self.options
        chances = (o.noise_p, o.babble_p, o.reverb_p, o.telephone_p, o.codec_p)
        return self.speed_perturb > 0 or (o.gain_db > 0 and o.gain_p > 0) or max(chances) > 0

    def describe(self) -> str:
        """One line naming what is on, for the training log."""
        o = self.options
        snr = f"SNR {o.snr_db[0]:g}-{o.snr_db[1]:g} dB"
        parts = [
            (self.speed_perturb > 0, f"speed x[{1 - self.speed_perturb:g}, "
             f"{1 + self.speed_perturb:g}]"),
            (o.reverb_p > 0, f"reverb p={o.reverb_p:g} ({len(self.rirs)} rooms)"),
            (o.noise_p > 0, f"coloured noise p={o.noise_p:g} {snr}"),
            (o.babble_p > 0, f"babble p={o.babble_p:g} {snr}"),
            (o.telephone_p > 0, f"telephone p={o.telephone_p:g}"),
            (o.codec_p > 0, f"codec p={o.codec_p:g} ({', '.join(o.codecs)})"),
            (o.gain_db > 0 and o.gain_p > 0, f"gain p={o.gain_p:g} +-{o.gain_db:g} dB"),
        ]  # fmt: skip
        return ", ".join(text for on, text in parts if on) or "off"

    def speed(self, samples: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return perturb_speed(samples, self.speed_perturb, rng)

    def __call__(
        self, clip: np.ndarray, rng: np.random.Generator, pool: Utterances, index: int
    ) -> np.ndarray:
        """``clip`` (utterance ``index`` of ``pool``, cropped) through the transforms that
        ``rng`` draws; the very same array when none is drawn."""
        o = self.options
        if _drawn(rng, o.reverb_p):
            clip = self.reverb(clip, rng)
        if _drawn(rng, o.noise_p):
            with library_seeded(rng):
                clip = self.noise(clip.astype(np.float32), SAMPLE_RATE)
        if _drawn(rng, o.babble_p):
            clip = self.babble(clip, rng, pool, index)
        if _drawn(rng, o.telephone_p):
            clip = self.telephone(clip, rng)
        if _drawn(rng, o.codec_p):
            clip = self.codec(clip, rng)
        if o.gain_db > 0 and _drawn(rng, o.gain_p):
            with library_seeded(rng):
                clip = self.gain(clip.astype(np.float32), SAMPLE_RATE)
        return clip

    def reverb(self, clip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Convolved with a room of the bank, cut to the clip's length, at the dry clip's RMS."""
        wet = oaconvolve(clip, self.rirs[int(rng.integers(len(self.rirs)))])[: len(clip)]
        level = rms(wet)
        return (wet * (rms(clip) / level) if level > 0 else wet).astype(np.float32)

    def babble(
        self, clip: np.ndarray, rng: np.random.Generator, pool: Utterances, index: int
    ) -> np.ndarray:
        """Other training utterances (random stretches, equal levels) talking over the clip at
        an SNR drawn from ``snr_db``."""
        if len(pool) < 2 or rms(clip) == 0:
            return clip
        count = min(len(pool) - 1, int(rng.integers(*BABBLE_TALKERS, endpoint=True)))
        talkers = rng.choice(len(pool) - 1, size=count, replace=False)
        mix = np.zeros(len(clip))
        for i in talkers + (talkers >= index):  # any utterance but this one
            talker = pool.samples(int(i))
            start = int(rng.integers(0, max(1, len(talker) - len(clip) + 1)))
            talker = np.resize(talker[start : start + len(clip)], len(clip))  # short ones repeat
            level = rms(talker)
            mix += talker / level if level > 0 else talker
        snr = rng.uniform(*self.options.snr_db)
        level = rms(mix)
        if level == 0:
            return clip
        return (clip + mix * (calculate_desired_noise_rms(rms(clip), snr) / level)).astype(
            np.float32
        )

    def telephone(self, clip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A narrow-band line: low cut, then through 8 kHz sampling and back."""
        with library_seeded(rng):
            low_cut = self.low_cut(clip.astype(np.float32), SAMPLE_RATE)
        narrow = resample(low_cut, SAMPLE_RATE, TELEPHONE_RATE)
        return fit_length(resample(narrow, TELEPHONE_RATE, SAMPLE_RATE), len(clip))

    def codec(
        self, clip: np.ndarray, rng: np.random.Generator, codecs: Sequence[str] = ()
    ) -> np.ndarray:
        """Encoded and decoded in memory by one of ``codecs`` (default: the options') at a
        random compression level; same length out as in."""
        codecs = codecs or self.options.codecs
        container, subtype, levels = CODECS[codecs[int(rng.integers(len(codecs)))]]
        encoded = io.BytesIO()
        sf.write(
            encoded, clip, SAMPLE_RATE, format=container, subtype=subtype,
            compression_level=float(rng.uniform(*levels)),
        )  # fmt: skip
        encoded.seek(0)
        decoded, _ = sf.read(encoded, dtype="float32")
        return fit_length(decoded, len(clip))


def _drawn(rng: np.random.Generator, p: float) -> bool:
    """Whether a transform of probability ``p`` applies (no draw at all when it is off)."""
    return p > 0 and (p >= 1 or rng.random() < p)
