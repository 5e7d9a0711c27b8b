"""Stage 1b, transcribe: the linguistic teacher's transcripts, from the dataset or from Whisper.

After the folds are made (a dataset that cannot be split fails before any transcription) and
before they are written and the teachers trained: ``transcribe=missing`` (the default) has
Whisper (``asr_model``: an offline bundle, a hub name or a local folder; ``training.asr``)
transcribe every utterance the dataset gives without text, ``all`` every utterance (its given
text is not used), ``never`` stops with an error naming the utterances without text. Nothing is
transcribed when no planned student distils the linguistic teacher.

Texts are cached by audio content and model (``asr_cache``, default ``RUN/cache/asr``;
``training.asr.cache``) batch by batch, so a killed run resumes where it stopped and a rerun
decodes nothing. Rank 0 transcribes while the other ranks wait; every rank then reads the
cache. Each utterance records where its text came from (``text_source``: ``given`` or
``asr:<model>``), and ``RUN/manifest.csv`` lists every utterance of the run's folds with its
text and source: a manifest ``--dataset=manifest`` reads as it is.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import logging
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from tqdm.auto import tqdm

from emocore.audio import SAMPLE_RATE, load_audio
from training.asr.cache import TranscriptCache
from training.config import Config, ConfigError
from training.data.manifest import write_manifest
from training.data.splits import Fold
from training.data.utterance import Utterance
from training.features.prosody import file_digest
from training.runs import MainFirst
from training.stages.data import PARTS

log = logging.getLogger("emodistill.training")
GIVEN = "given"
MANIFEST_FILE = "manifest.csv"
MAX_LISTED = 5  # utterances named in the error of transcribe=never


def cache_dir(cfg: Config) -> Path:
    """``asr_cache`` when set, else ``RUN/cache/asr``."""
    return Path(cfg.asr_cache) if cfg.asr_cache else Path(cfg.run_dir) / "cache" / "asr"


def model_key(model: str) -> str:
    """The name a model's transcripts are cached and labelled under: a bundle or hub name as
    it is, an existing local folder by its absolute path."""
    path = Path(model)
    return str(path.resolve()) if path.exists() else model


def source_of(cfg: Config) -> str:
    """The ``text_source`` of a Whisper transcript: ``asr:<model>``."""
    return f"asr:{cfg.asr_model}"


def to_transcribe(cfg: Config, utts: Sequence[Utterance]) -> list[Utterance]:
    """The utterances Whisper transcribes under ``cfg.transcribe`` (never: none)."""
    if cfg.transcribe == "all":
        return list(utts)
    return [u for u in utts if not u.transcript.strip()] if cfg.transcribe == "missing" else []


def check_texts(cfg: Config, utts: Sequence[Utterance]) -> None:
    """``transcribe=never``: every utterance must have its text."""
    missing = [u for u in utts if not u.transcript.strip()]
    if cfg.transcribe == "never" and missing:
        named = ", ".join(repr(u.id) for u in missing[:MAX_LISTED])
        more = f" and {len(missing) - MAX_LISTED} more" if len(missing) > MAX_LISTED else ""
        raise ConfigError(
            f"{len(missing)} of {len(utts)} utterances have no transcript ({named}{more}) and "
            "transcribe=never; the linguistic teacher reads one per utterance: give a text "
            "column, or let Whisper transcribe them with --transcribe=missing (offline, the "
            "default)"
        )


def transcripts(
    cfg: Config, utts: list[Utterance], ling: bool, main_first: MainFirst, device: str
) -> tuple[list[Utterance], dict]:
    """``utts`` with their transcripts and ``text_source``, and what the stage did
    (``{"sources": {source: count}, ...}``); ``ling``: whether a student distils the
    linguistic teacher (else nothing is transcribed or checked)."""
    utts = [
        dataclasses.replace(u, text_source=GIVEN) if u.transcript and not u.text_source else u
        for u in utts
    ]
    report: dict = {}
    if not ling:
        log.info("transcripts: no student distils the linguistic teacher, none needed")
    else:
        check_texts(cfg, utts)
        todo = to_transcribe(cfg, utts)
        if todo:
            work = functools.partial(transcribe, cfg, todo, device)
            report = main_first.run("transcribe", work) or {}
            key = model_key(cfg.asr_model)
            texts = TranscriptCache(cache_dir(cfg), key, cfg.asr_language).load()
            source = source_of(cfg)
            found = {u.id: texts[file_digest(u.audio_path)] for u in todo}
            utts = [
                dataclasses.replace(u, transcript=found[u.id], text_source=source)
                if u.id in found
                else u
                for u in utts
            ]
    report["sources"] = dict(Counter(u.text_source or "none" for u in utts))
    if main_first.accelerator.is_main_process:
        write_manifest(utts, Path(cfg.run_dir) / MANIFEST_FILE)
    log.info(
        "transcripts: %s (%s)",
        ", ".join(f"{n} {s}" for s, n in report["sources"].items()),
        Path(cfg.run_dir) / MANIFEST_FILE,
    )
    return utts, report


def fold_transcripts(
    cfg: Config, folds: list[Fold], ling: bool, main_first: MainFirst, device: str
) -> tuple[list[Fold], dict]:
    """``transcripts`` of every utterance of ``folds`` (each once), put back into the folds."""
    utts = list({u.id: u for fold in folds for p in PARTS for u in getattr(fold, p)}.values())
    done, report = transcripts(cfg, utts, ling, main_first, device)
    by_id = {u.id: u for u in done}
    return [
        dataclasses.replace(fold, **{p: [by_id[u.id] for u in getattr(fold, p)] for p in PARTS})
        for fold in folds
    ], report


def transcribe(cfg: Config, utts: Sequence[Utterance], device: str) -> dict:
    """Fill the cache with the texts of ``utts`` that it lacks (longest clips first, in
    batches, with a progress bar); what it did: utterances cached before, transcribed now,
    their audio minutes and the seconds it took."""
    from training.asr.whisper import load_whisper

    cache = TranscriptCache(cache_dir(cfg), model_key(cfg.asr_model), cfg.asr_language)
    known = cache.load()
    digests = {u.id: file_digest(u.audio_path) for u in utts}
    pending: dict[str, Utterance] = {}  # one per audio content
    for u in utts:
        if digests[u.id] not in known:
            pending.setdefault(digests[u.id], u)
    report = {"cached": len(utts) - sum(d not in known for d in digests.values())}
    if not pending:
        log.info("transcripts of %d utterances: all cached (%s)", len(utts), cache.path)
        return report | {"transcribed": 0}
    started = time.monotonic()
    whisper = load_whisper(
        cfg.asr_model, cfg.asr_engine, device, cfg.threads, cfg.asr_language, cfg.asr_compute_type
    )
    loaded = time.monotonic()
    order = sorted(pending.items(), key=lambda item: -item[1].duration)
    log.info(
        "transcribing %d utterances (%d cached) with Whisper %s",
        len(order), report["cached"], whisper.describe(),
    )  # fmt: skip
    audio_s = 0.0
    with tqdm(total=len(order), desc="transcribing", unit="utt") as bar:
        for start in range(0, len(order), cfg.asr_batch_size):
            batch = order[start : start + cfg.asr_batch_size]
            clips = [load_audio(u.audio_path) for _, u in batch]
            audio_s += sum(len(c) for c in clips) / SAMPLE_RATE
            texts = whisper.transcribe(clips)
            cache.add({digest: text for (digest, _), text in zip(batch, texts, strict=True)})
            bar.update(len(batch))
    done = time.monotonic()
    engine = whisper.describe()
    del whisper
    gc.collect()
    per_minute = (done - loaded) / (audio_s / 60) if audio_s else 0.0
    log.info(
        "transcribed %d utterances, %.1f min of audio, in %.0f s (%.1f s per audio minute; "
        "model loaded in %.1f s)",
        len(order), audio_s / 60, done - loaded, per_minute, loaded - started,
    )  # fmt: skip
    return report | {
        "transcribed": len(order),
        "audio_minutes": round(audio_s / 60, 2),
        "seconds": round(done - loaded, 1),
        "load_seconds": round(loaded - started, 1),
        "seconds_per_audio_minute": round(per_minute, 2),
        "whisper": engine,
    }
