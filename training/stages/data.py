"""Stage 1, data: the corpus's utterances, the protocol's folds, each fold's parts on disk.

A synthetic corpus is generated on first use. The utterances get their transcripts
(``training.stages.transcribe``) before they are split. Each fold's train / valid / test parts are written
to ``RUN/folds/NAME/{part}.jsonl`` once and read back from there, so a resumed run keeps its
split.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from training.config import Config, ConfigError
from training.data import load_dataset
from training.data.corpora import SYNTHETIC, parse_spec
from training.data.splits import Fold, make_folds
from training.data.synthetic import (
    MANIFEST_NAME,
    SUMMARY_NAME,
    SyntheticConfig,
    add_dimensions,
    generate,
    has_dimensions,
)
from training.data.utterance import Utterance, dimension_array, read_jsonl, write_jsonl
from training.fit.batches import AudioSet
from training.runs import MainFirst

log = logging.getLogger("emodistill.training")
PARTS = ("train", "valid", "test")


def synthetic_root(cfg: Config) -> Path | None:
    """Where the run's synthetic corpus lives: the dataset itself, or the ``synthetic=DIR``
    member of a combined one; None when the run uses none."""
    if cfg.dataset == "synthetic":
        return Path(cfg.data_path)
    if cfg.dataset == "corpora":
        roots = [root for name, root in parse_spec(cfg.data_path) if name == SYNTHETIC]
        return roots[0] if roots and roots[0] is not None else None
    return None


def ensure_synthetic_corpus(cfg: Config, root: Path) -> None:
    voices = {"voices": tuple(cfg.synth_voices)} if cfg.synth_voices else {}
    synth = SyntheticConfig(
        n=cfg.synth_n,
        seed=cfg.synth_seed,
        p_words=cfg.synth_p_words,
        p_prosody=cfg.synth_p_prosody,
        **voices,
    )
    if (root / MANIFEST_NAME).is_file():
        summary = json.loads((root / SUMMARY_NAME).read_text(encoding="utf-8"))
        wanted = {"n": cfg.synth_n, "seed": cfg.synth_seed, "voices": list(synth.voices)}
        found = {"n": summary["n"], "seed": summary["seed"], "voices": summary["config"]["voices"]}
        if wanted != found:
            raise ConfigError(
                f"{root} holds a synthetic corpus with {found}, the config asks for {wanted}; "
                "choose another data_path or delete the folder"
            )
        if not has_dimensions(root):  # a corpus written without them: no new audio
            made = summary["config"]
            add_dimensions(
                dataclasses.replace(synth, p_words=made["p_words"], p_prosody=made["p_prosody"]),
                root,
            )
            log.info("added arousal, valence and dominance to %s", root / MANIFEST_NAME)
        return
    log.info("generating the synthetic corpus (%d utterances) in %s", cfg.synth_n, root)
    generate(synth, root)


def load_utterances(cfg: Config, main_first: MainFirst | None) -> list[Utterance]:
    """The dataset's utterances with labels in ``cfg.labels`` (a synthetic corpus is generated
    first, by rank 0, while the others wait)."""
    root = synthetic_root(cfg)
    if root is not None:
        main_first.run("corpus", lambda: ensure_synthetic_corpus(cfg, root))
    utts = load_dataset(
        cfg.dataset, cfg.data_path, tuple(cfg.labels), corpora_dir=cfg.corpora_dir or None
    )
    kept = [u for u in utts if u.label in cfg.labels]
    if len(kept) < len(utts):
        log.info("dropped %d utterances with labels outside %s", len(utts) - len(kept), cfg.labels)
    if not kept:
        raise ConfigError(f"no utterances with labels {cfg.labels} in {cfg.data_path}")
    return kept


def select_folds(cfg: Config, folds: list[Fold]) -> list[Fold]:
    if cfg.folds == "first":
        return folds[:1]
    if cfg.folds == "all":
        return folds
    names = [n.strip() for n in cfg.folds.split(",")]
    by_name = {f.name: f for f in folds}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ConfigError(f"unknown folds {unknown}; this protocol has {sorted(by_name)}")
    return [by_name[n] for n in names]


def folds(cfg: Config, utts: list[Utterance]) -> list[Fold]:
    """The folds ``cfg`` asks for, of the protocol's split of the dataset's utterances."""
    return select_folds(
        cfg, make_folds(utts, cfg.protocol, valid_speakers=cfg.valid_speakers, seed=cfg.seed)
    )


def write_fold(fold: Fold, fold_dir: Path) -> None:
    """Write the fold's parts once; later runs read them back, so a resumed run keeps its split."""
    if not all((fold_dir / f"{p}.jsonl").is_file() for p in PARTS):
        fold_dir.mkdir(parents=True, exist_ok=True)
        for part in PARTS:
            write_jsonl(getattr(fold, part), fold_dir / f"{part}.jsonl")


def read_fold(fold_dir: Path) -> dict[str, list[Utterance]]:
    return {p: read_jsonl(fold_dir / f"{p}.jsonl") for p in PARTS}


def fold_parts(fold: Fold, fold_dir: Path, main_first: MainFirst) -> dict[str, list[Utterance]]:
    """The fold's parts as written on disk (by rank 0, on the first run)."""
    main_first.run(f"fold-{fold.name}", lambda: write_fold(fold, fold_dir))
    parts = read_fold(fold_dir)
    log.info(
        "fold %s: train %d utts (%s), valid %d (%s), test %d (%s)",
        fold.name, len(parts["train"]), speakers_of(parts["train"]),
        len(parts["valid"]), speakers_of(parts["valid"]),
        len(parts["test"]), speakers_of(parts["test"]),
    )  # fmt: skip
    return parts


def capped(utts: list[Utterance], limit: int) -> list[Utterance]:
    """At most ``limit`` utterances (0 = all), evenly spaced in length order so that short and
    long clips stay represented; the order is kept."""
    if limit <= 0 or len(utts) <= limit:
        return utts
    by_length = sorted(range(len(utts)), key=lambda i: (utts[i].duration, utts[i].id))
    keep = (
        {by_length[round(k * (len(utts) - 1) / (limit - 1))] for k in range(limit)}
        if limit > 1
        else {by_length[0]}
    )
    return [u for i, u in enumerate(utts) if i in keep]


def student_data(cfg: Config, fold: str, parts: dict[str, list[Utterance]]) -> dict[str, AudioSet]:
    """The audio the students train on (all of train) and are scored on (valid and test, at
    most ``eval_max_utterances`` each)."""
    scored = {p: capped(parts[p], cfg.eval_max_utterances) for p in ("valid", "test")}
    if any(len(scored[p]) < len(parts[p]) for p in scored):
        log.info(
            "fold %s: students score %d of %d valid and %d of %d test utterances "
            "(eval_max_utterances=%d)", fold, len(scored["valid"]), len(parts["valid"]),
            len(scored["test"]), len(parts["test"]), cfg.eval_max_utterances,
        )  # fmt: skip
    return {p: audio_set(cfg, us) for p, us in (parts | scored).items()}


def test_carriers(cfg: Config, parts: dict[str, list[Utterance]]) -> np.ndarray | None:
    """What carries the label of each scored test utterance (``words_only``, ``prosody_only``:
    synthetic corpora record it); None for a corpus that does not."""
    scored = capped(parts["test"], cfg.eval_max_utterances)
    carriers = np.array([u.extra.get("carrier", "") for u in scored])
    return carriers if carriers.any() else None


def test_corpora(cfg: Config, parts: dict[str, list[Utterance]]) -> dict[str, np.ndarray] | None:
    """{corpus: mask over the scored test utterances}, for per-corpus results; None when the
    test speakers come from one corpus."""
    scored = capped(parts["test"], cfg.eval_max_utterances)
    corpora = np.array([u.corpus for u in scored])
    masks = {str(c): corpora == c for c in dict.fromkeys(corpora.tolist())}
    return masks if len(masks) > 1 else None


def audio_set(cfg: Config, utts: Sequence[Utterance]) -> AudioSet:
    """The utterances' audio, class indices and rated dimensions (NaN rows: unrated)."""
    return AudioSet(
        [u.audio_path for u in utts],
        np.array([cfg.labels.index(u.label) for u in utts], dtype=int),
        cache=cfg.cache_audio,
        durations=[u.duration for u in utts],
        dimensions=dimension_array(list(utts)),
    )


def speakers_of(utts: Sequence[Utterance]) -> str:
    speakers = sorted({u.speaker for u in utts})
    return f"{len(speakers)} speakers: {','.join(speakers)}" if speakers else "none"


def speakers_by_part(parts: dict[str, list[Utterance]]) -> dict[str, list[str]]:
    return {p: sorted({u.speaker for u in parts[p]}) for p in PARTS}
