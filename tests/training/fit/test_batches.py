"""The student's batches: length buckets, sharding over ranks, crops."""

import numpy as np
import pytest

from training.fit.batches import bucketed_batches, crop


def test_buckets_cover_everything_once_and_limit_padding():
    lengths = np.random.default_rng(0).integers(1000, 50000, 203)
    batches = bucketed_batches(lengths, batch_size=8, bucket_size=4, seed=0, epoch=1)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(203))
    spread = np.mean([np.ptp(lengths[b]) for b in batches])
    random_spread = np.mean([np.ptp(lengths[b]) for b in np.array_split(np.arange(203), 26)])
    assert spread < random_spread / 2
    again = bucketed_batches(lengths, batch_size=8, bucket_size=4, seed=0, epoch=1)
    assert all(np.array_equal(a, b) for a, b in zip(batches, again, strict=True))  # resumable
    other = bucketed_batches(lengths, batch_size=8, bucket_size=4, seed=0, epoch=2)
    assert not all(np.array_equal(a, b) for a, b in zip(batches, other, strict=False))


@pytest.mark.parametrize("world", [2, 3])
def test_every_rank_gets_the_same_number_of_batches(world):
    lengths = np.arange(1, 101)
    per_rank = [bucketed_batches(lengths, 8, 2, 0, 1, rank, world) for rank in range(world)]
    assert len({len(b) for b in per_rank}) == 1
    covered = np.concatenate([np.concatenate(b) for b in per_rank])
    assert set(covered.tolist()) == set(range(100))


def test_crop():
    rng = np.random.default_rng(0)
    x = np.arange(32000, dtype=np.float32)
    piece = crop(x, 16000, rng)
    assert len(piece) == 16000 and piece[0] + 15999 == piece[-1]  # contiguous
    assert len(crop(x[:100], 16000, rng)) == 100  # shorter clips stay whole


def test_epoch_pool_draws_transfer_utterances_per_labelled_one():
    from training.fit.batches import epoch_pool

    labelled = np.array([True] * 10 + [False] * 30)
    first, second = epoch_pool(labelled, 0.5, 0, 1), epoch_pool(labelled, 0.5, 0, 2)
    for pool in (first, second):
        assert set(range(10)) <= set(pool.tolist()) and len(pool) == 15
        assert len(set(pool.tolist())) == 15
    assert set(first[10:].tolist()) != set(second[10:].tolist())  # drawn afresh each epoch
    assert np.array_equal(first, epoch_pool(labelled, 0.5, 0, 1))  # and reproducibly
    assert len(epoch_pool(labelled, 10.0, 0, 1)) == 40  # capped at the whole transfer set
    assert np.array_equal(epoch_pool(labelled, 0.0, 0, 1), np.arange(10))
    assert np.array_equal(epoch_pool(np.ones(5, bool), 1.0, 0, 1), np.arange(5))
