"""End to end: the voices preset (RAVDESS + TESS + the synthetic words corpus) on a few clips
that the test writes itself in the official layouts, found through EMODISTILL_CORPORA."""

import json

import pytest

from tests.training.data.trees import make_ravdess, make_tess
from tests.training.test_distill import TINY
from training import distill
from training.config import load_config
from training.data.corpora import ENV_VAR
from training.stages.data import read_fold


@pytest.fixture
def corpora(tmp_path, monkeypatch):
    """Every RAVDESS actor (each corpus sets its own held-out speakers) with 2 clips of each of
    the four classes, and TESS with one word per class and speaker."""
    root = tmp_path / "corpora"
    make_ravdess(root / "ravdess", emotions=("01", "03", "04", "05"), seconds=0.6)
    make_tess(
        root / "tess", words=("back",), emotions=("neutral", "happy", "angry", "sad"), seconds=0.6
    )
    monkeypatch.setenv(ENV_VAR, str(root))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return root


def test_voices_preset_trains_and_reports_per_corpus(corpora, corpus, tmp_path):
    run_dir = tmp_path / "run"
    cfg = load_config(
        "voices",
        overrides=[
            *TINY,
            f"--data_path=ravdess,tess,synthetic={corpus}",
            f"--run_dir={run_dir}",
            f"--prosody_cache={tmp_path / 'prosody'}",
        ],
    )
    distill.run(cfg)
    (fold_dir,) = (run_dir / "folds").iterdir()
    assert fold_dir.name == "corpus"
    parts = read_fold(fold_dir)
    corpora_of = {p: {u.corpus for u in parts[p]} for p in parts}
    # TESS only trains; RAVDESS and the synthetic corpus hold out speakers of their own.
    assert corpora_of == {
        "train": {"ravdess", "tess", "synthetic"},
        "valid": {"ravdess", "synthetic"},
        "test": {"ravdess", "synthetic"},
    }
    ravdess_test = {u.speaker for u in parts["test"] if u.corpus == "ravdess"}
    assert ravdess_test == {f"Actor_{a}" for a in range(21, 25)}
    assert all(u.transcript for p in parts.values() for u in p)  # exact texts from the names

    result = json.loads((fold_dir / "student" / "result.json").read_text())
    per_corpus = result["corpora_best"]
    assert set(per_corpus) == {"ravdess", "synthetic"}
    counts = {c: sum(u.corpus == c for u in parts["test"]) for c in per_corpus}
    assert {c: per_corpus[c]["n"] for c in per_corpus} == counts
    for scores in per_corpus.values():
        assert sum(map(sum, scores["confusion"])) == scores["n"]
    assert set(result["calibration_corpora"]) == {"ravdess", "synthetic"}
    report = (run_dir / "results.md").read_text()
    assert "| student: full | ravdess |" in report and "| student: full | synthetic |" in report
    assert (run_dir / "confusion_corpus_student_ravdess.png").stat().st_size > 0
    summary = json.loads((fold_dir / "student" / "best" / "summary.json").read_text())
    assert [c["name"] for c in summary["corpora"]] == ["ravdess", "tess"]  # synthetic is ours
    assert summary["usage"] == "non-commercial"
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["dataset"] == "corpora" and saved["protocol"] == "corpus"


def test_leave_one_corpus_out_without_validation_speakers(corpora, tmp_path):
    """Train on TESS (two speakers: none to spare for validation), test on every RAVDESS actor:
    the last epoch is the model, and it is scored and reported as the chosen one."""
    run_dir = tmp_path / "loco"
    cfg = load_config(
        "voices",
        overrides=[
            *TINY,
            "--data_path=ravdess,tess",
            "--protocol=loso",
            "--folds=ravdess",
            "--valid_speakers=0",
            f"--run_dir={run_dir}",
            f"--prosody_cache={tmp_path / 'prosody'}",
        ],
    )
    metrics = distill.run(cfg)
    (fold_dir,) = (run_dir / "folds").iterdir()
    parts = read_fold(fold_dir)
    assert {u.corpus for u in parts["train"]} == {"tess"} and not parts["valid"]
    assert {u.corpus for u in parts["test"]} == {"ravdess"}
    result = json.loads((fold_dir / "student" / "result.json").read_text())
    assert result["test_best"] == result["test_last"]
    assert sum(map(sum, result["test_best"]["confusion"])) == len(parts["test"])
    assert "test_best_ua" in metrics["summary"]["students"]["full"]
    assert "valid_best_ua" not in metrics["summary"]["students"]["full"]
    assert "| student: full | 1 |" in (run_dir / "results.md").read_text()
