"""The IEMOCAP preset end to end on a generated tree in the release layout, with tiny models
(the preset's bert-base-uncased and hubert-base-ls960 are overridden: no downloads here)."""

import json

import numpy as np

from training import distill
from training.config import load_config
from training.data import load_dataset
from training.data.fake_iemocap import make_fake_iemocap
from training.data.splits import make_folds


def test_iemocap_preset_two_loso_folds(tmp_path, monkeypatch, tiny_text_model):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    root = make_fake_iemocap(tmp_path / "IEMOCAP_full_release", per_class=2)
    names = [f.name for f in make_folds(load_dataset("iemocap", root), "loso")]
    assert len(names) == 5
    run_dir = tmp_path / "run"
    cfg = load_config(
        "iemocap",
        overrides=[
            f"--data_path={root}", f"--run_dir={run_dir}", f"--folds={names[0]},{names[1]}",
            # a tiny local text model stands in for the preset's bert-base-uncased (conftest)
            f"--ling_model={tiny_text_model}", "--ling_epochs=1", "--pros_epochs=1",
            "--pros_hidden=16", "--student_model=tiny", "--epochs=1", "--batch_size=8",
            "--num_workers=1", "--threads=1",
        ],
    )  # fmt: skip
    assert cfg.protocol == "loso" and cfg.cache_audio is False and cfg.grad_accum == 2
    metrics = distill.run(cfg)
    assert metrics["folds"] == names[:2]
    for name in names[:2]:
        fold_dir = run_dir / "folds" / name
        test_speakers = {json.loads(line)["speaker"] for line in (fold_dir / "test.jsonl").open()}
        train_speakers = {json.loads(line)["speaker"] for line in (fold_dir / "train.jsonl").open()}
        assert len(test_speakers) == 2 and not test_speakers & train_speakers
        summary = json.loads((fold_dir / "student" / "best" / "summary.json").read_text())
        assert summary["dataset"] == "iemocap" and summary["protocol"] == "loso"
        assert summary["fold"] == name
        # The preset learns dimensions from the [V, A, D] ratings; each cross-fitted teacher
        # has its own read-out, fitted without the speakers it predicts.
        assert len(list((fold_dir / "teachers").glob("*/crossfit/*/dimensions.npz"))) == 6
        assert "dimensions" in np.load(fold_dir / "targets" / "pros.npz").files
        result = json.loads((fold_dir / "student" / "result.json").read_text())
        assert set(result["test_best"]["ccc"]) == {"arousal", "valence", "dominance"}
        refit = json.loads((fold_dir / "student" / "refit" / "result.json").read_text())
        assert set(refit["test"]["ccc"]) == {"arousal", "valence", "dominance"}
    student = metrics["summary"]["students"]["full"]
    assert student["runs"] == 2  # mean +- std over the two folds
    assert "linguistic teacher" in (run_dir / "results.md").read_text()
