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
    # real speech with known words joins the transfer set: a manifest without labels
    wavs = sorted((corpus / "wavs").rglob("*.wav"))[:3]
    extra = tmp_path / "extra.csv"
    extra.write_text(
        "path,text,speaker\n"
        + "".join(f"{w},Please hold the line.,caller{i}\n" for i, w in enumerate(wavs)),
        encoding="utf-8",
    )
    cfg = _config(
        corpus, run_dir, "--transfer_n=16", f"--transfer_path={tmp_path / 'transfer'}",
        "--transfer_mix=0.5", "--probe_n=8", f"--probe_path={tmp_path / 'probe'}",
        "--transfer_temperature=3", f"--transfer_manifest={extra}",
    )  # fmt: skip
    distill.run(cfg)
    fold_dir = _fold_dir(run_dir)
    parts = read_fold(fold_dir)
    assert not [u for p in parts.values() for u in p if u.id.startswith(("transfer", "probe"))]
    (cached,) = (fold_dir / "targets").glob("transfer-16-s1-m*")
    for teacher in ("ling", "pros"):
        with np.load(cached / f"{teacher}.npz") as data:
            assert len(data["ids"]) == 19 and data["logits"].shape == (19, 4)
            ids = [str(i) for i in data["ids"]]
            assert sum(i.startswith("transfer_1_") for i in ids) == 16
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
    before = (cached / "ling.npz").stat().st_mtime_ns
    distill.run(cfg)
    assert (cached / "ling.npz").stat().st_mtime_ns == before


def test_a_transfer_folder_of_other_settings_is_refused(corpus, tmp_path, monkeypatch):
    from training.data.transfer import TransferSetError, transfer_set

    transfer_set(tmp_path / "t", 8, seed=1)
    with pytest.raises(TransferSetError, match="choose another folder"):
        transfer_set(tmp_path / "t", 12, seed=1)


def test_bad_transfer_settings_are_config_errors(corpus, tmp_path):
    cfg = _config(corpus, tmp_path / "run", "--transfer_n=8", "--transfer_mix=0")
    with pytest.raises(ConfigError, match="transfer_mix"):
        distill.run(cfg)


def test_an_unlabelled_manifest_needs_text_not_labels(tmp_path):
    from training.data.manifest import ManifestError, load_manifest

    wav = tmp_path / "a.wav"
    import soundfile as sf

    sf.write(wav, np.zeros(1600, dtype=np.float32), 16000)
    (tmp_path / "ok.csv").write_text("path,text\na.wav,Thank you for calling.\n")
    (utt,) = load_manifest(tmp_path / "ok.csv", unlabelled=True)
    assert utt.label == "" and utt.transcript == "Thank you for calling."
    (tmp_path / "bad.csv").write_text("path,text\na.wav,\n")
    with pytest.raises(ManifestError, match="no text"):
        load_manifest(tmp_path / "bad.csv", unlabelled=True)
    (tmp_path / "none.csv").write_text("path\na.wav\n")
    with pytest.raises(ManifestError, match="missing column"):
        load_manifest(tmp_path / "none.csv", unlabelled=True)
