"""The recipe's protocols and what they write: cross-fitted teacher targets, the refit on all
non-test speakers, the final protocol, the speakers stated in results, resume without prosody,
the prosody normaliser beside its teacher, no trainer state kept by finished students,
``--labels`` for manifests."""

from __future__ import annotations

import json

import pytest
import soundfile as sf

from tests.training.test_distill import _config, _fold_dir
from training import distill
from training.config import ConfigError, load_config
from training.data.utterance import Utterance, read_jsonl
from training.features.prosody import ProsodyCache, SpeakerNormalizer
from training.stages.data import PARTS, capped, load_utterances
from training.stages.students import share_identical_files


def _json(path):
    return json.loads(path.read_text(encoding="utf-8"))


def test_crossfit_targets_refit_and_speakers(corpus, tmp_path, monkeypatch, tiny_text_model):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    run_dir = tmp_path / "run"
    cfg = _config(
        corpus, run_dir, "--teacher_targets=crossfit", "--crossfit_folds=3", "--refit",
        "--epochs=2", f"--ling_model={tiny_text_model}",  # 4 text teachers: a tiny BERT
    )  # fmt: skip
    distill.run(cfg)
    fold_dir = _fold_dir(run_dir)
    parts = {p: read_jsonl(fold_dir / f"{p}.jsonl") for p in PARTS}
    train_speakers = {u.speaker for u in parts["train"]}
    log = (run_dir / "log.txt").read_text()
    for teacher in ("ling", "pros"):
        stats = _json(fold_dir / "targets" / f"{teacher}.json")
        assert stats["mode"] == "crossfit" and len(stats["crossfit"]) == 3
        predicted = set()
        for source in stats["crossfit"]:
            # each group's targets come from a teacher that never trained on its speakers
            sub = _json(fold_dir / source["dir"] / "metrics.json")
            assert not set(sub["speakers"]["train"]) & set(source["predicts"])
            assert set(sub["speakers"]["train"]) | set(source["predicts"]) == train_speakers
            predicted |= set(source["predicts"])
        assert predicted == train_speakers
        assert 0 < stats["train"]["mean_entropy"] <= stats["train"]["max_entropy"]
        assert stats["valid"]["n"] == len(parts["valid"])  # targets for the refit too
        assert f"{teacher} targets (crossfit) on {len(parts['train'])} training utterances" in log
    assert "training accuracy" in log
    # the prosodic features' normaliser is saved with the prosodic teacher
    norm = SpeakerNormalizer.load(fold_dir / "teachers" / "pros" / "normalizer.json")
    assert {u.speaker for p in parts.values() for u in p} <= set(norm.stats)

    result = _json(fold_dir / "student" / "result.json")
    assert result["speakers"]["train"] == sorted(train_speakers)
    assert result["speakers"]["test"] == sorted({u.speaker for u in parts["test"]})
    refit = _json(fold_dir / "student" / "refit" / "result.json")
    assert refit["epochs"] == result["best_epoch"]
    assert refit["train_utterances"] == len(parts["train"]) + len(parts["valid"])
    valid_speakers = {u.speaker for u in parts["valid"]}
    assert set(refit["speakers"]["train"]) == train_speakers | valid_speakers
    # trained for the chosen epochs, scored on every test utterance
    assert [h["epoch"] for h in refit["history"]] == list(range(1, refit["epochs"] + 1))
    assert sum(map(sum, refit["test"]["confusion"])) == len(parts["test"])
    summary = _json(fold_dir / "student" / "refit" / "last" / "summary.json")
    assert summary["refit"] and summary["speakers"] == refit["speakers"]
    results = (run_dir / "results.md").read_text()
    assert "Speakers per fold" in results and "test UA (refit)" in results
    # finished students keep no optimizer state, and a best epoch that was the last is stored once
    assert not list(run_dir.rglob("trainer.pt"))
    best, last = fold_dir / "student" / "best", fold_dir / "student" / "last"
    shared = {f.name for f in last.iterdir() if (best / f.name).samefile(f)}
    if result["best_epoch"] == len(result["history"]):
        assert shared == {f.name for f in last.iterdir()}
    else:
        assert not {f.name for f in last.iterdir() if f.stat().st_size > 10_000} & shared

    # Resumed: teachers and targets exist, so no prosody is hashed or loaded.
    def no_prosody(*args, **kwargs):
        raise AssertionError("prosody recomputed on resume")

    monkeypatch.setattr(ProsodyCache, "compute_all", no_prosody)
    distill.run(cfg)
    assert "pros teacher and targets: done, skipped" in (run_dir / "log.txt").read_text()


@pytest.mark.slow  # 20 s; the final fold's export choice is also covered by tests/export
def test_final_protocol_trains_on_every_speaker_and_exports(corpus, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    run_dir, model_dir = tmp_path / "run", tmp_path / "model"
    cfg = _config(
        corpus, run_dir, "--protocol=final", "--epochs=1", "--variant=ce+ling",
        "--teacher_targets=crossfit", f"--export={model_dir}",
    )  # fmt: skip
    distill.run(cfg)
    fold_dir = run_dir / "folds" / "final"
    train = read_jsonl(fold_dir / "train.jsonl")
    assert len(train) == 64 and not (fold_dir / "valid.jsonl").read_text().strip()
    result = _json(fold_dir / "student" / "result.json")
    assert len(result["speakers"]["train"]) == 16 and not result["speakers"]["test"]
    assert "test_best" not in result and not (fold_dir / "student" / "best").exists()
    meta = _json(model_dir / "model.json")
    assert meta["training"]["fold"] == "final" and meta["training"]["test"] is None
    assert "every speaker" in (run_dir / "results.md").read_text()


def test_manifest_adapter_honours_labels(tmp_path):
    rows = ["path,label,text,speaker"]
    for i, label in enumerate(["neutral", "calm", "calm", "neutral"]):
        sf.write(tmp_path / f"{i}.wav", [0.0] * 1600, 16000)
        rows.append(f"{i}.wav,{label},hello,s{i}")
    manifest = tmp_path / "data.csv"
    manifest.write_text("\n".join(rows) + "\n")
    cfg = load_config(
        "iemocap",
        overrides=["--dataset=manifest", f"--data_path={manifest}", "--labels=neutral,calm"],
    )
    utts = load_utterances(cfg, None)
    assert sorted(u.label for u in utts) == ["calm", "calm", "neutral", "neutral"]


def test_presets_choose_targets_and_protocols():
    demo, iemocap = load_config("demo"), load_config("iemocap")
    assert (demo.teacher_targets, demo.refit) == ("insample", False)
    assert (iemocap.teacher_targets, iemocap.refit) == ("crossfit", True)
    with pytest.raises(ConfigError):
        load_config("demo", overrides=["--teacher_targets=oof"])


def test_capped_scoring_keeps_the_length_range_and_order():
    utts = [
        Utterance(id=f"u{i}", audio_path=f"{i}.wav", label="neu", duration=(i * 7) % 50 / 10)
        for i in range(50)
    ]
    kept = capped(utts, 10)
    assert len(kept) == 10 and len({u.id for u in kept}) == 10
    durations = [u.duration for u in kept]
    assert min(durations) == 0.0 and max(durations) == 4.9  # both ends of the length range
    assert [u.id for u in kept] == [u.id for u in utts if u in kept]  # original order
    assert capped(utts, 0) is utts and capped(utts, 50) is utts
    assert len(capped(utts, 1)) == 1


def test_identical_checkpoint_files_are_stored_once(tmp_path):
    best, last = tmp_path / "best", tmp_path / "last"
    best.mkdir(), last.mkdir()
    for folder in (best, last):
        (folder / "config.json").write_text('{"a": 1}')
    (best / "model.bin").write_bytes(b"x" * 5000)
    (last / "model.bin").write_bytes(b"x" * 4999 + b"y")  # same size, other weights
    (last / "heads.pt").write_bytes(b"z" * 100)  # only in last
    assert share_identical_files(best, last) == len('{"a": 1}')
    assert (last / "config.json").samefile(best / "config.json")
    assert not (last / "model.bin").samefile(best / "model.bin")
    assert (last / "model.bin").read_bytes().endswith(b"y")
    assert (last / "heads.pt").read_bytes() == b"z" * 100
    assert sorted(f.name for f in last.iterdir()) == ["config.json", "heads.pt", "model.bin"]
    assert share_identical_files(best, last) == 0  # already shared
    assert share_identical_files(best, tmp_path / "missing") == 0
