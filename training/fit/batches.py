"""The student's training data: the dataset, crops, padding and the length-bucketed batches of
each epoch, augmented by ``training.fit.augment``.

Sharding of the length-bucketed batches is ours (not ``accelerate``'s), so every process sees
the same number of batches and resuming reproduces the data order (it depends only on seed and
epoch).

The teachers' targets describe the whole utterance while the student sees a random crop of at
most ``max_seconds``: standard practice (the crop still carries the utterance's emotion) and the
reason evaluation always uses whole clips.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from emocore.audio import SAMPLE_RATE, load_audio
from training.fit.augment import Augmentation, AugmentOptions


def item_seed(seed: int, epoch: int, index: int) -> int:
    return (seed * 1_000_003 + epoch * 10_007 + index) % (2**32)


class AudioSet:
    """Utterances' audio (decoded once when ``cache`` is set), labels, rated dimensions
    ([N, 3] in scale units, NaN rows for unrated utterances) and teacher targets."""

    def __init__(
        self,
        paths: Sequence[str],
        y: np.ndarray,
        targets: dict[str, dict[str, np.ndarray]] | None = None,
        cache: bool = True,
        durations: Sequence[float] | None = None,
        dimensions: np.ndarray | None = None,
    ):
        self.paths = list(paths)
        self.y = np.asarray(y, dtype=np.int64)
        self.dimensions = (
            np.full((len(self.paths), 3), np.nan, dtype=np.float32)
            if dimensions is None
            else np.asarray(dimensions, dtype=np.float32).reshape(len(self.paths), 3)
        )
        self.targets = targets or {}
        self.audio = [load_audio(p) for p in self.paths] if cache else None
        if self.audio is not None:
            self.lengths = np.array([len(a) for a in self.audio])
        elif durations is not None and all(d > 0 for d in durations):
            self.lengths = (np.asarray(durations) * SAMPLE_RATE).astype(int)
        else:
            self.lengths = np.array([len(load_audio(p)) for p in self.paths])

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def rated(self) -> np.ndarray:
        """Which utterances have rated dimensions."""
        return ~np.isnan(self.dimensions).any(-1)

    def samples(self, i: int) -> np.ndarray:
        return self.audio[i] if self.audio is not None else load_audio(self.paths[i])

    @property
    def labelled(self) -> np.ndarray:
        """Which utterances have a class (transfer utterances have -1: the teachers' only)."""
        return self.y >= 0

    def joined(self, other: AudioSet) -> AudioSet:
        """This set followed by ``other`` (nothing decoded again); targets are the caller's."""
        out = AudioSet.__new__(AudioSet)
        out.paths = self.paths + other.paths
        out.y = np.concatenate([self.y, other.y])
        out.dimensions = np.concatenate([self.dimensions, other.dimensions])
        out.targets = {}
        both = self.audio is not None and other.audio is not None
        out.audio = self.audio + other.audio if both else None
        out.lengths = np.concatenate([self.lengths, other.lengths])
        return out


def epoch_pool(labelled: np.ndarray, mix: float, seed: int, epoch: int) -> np.ndarray:
    """The indices one epoch trains on: every labelled utterance, and ``mix`` unlabelled
    (transfer) utterances per labelled one, drawn afresh each epoch (at most all of them)."""
    marked, rest = np.flatnonzero(labelled), np.flatnonzero(~labelled)
    if not len(rest):
        return marked
    take = min(len(rest), int(round(mix * len(marked))))
    drawn = np.random.default_rng([seed, epoch, 7]).choice(rest, take, replace=False)
    return np.concatenate([marked, np.sort(drawn)])


def crop(samples: np.ndarray, max_samples: int, rng: np.random.Generator) -> np.ndarray:
    if max_samples <= 0 or len(samples) <= max_samples:
        return samples
    start = int(rng.integers(0, len(samples) - max_samples + 1))
    return samples[start : start + max_samples]


def pad(clips: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(c) for c in clips], dtype=torch.long)
    audio = torch.zeros(len(clips), int(lengths.max()))
    for i, c in enumerate(clips):
        audio[i, : len(c)] = torch.from_numpy(np.asarray(c, dtype=np.float32))
    return audio, lengths


def bucketed_batches(
    lengths: np.ndarray,
    batch_size: int,
    bucket_size: int,
    seed: int,
    epoch: int,
    rank: int = 0,
    world: int = 1,
) -> list[np.ndarray]:
    """This process's batches for one epoch: shuffled, then sorted by length within buckets of
    ``bucket_size`` batches (limits padding), batch order shuffled again. Every process gets the
    same number of batches (the last few wrap around to the start)."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    span = batch_size * max(1, bucket_size)
    batches = []
    for start in range(0, len(order), span):
        bucket = order[start : start + span]
        bucket = bucket[np.argsort(lengths[bucket], kind="stable")]
        batches += [bucket[i : i + batch_size] for i in range(0, len(bucket), batch_size)]
    batches = [batches[i] for i in rng.permutation(len(batches))]
    per_rank = math.ceil(len(batches) / world)
    batches = (batches * 2)[: per_rank * world] if per_rank * world > len(batches) else batches
    return batches[rank::world]


class EpochBatches(torch.utils.data.Dataset):
    """One epoch's batches as a map-style dataset, so DataLoader workers can decode, augment
    and crop. Each clip draws from its own generator (``item_seed``): speed, crop, then the
    other transforms of ``augment`` (none by default)."""

    def __init__(
        self,
        data: AudioSet,
        batches: list[np.ndarray],
        max_samples: int,
        seed: int,
        epoch: int,
        augment: Augmentation | None = None,
    ):
        self.data, self.batches = data, batches
        self.max_samples, self.seed, self.epoch = max_samples, seed, epoch
        self.augment = augment or Augmentation(AugmentOptions())

    def clip(self, i: int) -> np.ndarray:
        rng = np.random.default_rng(item_seed(self.seed, self.epoch, i))
        piece = crop(self.augment.speed(self.data.samples(i), rng), self.max_samples, rng)
        return self.augment(piece, rng, self.data, i)

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, b: int):
        idx = self.batches[b]
        audio, lengths = pad([self.clip(int(i)) for i in idx])
        targets = {
            t: {k: torch.from_numpy(v[idx]) for k, v in parts.items()}
            for t, parts in self.data.targets.items()
        }
        rated = torch.from_numpy(self.data.dimensions[idx])
        return audio, lengths, torch.from_numpy(self.data.y[idx]), rated, targets
