"""The transcribe stage (training/stages/transcribe.py): which utterances Whisper transcribes,
the cache and its resume, ``text_source`` and the manifest it writes, ``--transcribe=never``;
and the demo recipe, end to end and offline, from a manifest without a text column."""

from __future__ import annotations

import csv
import dataclasses
import json

import pytest

from tests.training.test_distill import TINY
from tests.training.weights.installed import locate
from training import distill
from training.asr import whisper as asr_whisper
from training.config import ConfigError, load_config
from training.data import load_dataset
from training.data.manifest import load_manifest
from training.data.synthetic import MANIFEST_NAME
from training.runs import MainFirst, read_stages
from training.stages import transcribe as stage
from training.stages.data import read_fold


class FakeWhisper:
    """Stands in for Whisper: "heard <file name>" per clip, by its length; counts the clips it
    transcribes, and fails (as a kill would) on batch number ``fail_at``."""

    engine = "fake"

    def __init__(self, names_by_length: dict[int, str], fail_at: int | None = None):
        self.names, self.fail_at, self.batches, self.clips = names_by_length, fail_at, 0, 0

    def transcribe(self, clips):
        self.batches += 1
        if self.batches == self.fail_at:
            raise KeyboardInterrupt("killed")
        self.clips += len(clips)
        return [f"heard {self.names[len(c)]}" for c in clips]

    def describe(self):
        return "fake"


@pytest.fixture
def utts(corpus):
    """Six utterances of the session corpus, four of them without text; distinct lengths."""
    from emocore.audio import load_audio

    chosen, lengths = [], set()
    for u in load_dataset("synthetic", corpus):
        n = len(load_audio(u.audio_path))
        if n not in lengths:
            lengths.add(n)
            chosen.append((u, n))
        if len(chosen) == 6:
            break
    return [
        (dataclasses.replace(u, transcript="") if i < 4 else u, n)
        for i, (u, n) in enumerate(chosen)
    ]


def _fake(monkeypatch, utts, **kwargs) -> list[FakeWhisper]:
    names = {n: u.id for u, n in utts}
    made = []

    def load_whisper(*args, **_):
        made.append(FakeWhisper(names, **kwargs))
        return made[-1]

    monkeypatch.setattr(asr_whisper, "load_whisper", load_whisper)
    return made


def _run(cfg, utts, ling=True):
    accelerator = distill.make_accelerator(cfg)
    return stage.transcripts(
        cfg, [u for u, _ in utts], ling, MainFirst(accelerator, cfg.run_dir), "cpu"
    )


def _cfg(tmp_path, *extra):
    (tmp_path / "run").mkdir(parents=True, exist_ok=True)
    return load_config(
        "demo", overrides=[f"--run_dir={tmp_path / 'run'}", "--asr_batch_size=2", *extra]
    )


def test_missing_texts_are_transcribed_given_ones_kept_and_the_manifest_says_which(
    tmp_path, utts, monkeypatch
):
    made = _fake(monkeypatch, utts)
    cfg = _cfg(tmp_path)
    out, report = _run(cfg, utts)
    assert [u.id for u in out] == [u.id for u, _ in utts]
    for (before, _), after in zip(utts, out, strict=True):
        if before.transcript:
            assert (after.transcript, after.text_source) == (before.transcript, "given")
        else:
            assert after.transcript == f"heard {before.id}"
            assert after.text_source == "asr:whisper-tiny.en"
    assert made[0].clips == 4 and made[0].batches == 2  # asr_batch_size=2
    assert report["sources"] == {"asr:whisper-tiny.en": 4, "given": 2}
    assert report["transcribed"] == 4 and report["cached"] == 0
    # The manifest beside the run: every utterance, its text and where it came from; read back
    # by the manifest adapter as the same utterances.
    manifest = tmp_path / "run" / stage.MANIFEST_FILE
    rows = list(csv.DictReader(manifest.open(encoding="utf-8")))
    assert [r["text_source"] for r in rows] == [u.text_source for u in out]
    again = load_manifest(manifest)
    assert [
        (u.id, u.transcript, u.text_source, u.speaker, u.label, u.dimensions) for u in again
    ] == [(u.id, u.transcript, u.text_source, u.speaker, u.label, u.dimensions) for u in out]


def test_all_replaces_given_texts_and_the_cache_serves_a_rerun(tmp_path, utts, monkeypatch):
    made = _fake(monkeypatch, utts)
    cfg = _cfg(tmp_path, "--transcribe=all")
    out, _ = _run(cfg, utts)
    assert all(u.text_source == "asr:whisper-tiny.en" for u in out)
    assert [u.transcript for u in out] == [f"heard {u.id}" for u, _ in utts]
    cache = tmp_path / "run" / "cache" / "asr" / "whisper-tiny.en-en.jsonl"
    assert len(cache.read_text().splitlines()) == 6
    # A rerun (and a run with another run directory sharing the cache) loads no Whisper.
    monkeypatch.setattr(asr_whisper, "load_whisper", pytest.fail)
    again, report = _run(cfg, utts)
    assert again == out and report["cached"] == 6 and report["transcribed"] == 0
    other = _cfg(tmp_path / "other", "--transcribe=all", f"--asr_cache={cache.parent}")
    assert _run(other, utts)[0] == out
    assert len(made) == 1


def test_a_killed_transcription_resumes_after_its_last_batch(tmp_path, utts, monkeypatch):
    made = _fake(monkeypatch, utts, fail_at=2)
    cfg = _cfg(tmp_path, "--transcribe=all")
    with pytest.raises(KeyboardInterrupt):
        _run(cfg, utts)
    assert made[0].clips == 2  # the first batch is cached
    made = _fake(monkeypatch, utts)
    out, report = _run(cfg, utts)
    assert made[0].clips == 4 and (report["cached"], report["transcribed"]) == (2, 4)
    assert [u.transcript for u in out] == [f"heard {u.id}" for u, _ in utts]


def test_another_model_is_another_cache_entry(tmp_path, utts, monkeypatch):
    _fake(monkeypatch, utts)
    _run(_cfg(tmp_path), utts)
    made = _fake(monkeypatch, utts)
    out, _ = _run(_cfg(tmp_path, "--asr_model=whisper-base"), utts)
    assert made[0].clips == 4
    assert {u.text_source for u in out} == {"given", "asr:whisper-base"}


def test_never_with_missing_texts_is_a_clear_error(tmp_path, utts, monkeypatch, capsys):
    monkeypatch.setattr(asr_whisper, "load_whisper", pytest.fail)
    cfg = _cfg(tmp_path, "--transcribe=never")
    with pytest.raises(ConfigError, match="4 of 6 utterances have no transcript") as error:
        _run(cfg, utts)
    assert "--transcribe=missing" in str(error.value) and utts[0][0].id in str(error.value)
    # Given texts only: nothing to do, nothing transcribed.
    given = [(u, n) for u, n in utts if u.transcript]
    out, report = _run(cfg, given)
    assert report["sources"] == {"given": 2} and [u.text_source for u in out] == ["given"] * 2
    # No student distils the linguistic teacher: no transcripts needed, no error.
    out, report = _run(cfg, utts, ling=False)
    assert report["sources"] == {"none": 4, "given": 2}


def test_the_iemocap_preset_keeps_the_release_transcripts(tmp_path, monkeypatch):
    from training.data.fake_iemocap import make_fake_iemocap

    monkeypatch.setattr(asr_whisper, "load_whisper", pytest.fail)
    root = make_fake_iemocap(tmp_path / "IEMOCAP_full_release", per_class=2)
    cfg = load_config("iemocap", overrides=[f"--data_path={root}", f"--run_dir={tmp_path}"])
    assert cfg.transcribe == "missing"
    utts = [(u, 0) for u in load_dataset("iemocap", root)]
    out, report = _run(cfg, utts)
    assert report["sources"] == {"given": len(utts)}
    assert [u.transcript for u in out] == [u.transcript for u, _ in utts]


def test_never_stops_the_command_with_exit_code_2(tmp_path, corpus, capsys):
    manifest = tmp_path / "data.csv"
    rows = ["path,label,speaker"] + [
        f"{u.audio_path},{u.label},{u.speaker}" for u in load_dataset("synthetic", corpus)
    ]
    manifest.write_text("\n".join(rows) + "\n")
    args = ["--dataset=manifest", f"--data_path={manifest}", f"--run_dir={tmp_path / 'run'}"]
    assert distill.main([*args, "--transcribe=never"]) == 2
    assert "64 of 64 utterances have no transcript" in capsys.readouterr().err


def test_a_manifest_that_cannot_be_split_fails_before_any_transcription(
    tmp_path, corpus, monkeypatch, capsys
):
    monkeypatch.setattr(asr_whisper, "load_whisper", pytest.fail)
    manifest = tmp_path / "data.csv"
    rows = ["path,label"] + [f"{u.audio_path},{u.label}" for u in load_dataset("synthetic", corpus)]
    manifest.write_text("\n".join(rows) + "\n")
    args = ["--dataset=manifest", f"--data_path={manifest}", f"--run_dir={tmp_path / 'run'}"]
    assert distill.main(args) == 2
    assert "64 utterances have no speaker" in capsys.readouterr().err


def test_the_demo_recipe_trains_from_a_manifest_without_text(tmp_path, corpus, monkeypatch):
    """path,label,speaker only: the offline tiny.en bundle transcribes the clips, the teachers
    and the student train, and a rerun finds everything done (the transcripts cached)."""
    locate("whisper-tiny.en")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("EMODISTILL_CACHE", str(tmp_path / "cache"))
    said = {u.audio_path: u.transcript for u in load_dataset("synthetic", corpus)}
    # Two utterances of each of five voices: 2 test, 1 validation and 2 training speakers.
    by_speaker = {}
    for u in load_manifest(corpus / MANIFEST_NAME):
        by_speaker.setdefault(u.speaker, []).append(u)
    rows = ["path,label,speaker"] + [
        f"{u.audio_path},{u.label},{u.speaker}"
        for us in list(by_speaker.values())[:5]
        for u in us[:2]
    ]
    manifest = tmp_path / "mine.csv"
    manifest.write_text("\n".join(rows) + "\n")
    run_dir = tmp_path / "run"
    cfg = load_config(
        "demo",
        overrides=[
            *TINY, "--dataset=manifest", f"--data_path={manifest}", f"--run_dir={run_dir}",
            f"--prosody_cache={tmp_path / 'prosody'}", "--valid_speakers=1",
        ],
    )  # fmt: skip
    metrics = distill.run(cfg)

    written = load_manifest(run_dir / stage.MANIFEST_FILE)
    assert len(written) == 10 and {u.text_source for u in written} == {"asr:whisper-tiny.en"}
    # Whisper heard the eSpeak sentences: most of their words (tiny.en on eSpeak voices).
    heard = sum(
        len(set(u.transcript.lower().split()) & set(said[u.audio_path].lower().split()))
        for u in written
    )
    assert heard >= 0.5 * sum(len(set(said[u.audio_path].split())) for u in written)
    (fold_dir,) = (run_dir / "folds").iterdir()
    parts = read_fold(fold_dir)
    assert all(u.transcript and u.text_source.startswith("asr:") for p in parts.values() for u in p)
    assert (fold_dir / "teachers" / "ling" / "metrics.json").is_file()
    assert metrics["students"][0]["test_best"]["n"] == 4
    assert metrics["transcripts"]["sources"] == {"asr:whisper-tiny.en": 10}
    assert "Transcripts: 10 asr:whisper-tiny.en." in (run_dir / "results.md").read_text()
    (record,) = [r for r in read_stages(run_dir) if r["stage"] == "transcribe"]
    assert record["transcribed"] == 10 and not record["skipped"]

    distill.run(cfg)  # resumed: the transcripts come from the cache, no stage trains again
    again = [r for r in read_stages(run_dir) if r["stage"] == "transcribe"][-1]
    assert again["skipped"] and again["cached"] == 10
    assert json.loads((run_dir / "metrics.json").read_text())["transcripts"]["cached"] == 10
