"""Frame-level prosodic features (eGeMAPSv02 low-level descriptors), their cache and normalisers.

Features come from the same 16 kHz samples the student hears (``emocore.audio.load_audio``),
so the prosodic teacher and the student never disagree on decoding or resampling.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from emocore.audio import SAMPLE_RATE, load_audio
from training.data.utterance import Utterance

N_LLD = 25  # eGeMAPSv02 low-level descriptors per frame
FRAMES_PER_SECOND = 100  # opensmile's 10 ms hop
# Part of every cache key: bump it when the extraction changes so old caches are not reused.
FEATURE_VERSION = "egemapsv02-lld-v1"
# Keeps constant features (e.g. F0 of an unvoiced-only speaker) from dividing by ~0.
MIN_STD = 1e-5
HASH_CHUNK = 1 << 20


@lru_cache(maxsize=1)
def _smile():
    import opensmile

    return opensmile.Smile(
        feature_set=opensmile.FeatureSet.eGeMAPSv02,
        feature_level=opensmile.FeatureLevel.LowLevelDescriptors,
    )


def feature_names() -> list[str]:
    return list(_smile().feature_names)


def extract_lld(samples: np.ndarray) -> np.ndarray:
    """16 kHz mono float32 -> float32 [frames, 25] at 100 frames/s (at least one frame)."""
    samples = np.asarray(samples, dtype=np.float32).reshape(-1)
    with warnings.catch_warnings():
        # Clips shorter than opensmile's analysis window yield one NaN row; handled below.
        warnings.filterwarnings("ignore", message="Segment too short")
        frame = _smile().process_signal(samples, SAMPLE_RATE)
    feats = frame.to_numpy(dtype=np.float32)
    if feats.shape[0] == 0:
        feats = np.zeros((1, N_LLD), dtype=np.float32)
    return np.nan_to_num(feats, nan=0.0, posinf=0.0, neginf=0.0)


def file_digest(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _extract_file(path: str | Path) -> np.ndarray:
    return extract_lld(load_audio(path))


# Spawned workers import the parent's modules (torch, transformers: 10-30 s before the first
# file), so a pool pays off only for more work than that: a 48-clip corpus took 34 s to its
# first clip in workers and ~2 s in process. The estimate: opensmile's cost per file (~60 ms
# measured here, whatever its length) plus ~1 s per 56 s of audio, on one core.
POOL_MIN_WORK_S = 20.0
SECONDS_PER_FILE = 0.06
AUDIO_PER_SECOND = 56.0
UNKNOWN_DURATION_S = 3.0  # counted for an utterance whose duration the dataset does not give


class ProsodyCache:
    """LLDs per utterance in ``cache_dir``, keyed by the audio file's content hash.

    Keying by content (not path or id) means a re-recorded or edited file is recomputed and
    identical files share one entry.
    """

    def __init__(self, cache_dir: str | Path):
        self.cache_dir = Path(cache_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.hits = 0
        self.misses = 0

    def path_for(self, audio_path: str | Path) -> Path:
        key = hashlib.sha256(f"{FEATURE_VERSION}:{file_digest(audio_path)}".encode()).hexdigest()
        return self.cache_dir / key[:2] / f"{key}.npy"

    def get(self, utt: Utterance) -> np.ndarray:
        target = self.path_for(utt.audio_path)
        if target.is_file():
            self.hits += 1
            return np.load(target)
        self.misses += 1
        feats = _extract_file(utt.audio_path)
        self._store(target, feats)
        return feats

    @staticmethod
    def _store(target: Path, feats: np.ndarray) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename, so a killed run never leaves a truncated entry behind.
        tmp = target.with_suffix(".tmp.npy")
        np.save(tmp, feats)
        tmp.replace(target)

    def compute_all(
        self, utts: Sequence[Utterance], progress: bool = True, workers: int = 0
    ) -> dict[str, np.ndarray]:
        """{utterance id: LLDs} for all ``utts``, computing only what is not cached, in
        ``workers`` processes (0 = one per CPU core when the work is estimated at POOL_MIN_WORK_S
        or more, else in this process; opensmile runs on one core)."""
        from concurrent.futures import ProcessPoolExecutor
        from multiprocessing import get_context

        # One content hash per file: path_for reads the whole file.
        targets = {u.id: (self.path_for(u.audio_path), u.audio_path) for u in utts}
        missing = dict(v for v in targets.values() if not v[0].is_file())
        if not workers:
            todo = {targets[u.id][0]: u.duration or UNKNOWN_DURATION_S for u in utts}
            audio_s = sum(s for target, s in todo.items() if target in missing)
            work_s = len(missing) * SECONDS_PER_FILE + audio_s / AUDIO_PER_SECOND
            workers = (os.cpu_count() or 1) if work_s >= POOL_MIN_WORK_S else 1
        if workers > 1 and len(missing) > 1:
            # spawn: the parent has torch loaded, and forking a threaded process is unsafe.
            with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
                computed = pool.map(_extract_file, missing.values(), chunksize=16)
                self._store_all(missing, computed, progress)
        else:
            self._store_all(missing, map(_extract_file, missing.values()), progress)
        features = {uid: np.load(target) for uid, (target, _) in targets.items()}
        self.hits += len(utts) - len(missing)
        return features

    def _store_all(self, targets: Mapping[Path, object], computed, progress: bool) -> None:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(targets), desc="prosody", unit="utt", disable=not progress)
        for target, feats in zip(targets, computed, strict=True):
            self._store(target, feats)
            self.misses += 1
            bar.update()
        bar.close()


class _Normalizer:
    """Shared mean/std bookkeeping; subclasses decide which statistics apply to a speaker."""

    kind = ""

    def __init__(self, stats: dict[str, tuple[np.ndarray, np.ndarray]] | None = None):
        self.stats = stats or {}

    @staticmethod
    def _moments(feats: Iterable[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        stacked = np.concatenate([np.asarray(f, dtype=np.float64) for f in feats], axis=0)
        std = np.maximum(stacked.std(axis=0), MIN_STD)
        return stacked.mean(axis=0).astype(np.float32), std.astype(np.float32)

    def _apply(self, feats: np.ndarray, key: str) -> np.ndarray:
        mean, std = self.stats[key]
        return ((np.asarray(feats, dtype=np.float32) - mean) / std).astype(np.float32)

    def save(self, path: str | Path) -> None:
        payload = {
            "kind": self.kind,
            "feature_version": FEATURE_VERSION,
            "stats": {
                k: {"mean": m.tolist(), "std": s.tolist()} for k, (m, s) in self.stats.items()
            },
        }
        Path(path).write_text(json.dumps(payload), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path):
        payload = json.loads(Path(path).read_text(encoding="utf-8"))
        if payload.get("kind") != cls.kind:
            raise ValueError(f"{path} holds a {payload.get('kind')!r} normaliser, not {cls.kind!r}")
        stats = {
            k: (np.asarray(v["mean"], dtype=np.float32), np.asarray(v["std"], dtype=np.float32))
            for k, v in payload["stats"].items()
        }
        return cls(stats)


class GlobalNormalizer(_Normalizer):
    """One mean/std per feature, fitted on the training split only."""

    kind = "global"
    KEY = "*"

    def fit(
        self, feats_by_utt: Mapping[str, np.ndarray], speakers: Mapping[str, str] | None = None
    ):
        self.stats = {self.KEY: self._moments(feats_by_utt.values())}
        return self

    def transform(self, feats: np.ndarray, speaker: str | None = None) -> np.ndarray:
        return self._apply(feats, self.KEY)


class SpeakerNormalizer(_Normalizer):
    """Each speaker normalised by its own mean/std per feature (standard in SER).

    Removes a speaker's pitch level and loudness so the prosodic teacher learns emotion,
    not voice; statistics use all of a speaker's frames and no labels, so a test speaker's
    statistics can be fitted on its own unlabelled audio. An unseen speaker in
    ``transform`` falls back to the pooled statistics of the fitted speakers.
    """

    kind = "speaker"
    POOLED = "*"

    def fit(self, feats_by_utt: Mapping[str, np.ndarray], speakers: Mapping[str, str]):
        """``speakers`` maps utterance id -> speaker."""
        by_speaker: dict[str, list[np.ndarray]] = {}
        for utt_id, feats in feats_by_utt.items():
            by_speaker.setdefault(speakers[utt_id], []).append(feats)
        self.stats = {spk: self._moments(f) for spk, f in by_speaker.items()}
        self.stats[self.POOLED] = self._moments(feats_by_utt.values())
        return self

    def transform(self, feats: np.ndarray, speaker: str | None = None) -> np.ndarray:
        return self._apply(feats, speaker if speaker in self.stats else self.POOLED)
