"""benchmarks/calibration.py on a hand-built ONNX model and a run's fold files of clips it writes:
the temperature it undoes, the two ways of fitting T, the floor beside each ECE, the errors for
inputs it cannot use and the view `make tables` renders."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from benchmarks import calibration, tables
from tests.benchmarks.fake_models import LABELS, make_model_dir
from tests.fixtures import write_clip
from training.data.utterance import Utterance, read_jsonl, write_jsonl


def fold(root: Path, corpora: dict[str, int]) -> Path:
    """A run directory whose fold ``corpus`` names clips of ``corpora`` (name -> clips per part)."""
    folder = root / "run" / "folds" / "corpus"
    folder.mkdir(parents=True)
    (root / "clips").mkdir()
    for part in ("valid", "test"):
        rows = []
        for corpus, n in corpora.items():
            for i in range(n):
                path = root / "clips" / f"{part}-{corpus}-{i}.wav"
                kind = ("sine", "noise")[i % 2]
                write_clip(path, seconds=0.2 + 0.05 * (i % 5), kind=kind, seed=i)
                rows.append(Utterance(f"{corpus}/{part}-{i}", str(path), LABELS[i % 4],
                                      corpus=corpus))  # fmt: skip
        write_jsonl(rows, folder / f"{part}.jsonl")
    return root / "run"


def relabel(run: Path, model: Path) -> None:
    """Labels that agree with the model on two clips in three (the others: the next label), so
    that a finite temperature fits them."""
    scorer = calibration.Scorer(model, batch_size=8, threads=1)
    for part in ("valid", "test"):
        path = run / "folds" / "corpus" / f"{part}.jsonl"
        rows = read_jsonl(path)
        clips, kept, _ = calibration.decode(scorer, [Path(r.audio_path) for r in rows])
        assert len(kept) == len(rows)
        answers = scorer.logits(clips).argmax(-1)
        labels = [LABELS[(answer + (i % 3 == 0)) % 4] for i, answer in enumerate(answers)]
        write_jsonl([replace(r, label=y) for r, y in zip(rows, labels, strict=True)], path)


@pytest.fixture(scope="module")
def measured(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("calibration")
    run = fold(root, {"ravdess": 12, "synthetic": 8})
    model = make_model_dir(root / "model")
    relabel(run, model)
    out = root / "calibration.json"
    assert calibration.main(["--run", str(run), "--model", str(model), "--draws", "200",
                             "--threads", "1", "--out", str(out)]) == 0  # fmt: skip
    return {"data": json.loads(out.read_text()), "run": run, "model": model, "root": root}


def test_both_fits_score_every_test_part_beside_their_floor(measured):
    fits = measured["data"]["fits"]
    assert list(fits) == ["all validation speakers", "real validation speakers only"]
    assert fits["all validation speakers"]["valid_clips"] == 20
    assert fits["real validation speakers only"]["valid_clips"] == 12
    for report in fits.values():
        assert 0.05 < report["temperature"] < 20  # inside the search range, not at its edge
        assert list(report["test"]) == ["all", "ravdess", "synthetic"]
        assert [report["test"][p]["clips"] for p in ("all", "ravdess", "synthetic")] == [20, 12, 8]
        for r in report["test"].values():
            floor = r["floor_after"]
            assert 0 < floor["p5"] <= floor["mean"] <= floor["p95"] < 1
            assert 0 <= r["ece_after"] <= 1 and r["nll_after"] <= r["nll_before"] + 1.0


def test_the_model_temperature_is_undone_before_fitting(measured, tmp_path):
    # The same graph with T = 2 recorded as folded in: the uncalibrated logits are twice the
    # graph's, so each fitted T doubles and every calibrated figure stays.
    card = json.loads((measured["model"] / "model.json").read_text())
    hot = tmp_path / "hot"
    hot.mkdir()
    (hot / "model.onnx").write_bytes((measured["model"] / "model.onnx").read_bytes())
    (hot / "model.json").write_text(json.dumps(card | {"temperature": 2.0}))
    out = tmp_path / "c.json"
    args = ["--run", str(measured["run"]), "--model", str(hot), "--draws", "200", "--out", str(out)]
    assert calibration.main(args) == 0
    again = json.loads(out.read_text())["fits"]
    for name, report in measured["data"]["fits"].items():
        assert again[name]["temperature"] == pytest.approx(2 * report["temperature"], rel=1e-3)
        after = again[name]["test"]["all"]["ece_after"]
        assert after == pytest.approx(report["test"]["all"]["ece_after"], abs=1e-6)


def test_the_view_states_the_goal_and_whether_each_ece_is_within_its_floor(measured, tmp_path):
    (tmp_path / "calibration.json").write_text(json.dumps(measured["data"]))
    text = tables.rendertable("calibration", tmp_path)
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    assert len(lines) == 1 + 6
    for line in lines[1:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[-1] == ("met" if float(cells[5]) <= 5.0 else "missed")
        assert cells[-2] in {"yes", "no"}


def test_inputs_it_cannot_use_are_clear_errors(measured, tmp_path, capsys):
    out = tmp_path / "c.json"
    model = str(measured["model"])
    assert calibration.main(["--run", str(tmp_path), "--model", model, "--out", str(out)]) == 2
    assert "valid.jsonl is missing" in capsys.readouterr().err
    assert calibration.main(["--run", str(measured["run"]), "--model", str(tmp_path)]) == 2
    assert "model.json" in capsys.readouterr().err
    assert not out.exists()


def test_a_single_corpus_has_one_fit_and_one_part(tmp_path):
    run = fold(tmp_path, {"ravdess": 8})
    model = make_model_dir(tmp_path / "model")
    out = tmp_path / "c.json"
    assert calibration.main(["--run", str(run), "--model", str(model), "--draws", "50",
                             "--out", str(out)]) == 0  # fmt: skip
    fits = json.loads(out.read_text())["fits"]
    assert list(fits) == ["all validation speakers"]
    assert list(fits["all validation speakers"]["test"]) == ["all"]
    assert np.isfinite(fits["all validation speakers"]["temperature"])
