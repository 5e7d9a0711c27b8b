"""End to end: the recipe with a transfer set and the vocabulary probe on a tiny corpus."""

import json

import numpy as np
import pytest

from tests.training.test_distill import _config, _fold_dir
from training import distill
from training.config import ConfigError
from training.stages.data import read_fold


def test_transfer_set_and_probe_end_to_end(corpus, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    run_dir = tmp_path / "run"
    cfg = _config(
        corpus, run_dir, "--transfer_n=16", f"--transfer_path={tmp_path / 'transfer'}",
        "--transfer_mix=0.5", "--probe_n=8", f"--probe_path={tmp_path / 'probe'}",
        "--transfer_temperature=3",
    )  # fmt: skip
    distill.run(cfg)
    fold_dir = _fold_dir(run_dir)
    parts = read_fold(fold_dir)
    assert not [u for p in parts.values() for u in p if u.id.startswith(("transfer", "probe"))]
    for teacher in ("ling", "pros"):
        with np.load(fold_dir / "targets" / "transfer-16-s1" / f"{teacher}.npz") as data:
            assert len(data["ids"]) == 16 and data["logits"].shape == (16, 4)
            assert all(str(i).startswith("transfer_1_") for i in data["ids"])
    result = json.loads((fold_dir / "student" / "result.json").read_text())
    assert set(result["probe_best"]) == {"seen", "transfer", "novel"}
    assert all(s["n"] == 8 and 0 <= s["ua"] <= 1 for s in result["probe_best"].values())
    assert set(result["probe_teacher"]) == {"seen", "transfer", "novel"}
    # every epoch drew 0.5 transfer utterances per labelled one: more batches than labelled ones
    teacher_ref = json.loads((fold_dir / "teachers" / "ling" / "probe.json").read_text())
    assert teacher_ref == result["probe_teacher"]
    report = (run_dir / "results.md").read_text()
    assert "vocabulary probe" in report

    # resumed: nothing is recomputed, the same result comes back
    before = (fold_dir / "targets" / "transfer-16-s1" / "ling.npz").stat().st_mtime_ns
    distill.run(cfg)
    assert (fold_dir / "targets" / "transfer-16-s1" / "ling.npz").stat().st_mtime_ns == before


def test_a_transfer_folder_of_other_settings_is_refused(corpus, tmp_path, monkeypatch):
    from training.data.transfer import TransferSetError, transfer_set

    transfer_set(tmp_path / "t", 8, seed=1)
    with pytest.raises(TransferSetError, match="choose another folder"):
        transfer_set(tmp_path / "t", 12, seed=1)


def test_bad_transfer_settings_are_config_errors(corpus, tmp_path):
    cfg = _config(corpus, tmp_path / "run", "--transfer_n=8", "--transfer_mix=0")
    with pytest.raises(ConfigError, match="transfer_mix"):
        distill.run(cfg)
