import shutil

import numpy as np
import pytest

from emocore.audio import SAMPLE_RATE, load_audio
from tests.fixtures import make_signal, write_clip
from training.data.utterance import Utterance
from training.features.prosody import (
    FRAMES_PER_SECOND,
    N_LLD,
    GlobalNormalizer,
    ProsodyCache,
    SpeakerNormalizer,
    extract_lld,
)


@pytest.mark.parametrize("seconds", [1.0, 3.0])
def test_shape_and_frame_rate(seconds):
    feats = extract_lld(make_signal("speech", SAMPLE_RATE, 1, seconds)[:, 0])
    assert feats.dtype == np.float32 and feats.shape[1] == N_LLD
    # opensmile's longest window trims a few frames at the end
    assert abs(feats.shape[0] - seconds * FRAMES_PER_SECOND) <= 6
    assert np.isfinite(feats).all() and feats.std(axis=0).max() > 0


def test_shortest_input_gives_finite_frames():
    feats = extract_lld(np.zeros(400, dtype=np.float32))
    assert feats.shape[0] >= 1 and np.isfinite(feats).all()


def test_cache_hit_miss_and_changed_file(tmp_path, speech_wav):
    cache = ProsodyCache(tmp_path / "cache")
    utt = Utterance(id="u", audio_path=str(speech_wav), label="sad")
    first = cache.get(utt)
    assert (cache.hits, cache.misses) == (0, 1)
    np.testing.assert_array_equal(first, extract_lld(load_audio(speech_wav)))
    np.testing.assert_array_equal(cache.get(utt), first)
    assert (cache.hits, cache.misses) == (1, 1)
    # a copy under another name is the same content: a hit
    copy = shutil.copy(speech_wav, tmp_path / "copy.wav")
    cache.get(Utterance(id="c", audio_path=str(copy), label="sad"))
    assert (cache.hits, cache.misses) == (2, 1)
    # rewrite the same path with other audio: recomputed, and different
    write_clip(speech_wav, kind="sine", seconds=1.5, freq=220.0)
    changed = cache.get(utt)
    assert (cache.hits, cache.misses) == (2, 2)
    assert changed.shape != first.shape or not np.array_equal(changed, first)
    all_feats = ProsodyCache(tmp_path / "cache").compute_all([utt], progress=False)
    np.testing.assert_array_equal(all_feats["u"], changed)


def test_compute_all_in_worker_processes_equals_one_by_one(tmp_path):
    clips = [
        write_clip(tmp_path / f"{i}.wav", kind=kind, seconds=1.0 + i / 4)
        for i, kind in enumerate(("speech", "sine", "speech"))
    ]
    utts = [Utterance(id=str(i), audio_path=str(p), label="sad") for i, p in enumerate(clips)]
    cache = ProsodyCache(tmp_path / "cache")
    feats = cache.compute_all(utts, progress=False, workers=2)
    assert (cache.hits, cache.misses) == (0, 3)
    for utt in utts:
        np.testing.assert_array_equal(feats[utt.id], extract_lld(load_audio(utt.audio_path)))
    again = cache.compute_all(utts, progress=False, workers=2)
    assert (cache.hits, cache.misses) == (3, 3)
    assert all(np.array_equal(again[k], v) for k, v in feats.items())


def _feats(rng, mean, std, n_utts=3, frames=50):
    return [rng.normal(mean, std, (frames, N_LLD)).astype(np.float32) for _ in range(n_utts)]


def test_speaker_normalizer_uses_each_speakers_stats(tmp_path):
    rng = np.random.default_rng(0)
    feats, speakers = {}, {}
    for spk, (mean, std) in {"a": (10.0, 2.0), "b": (-5.0, 0.5)}.items():
        for i, f in enumerate(_feats(rng, mean, std)):
            feats[f"{spk}{i}"] = f
            speakers[f"{spk}{i}"] = spk
    norm = SpeakerNormalizer().fit(feats, speakers)
    for spk in "ab":
        own = np.concatenate(
            [norm.transform(f, spk) for k, f in feats.items() if speakers[k] == spk]
        )
        np.testing.assert_allclose(own.mean(axis=0), 0, atol=1e-4)
        np.testing.assert_allclose(own.std(axis=0), 1, atol=1e-4)
    np.testing.assert_allclose(
        norm.stats["a"][0],
        np.concatenate(_a := [feats[f"a{i}"] for i in range(3)]).mean(0),
        rtol=1e-5,
    )
    norm.save(tmp_path / "spk.json")
    loaded = SpeakerNormalizer.load(tmp_path / "spk.json")
    np.testing.assert_allclose(
        loaded.transform(feats["b0"], "b"), norm.transform(feats["b0"], "b"), rtol=1e-6
    )
    # an unseen speaker falls back to the pooled statistics
    pooled = np.concatenate(list(feats.values()))
    np.testing.assert_allclose(
        norm.transform(feats["a0"], "new"),
        (feats["a0"] - pooled.mean(0)) / pooled.std(0),
        rtol=1e-3,
        atol=1e-4,
    )
    with pytest.raises(ValueError, match="speaker"):
        GlobalNormalizer.load(tmp_path / "spk.json")


def test_global_normalizer_train_stats_only(tmp_path):
    rng = np.random.default_rng(1)
    train = {f"t{i}": f for i, f in enumerate(_feats(rng, 3.0, 2.0))}
    test = _feats(rng, 100.0, 1.0, n_utts=1)[0]
    norm = GlobalNormalizer().fit(train)
    stacked = np.concatenate(list(train.values()))
    np.testing.assert_allclose(norm.stats["*"][0], stacked.mean(0), rtol=1e-5)
    np.testing.assert_allclose(
        norm.transform(test), (test - stacked.mean(0)) / stacked.std(0), rtol=1e-4
    )
    assert norm.transform(test).mean() > 10  # test data is not re-centred: stats are from train
    norm.save(tmp_path / "g.json")
    np.testing.assert_allclose(
        GlobalNormalizer.load(tmp_path / "g.json").transform(test), norm.transform(test)
    )


def test_constant_feature_does_not_divide_by_zero():
    feats = {"u": np.ones((10, N_LLD), dtype=np.float32)}
    out = GlobalNormalizer().fit(feats).transform(feats["u"])
    assert np.isfinite(out).all() and np.abs(out).max() == 0


def test_auto_workers_start_processes_only_for_enough_audio(tmp_path, monkeypatch):
    """Spawned workers cost 10-30 s before their first file: a small corpus is extracted in
    this process; a large one (by duration) in a pool."""
    import concurrent.futures

    from training.features import prosody

    started = []

    class Pool(concurrent.futures.ThreadPoolExecutor):  # records, and needs no spawn
        def __init__(self, workers, mp_context=None):
            started.append(workers)
            super().__init__(workers)

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", Pool)
    monkeypatch.setattr(prosody.os, "cpu_count", lambda: 2)
    clips = [write_clip(tmp_path / f"{i}.wav", kind="sine", seconds=0.5 + i / 10) for i in range(2)]
    utts = [Utterance(id=str(i), audio_path=str(p), label="sad", duration=0.5)
            for i, p in enumerate(clips)]  # fmt: skip
    ProsodyCache(tmp_path / "a").compute_all(utts, progress=False)
    assert started == []
    long = [Utterance(id=u.id, audio_path=u.audio_path, label="sad",
                      duration=prosody.POOL_MIN_WORK_S * prosody.AUDIO_PER_SECOND)
            for u in utts]  # fmt: skip
    ProsodyCache(tmp_path / "b").compute_all(long, progress=False)
    assert started == [2]
    # many files count too: opensmile's cost per file, however short the clip
    monkeypatch.setattr(prosody, "SECONDS_PER_FILE", prosody.POOL_MIN_WORK_S / 2)
    ProsodyCache(tmp_path / "c").compute_all(utts, progress=False)
    assert started == [2, 2]
