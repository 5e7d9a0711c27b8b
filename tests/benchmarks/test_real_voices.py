"""benchmarks/real_voices.py on a tiny run, a hand-built ONNX model and tiny corpora: the JSON
it writes, the gain sweep, the leave-one-corpus-out table and the views `make tables` renders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import real_voices, tables
from tests.benchmarks.fake_models import LABELS, make_model_dir
from tests.benchmarks.runs import write_run
from tests.fixtures import write_clip
from tests.training.data.trees import make_ravdess

RUN_KEYS = {
    "dir", "preset", "dataset", "data_path", "protocol", "student_model", "epochs", "labels",
    "fold", "variant", "seed", "best_epoch", "speakers", "test_best", "test_last",
    "corpora_best", "corpora_last", "teachers", "calibration", "calibration_corpora",
    "refit_test", "seconds", "stages", "stage_seconds",
}  # fmt: skip
MAX_SAMPLES = 2 * 16_000


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("real_voices")
    # Actors 17-24: 17-20 validate, 21-24 test; 7 four-class clips each (1 neutral, 2 of the rest).
    make_ravdess(root / "corpora" / "ravdess", actors=range(17, 25), seconds=0.1)
    prompts = root / "asterisk" / "en"
    for index, seconds in enumerate((0.3, 0.5, 0.8, 1.2, 2.5)):  # 2.5 s: cut to 2 s
        folder = prompts / ("digits" if index % 2 else "")
        folder.mkdir(parents=True, exist_ok=True)
        kind = "sine" if index % 2 else "noise"
        write_clip(folder / f"prompt-{index}.wav", sr=8000, seconds=seconds, kind=kind, seed=index)
    write_clip(prompts / "blip.wav", sr=8000, seconds=0.01)  # too short to decode
    return {
        "run": write_run(root / "run", ["corpus"], ["ravdess", "synthetic"]),
        "loco": write_run(
            root / "loco",
            ["ravdess", "tess"],
            ["ravdess", "tess"],
            dataset="corpora",
            data_path="ravdess,tess",
            protocol="loso",
        ),  # fmt: skip
        "corpora": root / "corpora",
        "asterisk": prompts,
        "invariant": make_model_dir(root / "invariant", max_samples=MAX_SAMPLES),
        "sensitive": make_model_dir(root / "sensitive", gain_invariant=False),
        "root": root,
    }


def measure(inputs: dict[str, Path], model: str, out: Path, *extra: str) -> dict:
    argv = [
        "--run", str(inputs["run"]), "--model", str(inputs[model]),
        "--corpora", str(inputs["corpora"]), "--asterisk", str(inputs["asterisk"]),
        "--out", str(out), *extra,
    ]  # fmt: skip
    assert real_voices.main(argv) == 0
    return json.loads(out.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def report(inputs) -> dict:
    out = inputs["root"] / "results" / "real_voices.json"
    return measure(inputs, "invariant", out, "--loco", str(inputs["loco"]))


def test_the_record_names_its_command_date_load_and_commit(report, inputs):
    assert report["command"].startswith("python benchmarks/real_voices.py --run ")
    assert f"--loco {inputs['loco']}" in report["command"]
    assert report["created"].endswith("+00:00")
    assert len(report["machine"]["load_avg_before"]) == len(report["machine"]["load_avg_after"])
    assert report["git"]["commit"] is None or len(report["git"]["commit"]) == 40
    assert set(report) >= {"run", "model", "ravdess", "gain", "asterisk", "loco", "goals"}


def test_the_run_part_holds_the_main_student_teachers_calibration_and_stages(report, inputs):
    run = report["run"]
    assert set(run) == RUN_KEYS
    assert run["preset"] == "voices" and run["protocol"] == "corpus"
    metrics = json.loads((inputs["run"] / "metrics.json").read_text(encoding="utf-8"))
    student = metrics["students"][0]
    assert run["test_best"]["ua"] == student["test_best"]["ua"]
    assert run["test_last"]["confusion"] == student["test_last"]["confusion"]
    assert set(run["corpora_best"]) == {"ravdess", "synthetic"}
    assert set(run["corpora_best"]["ravdess"]) == {"ua", "wa", "macro_f1", "confusion", "n"}
    assert run["teachers"]["pros"]["test_ua"] == metrics["teachers"][0]["pros"]["test"]["ua"]
    assert run["calibration"]["temperature"] == student["calibration"]["temperature"]
    assert "valid_selective" not in run["calibration"]
    assert set(run["calibration_corpora"]) == {"ravdess", "synthetic"}
    # Rank 0 only; a resumed-over stage is counted as skipped, not as work.
    assert run["stages"]["teachers"] == {
        "runs": 1, "skipped": 1, "seconds": 30.0, "peak_rss_mb": 900.0,
    }  # fmt: skip
    assert run["stage_seconds"] == 151.5 and run["seconds"] == 300.0


def test_the_model_is_scored_on_the_test_actors_only(report):
    ravdess = report["ravdess"]
    assert ravdess["actors"] == ["Actor_21", "Actor_22", "Actor_23", "Actor_24"]
    assert ravdess["clips"] == 28
    assert sum(sum(row) for row in ravdess["confusion"]) == 28
    assert list(ravdess["predicted"]) == LABELS
    assert sum(s["count"] for s in ravdess["predicted"].values()) == 28
    assert ravdess["max_class_share"] == max(s["share"] for s in ravdess["predicted"].values())
    assert 0.25 <= ravdess["mean_confidence"] <= 1.0


def test_a_gain_invariant_model_keeps_every_label_at_every_gain(report):
    gain = report["gain"]
    assert gain["gains"] == [0.1, 0.3, 1.0, 3.0, 10.0] and gain["clips"] == 28
    assert list(gain["by_gain"]) == ["0.1", "0.3", "1", "3", "10"]
    for result in gain["by_gain"].values():
        assert result["same_label"] == 1.0
        assert result["max_abs_diff"] < 1e-5 and result["mean_abs_diff"] <= result["max_abs_diff"]
    assert gain["by_gain"]["1"]["max_abs_diff"] == 0.0


def test_a_gain_sensitive_model_is_caught_by_the_sweep(inputs, tmp_path):
    report = measure(inputs, "sensitive", tmp_path / "sensitive.json")
    by_gain = report["gain"]["by_gain"]
    assert by_gain["10"]["max_abs_diff"] > 0.02
    assert min(result["same_label"] for result in by_gain.values()) < 1.0
    assert report["loco"] == []


def test_the_prompts_are_counted_cut_to_the_longest_input_and_left_out_when_too_short(report):
    asterisk = report["asterisk"]
    assert asterisk["clips"] == 5 and asterisk["cut_to_max_samples"] == 1
    assert [Path(p).name for p in asterisk["left_out"]] == ["blip.wav"]
    assert sum(s["count"] for s in asterisk["predicted"].values()) == 5
    assert abs(sum(s["share"] for s in asterisk["predicted"].values()) - 1.0) < 1e-9
    assert set(asterisk["mean_confidence_by_label"]) <= set(LABELS)


def test_leave_one_corpus_out_rows_name_the_training_and_the_test_corpus(report):
    rows = [(row["train"], row["test"]) for row in report["loco"]]
    assert rows == [(["tess"], "ravdess"), (["ravdess"], "tess")]
    assert set(report["loco"][0]["test_best"]) == {"ua", "wa", "macro_f1", "confusion", "n"}


def test_a_run_that_is_not_leave_one_corpus_out_is_refused(inputs, tmp_path, capsys):
    argv = ["--run", str(inputs["run"]), "--model", str(inputs["invariant"]),
            "--loco", str(inputs["run"]), "--out", str(tmp_path / "out.json")]  # fmt: skip
    assert real_voices.main(argv) == 2
    assert (
        "leave-one-corpus-out run is --dataset=corpora --protocol=loso" in capsys.readouterr().err
    )
    assert not (tmp_path / "out.json").exists()


def test_a_missing_corpus_or_run_is_an_error_that_says_where_it_looked(
    inputs, tmp_path, capsys, monkeypatch
):
    monkeypatch.delenv("EMODISTILL_CORPORA", raising=False)
    monkeypatch.chdir(tmp_path)
    argv = ["--run", str(inputs["run"]), "--model", str(inputs["invariant"]),
            "--corpora", str(tmp_path / "none"), "--out", str(tmp_path / "out.json")]  # fmt: skip
    assert real_voices.main(argv) == 2
    assert "ravdess: not found" in capsys.readouterr().err
    assert real_voices.main(["--run", str(tmp_path), *argv[2:]]) == 2
    assert "metrics.json is missing" in capsys.readouterr().err


@pytest.mark.parametrize("name", [n for n in tables.TABLES if n.split(":")[0] == "real_voices"])
def test_every_view_renders_from_the_json_and_names_the_command(report, inputs, name):
    text = tables.rendertable(name, inputs["root"] / "results")
    lines = text.splitlines()
    assert len(lines) >= 3
    assert "python benchmarks/real_voices.py --run" in text
    assert lines[-1].endswith(" s.")


def test_the_views_say_what_was_not_measured(report):
    data = report | {"asterisk": None, "loco": []}
    assert tables.TABLES["real_voices:asterisk"](data)[0].startswith("Not measured")
    assert tables.TABLES["real_voices:loco"](data)[0].startswith("No leave-one-corpus-out")
    loco = tables.TABLES["real_voices:loco"](report)
    assert "| tess | ravdess |" in "\n".join(loco)


def test_loco_only_writes_the_leave_one_corpus_out_table_alone(inputs, tmp_path, capsys):
    out = tmp_path / "loco.json"
    argv = ["--loco-only", "--loco", str(inputs["loco"]), "--out", str(out)]
    assert real_voices.main(argv) == 0
    data = json.loads(out.read_text(encoding="utf-8"))
    assert set(data) == {"created", "command", "git", "machine", "loco", "seconds"}
    assert [(row["train"], row["test"]) for row in data["loco"]] == [
        (["tess"], "ravdess"), (["ravdess"], "tess"),
    ]  # fmt: skip
    assert "| tess | ravdess |" in capsys.readouterr().out
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "loco.json").write_text(out.read_text(encoding="utf-8"))
    assert "| ravdess | tess |" in tables.rendertable("loco", tmp_path / "results")


def test_loco_only_needs_loco_runs_and_the_full_report_needs_run_and_model(inputs, capsys):
    with pytest.raises(SystemExit):
        real_voices.main(["--loco-only"])
    assert "--loco-only needs --loco RUN" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        real_voices.main(["--loco", str(inputs["loco"])])
    assert "--run and --model are required" in capsys.readouterr().err
