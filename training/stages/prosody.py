"""Stage 2, prosody: the prosodic teacher's input, normalised low-level descriptors (LLDs) per
utterance, extracted once into a cache shared across runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training.config import Config
from training.data.utterance import Utterance
from training.features.prosody import GlobalNormalizer, ProsodyCache, SpeakerNormalizer
from training.stages.data import PARTS

NORMALIZER_FILE = "normalizer.json"


def cache_dir(cfg: Config) -> Path:
    """``prosody_cache`` when set, else ``RUN/cache/prosody``."""
    return Path(cfg.prosody_cache) if cfg.prosody_cache else Path(cfg.run_dir) / "cache" / "prosody"


def fold_features(
    cfg: Config, parts: dict[str, list[Utterance]], fold_dir: Path
) -> dict[str, np.ndarray]:
    """Normalised LLDs by utterance id. Per-speaker statistics use each speaker's own unlabelled
    audio (test speakers included: no labels are involved); global ones are fitted on train
    only. The normaliser's statistics are saved beside the fold's prosodic teacher (it cannot
    be used on new audio without them)."""
    utts = [u for p in PARTS for u in parts[p]]
    raw = ProsodyCache(cache_dir(cfg)).compute_all(utts)
    if cfg.pros_norm == "speaker":
        norm = SpeakerNormalizer().fit(raw, {u.id: u.speaker for u in utts})
    elif cfg.pros_norm == "global":
        norm = GlobalNormalizer().fit({u.id: raw[u.id] for u in parts["train"]})
    else:
        return {u.id: raw[u.id] for u in utts}
    norm_path = fold_dir / "teachers" / "pros" / NORMALIZER_FILE
    norm_path.parent.mkdir(parents=True, exist_ok=True)
    norm.save(norm_path)
    return {u.id: norm.transform(raw[u.id], u.speaker) for u in utts}
