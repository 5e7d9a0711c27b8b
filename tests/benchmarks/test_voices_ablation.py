"""benchmarks/voices_ablation.py with the training calls replaced: which students it asks for and
in what order, the teachers it shares by hard links, the figures it collects per seed and the
table `make tables` renders from them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from benchmarks import tables, voices_ablation
from tests.benchmarks.runs import scored, student, write_run


def base_run(root: Path) -> Path:
    base = write_run(root / "base", ["corpus"], ["ravdess", "synthetic"])
    fold = base / "folds" / "corpus"
    for name in ("teachers/ling", "targets", "student"):
        (fold / name).mkdir(parents=True)
    (fold / "teachers" / "ling" / "model.safetensors").write_bytes(b"weights")
    (fold / "student" / "result.json").write_text("{}", encoding="utf-8")
    (fold / "train.jsonl").write_text("{}\n", encoding="utf-8")
    return base


def finished(run_dir: Path, variants: list[str], seeds: list[int]) -> None:
    """The metrics.json the group's final training call writes: one student per variant x seed,
    their UA differing by seed so that the spread is not zero."""
    students = []
    for variant in variants:
        for seed in seeds:
            s = student("corpus", ["ravdess", "synthetic"], seed) | {
                "variant": variant,
                "seed": seed,
                "subsets_best": {"words_only": scored(seed + 30), "prosody_only": scored(seed + 40)},
            }  # fmt: skip
            students.append(s)
    teachers = {"ling": {"test": scored(20), "valid": scored(21)},
                "pros": {"test": scored(22), "valid": scored(23)}}  # fmt: skip
    metrics = {"config": {}, "folds": ["corpus"], "teachers": [teachers], "students": students}
    (run_dir / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")


def fake_training(monkeypatch) -> list[list[str]]:
    """``run`` replaced by a call that records the command and writes the metrics.json of its
    students as finished; the list of commands it saw."""
    calls: list[list[str]] = []

    def fake_run(cmd: list[str], log: Path) -> float:
        calls.append(cmd)
        args = dict(a[2:].split("=", 1) for a in cmd if a.startswith("--") and "=" in a)
        seeds = [int(s) for s in args["seeds"].split(",")]
        finished(Path(args["run_dir"]), args["variants"].split(","), seeds)
        return 1.0

    monkeypatch.setattr(voices_ablation, "run", fake_run)
    return calls


@pytest.fixture()
def ablation(tmp_path, monkeypatch) -> dict:
    base = base_run(tmp_path)
    calls = fake_training(monkeypatch)
    results = tmp_path / "voices_ablation.json"
    monkeypatch.setattr(voices_ablation, "RESULTS", results)
    argv = ["--base", str(base), "--runs", str(tmp_path / "runs"), "--whisper-base"]
    assert voices_ablation.main(argv) == 0
    return {"calls": calls, "data": json.loads(results.read_text()), "runs": tmp_path / "runs",
            "base": base}  # fmt: skip


def plan(cmd: list[str]) -> tuple[str, str, str]:
    args = dict(a[2:].split("=", 1) for a in cmd if a.startswith("--") and "=" in a)
    return Path(args["run_dir"]).name, args["variants"], args["seeds"]


def test_whisper_base_first_then_whole_seeds_then_one_call_per_group(ablation):
    order = [plan(cmd) for cmd in ablation["calls"]]
    one_by_one = [
        ("whisper_base", "full", "0"),
        *[(g, v, s) for s in "012" for g, v in [("aug", "ce_only"), ("aug", "ce+pros"),
                                                ("aug", "ce+ling"), ("aug", "full"),
                                                ("no_aug", "full")]],
    ]  # fmt: skip
    assert order[: len(one_by_one)] == one_by_one
    assert order[len(one_by_one) :] == [
        ("aug", "ce_only,ce+pros,ce+ling,full", "0,1,2"),
        ("no_aug", "full", "0,1,2"),
        ("whisper_base", "full", "0"),
    ]
    # Every augmentation off in the no_aug group only; one thread per student.
    for cmd in ablation["calls"]:
        group = plan(cmd)[0]
        assert ("--aug_noise_p=0" in cmd) == (group == "no_aug")
        assert ("--student_model=whisper-base" in cmd) == (group == "whisper_base")
        assert "--threads=1" in cmd and "--preset" in cmd


def test_groups_share_the_base_teachers_by_hard_links_and_only_aug_its_student(ablation):
    weights = Path("folds/corpus/teachers/ling/model.safetensors")
    original = (ablation["base"] / weights).stat()
    for group in ("aug", "no_aug", "whisper_base"):
        copy = (ablation["runs"] / group / weights).stat()
        assert (copy.st_ino, copy.st_dev) == (original.st_ino, original.st_dev)
        student_done = ablation["runs"] / group / "folds/corpus/student/result.json"
        assert student_done.exists() == (group == "aug")


def test_rows_hold_per_seed_figures_and_their_mean_and_spread(ablation):
    rows = ablation["data"]["rows"]
    assert list(rows) == ["aug/ce_only", "aug/ce+pros", "aug/ce+ling", "aug/full", "no_aug/full",
                          "whisper_base/full"]  # fmt: skip
    full = rows["aug/full"]
    assert sorted(full["seeds"]) == ["0", "1", "2"]
    values = [full["seeds"][s]["ravdess_ua"] for s in "012"]
    mean, std = full["summary"]["ravdess_ua"]
    assert mean == pytest.approx(sum(values) / 3)
    assert std > 0
    assert full["summary"]["test_ece_after"][0] == pytest.approx(0.08)
    assert rows["whisper_base/full"]["summary"]["test_ua"][1] == 0.0  # one seed: no spread
    assert set(ablation["data"]["teachers"]) == {"ling", "pros"}


def test_the_table_lists_every_row_with_its_seeds(ablation, tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "voices_ablation.json").write_text(json.dumps(ablation["data"]))
    text = tables.rendertable("voices_ablation", tmp_path / "results")
    assert "| full without augmentation (3 seeds) |" in text
    assert "| full, Whisper base student (1 seed) |" in text
    mean, std = ablation["data"]["rows"]["aug/ce_only"]["summary"]["ravdess_ua"]
    assert f"{100 * mean:.1f} ± {100 * std:.1f}" in text
    assert re.search(r"\| ling teacher \| [\d.]+ \| [\d.]+ \|", text)


def test_a_base_that_is_not_a_finished_run_is_refused(tmp_path, capsys):
    assert voices_ablation.main(["--base", str(tmp_path), "--runs", str(tmp_path / "r")]) == 2
    assert "not a finished voices run" in capsys.readouterr().err


def test_a_failed_training_call_stops_the_queue_and_shows_its_log(tmp_path, monkeypatch, capsys):
    base = base_run(tmp_path)
    script = tmp_path / "fail.py"
    script.write_text("import sys; print('error: ravdess: not found'); sys.exit(2)\n")
    started = []

    def command(run_dir, variants, seeds, extra, threads):
        started.append(variants)
        return [voices_ablation.sys.executable, str(script), f"--run_dir={run_dir}"]

    monkeypatch.setattr(voices_ablation, "command", command)
    argv = ["--base", str(base), "--runs", str(tmp_path / "runs"), "--workers", "1"]
    assert voices_ablation.main(argv) == 1
    err = capsys.readouterr().err
    assert "exit status 2" in err and "ravdess: not found" in err
    assert started == [("ce_only",)]  # nothing queued after the failure ran


def test_each_augmentation_trains_the_full_student_without_one_transform_at_a_time(
    tmp_path, monkeypatch
):
    base = base_run(tmp_path)
    calls = fake_training(monkeypatch)
    monkeypatch.setattr(voices_ablation, "RESULTS", tmp_path / "out.json")
    argv = ["--base", str(base), "--runs", str(tmp_path / "runs"), "--each-augmentation"]
    assert voices_ablation.main(argv) == 0
    keys = list(voices_ablation.EACH_AUGMENTATION.values())
    first = [plan(cmd) for cmd in calls[: len(keys)]]
    assert first == [(f"no_{key}", "full", "0") for key in keys]
    for cmd, key in zip(calls, keys, strict=False):
        assert [a for a in cmd if a.endswith("=0") and not a.startswith("--seeds")] == [
            f"--{key}=0"
        ]  # that transform off, every other as the preset has it
    rows = json.loads((tmp_path / "out.json").read_text())["rows"]
    assert rows["no_aug_reverb_p/full"]["label"] == "full without rooms"
    assert list(rows["no_aug_codec_p/full"]["seeds"]) == ["0"]


def test_only_trains_the_named_groups_and_merges_their_seeds_into_the_results(
    ablation, monkeypatch, tmp_path
):
    before = ablation["data"]
    calls = fake_training(monkeypatch)
    argv = ["--base", str(ablation["base"]), "--runs", str(tmp_path / "again"),
            "--only", "whisper_base", "--seeds", "1", "2"]  # fmt: skip
    assert voices_ablation.main(argv) == 0
    assert [plan(cmd) for cmd in calls] == [
        ("whisper_base", "full", "1"), ("whisper_base", "full", "2"),
        ("whisper_base", "full", "1,2"),
    ]  # fmt: skip
    after = json.loads(voices_ablation.RESULTS.read_text())
    row = after["rows"]["whisper_base/full"]
    assert list(row["seeds"]) == ["0", "1", "2"]  # seed 0 kept from the first call
    assert row["seeds"]["0"] == before["rows"]["whisper_base/full"]["seeds"]["0"]
    values = [row["seeds"][s]["test_ua"] for s in "012"]
    assert row["summary"]["test_ua"][0] == pytest.approx(sum(values) / 3)
    assert row["summary"]["test_ua"][1] > 0
    assert {k: v for k, v in after["rows"].items() if k != "whisper_base/full"} == {
        k: v for k, v in before["rows"].items() if k != "whisper_base/full"
    }
    assert after["command"] == before["command"]
    assert after["updates"][0]["seeds"] == [1, 2]
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "voices_ablation.json").write_text(json.dumps(after))
    text = tables.rendertable("voices_ablation", tmp_path / "results")
    assert "| full, Whisper base student (3 seeds) |" in text
    text = " ".join(text.split())  # the view wraps its lines
    assert "Then `python benchmarks/voices_ablation.py --base" in text
    assert "--only whisper_base --seeds 1 2` (seeds 1, 2 of its groups, merged" in text


def test_only_refuses_unknown_groups_and_other_teachers(ablation, tmp_path, capsys):
    argv = ["--base", str(ablation["base"]), "--runs", str(tmp_path / "again"), "--only"]
    assert voices_ablation.main([*argv, "no_such_group"]) == 2
    assert "unknown group no_such_group: choose from aug, no_aug" in capsys.readouterr().err
    assert voices_ablation.main([*argv, "aug/no_such_variant"]) == 2
    assert "aug/ce_only, aug/ce+pros" in capsys.readouterr().err
    metrics = json.loads((ablation["base"] / "metrics.json").read_text())
    metrics["teachers"][0]["ling"]["test"]["ua"] = 0.123
    (ablation["base"] / "metrics.json").write_text(json.dumps(metrics))
    results = voices_ablation.RESULTS.read_text()
    assert voices_ablation.main([*argv, "no_aug"]) == 2
    assert "rerun those groups into a new --out file" in capsys.readouterr().err
    assert voices_ablation.RESULTS.read_text() == results  # nothing trained, nothing written
    assert not (tmp_path / "again").exists()


def test_only_into_a_new_file_writes_a_table_of_those_rows_on_the_same_teachers(
    ablation, monkeypatch, tmp_path
):
    calls = fake_training(monkeypatch)
    out = tmp_path / "choices.json"
    argv = ["--base", str(ablation["base"]), "--runs", str(tmp_path / "again"), "--only",
            "aug/full", "scripted", "--seeds", "0", "1", "--out", str(out)]  # fmt: skip
    assert voices_ablation.main(argv) == 0
    assert [plan(cmd) for cmd in calls] == [
        ("aug", "full", "0"), ("scripted", "full", "0"), ("aug", "full", "1"),
        ("scripted", "full", "1"), ("aug", "full", "0,1"), ("scripted", "full", "0,1"),
    ]  # fmt: skip
    assert all("--scripted_corpora=ravdess,tess" in c for c in calls if plan(c)[0] == "scripted")
    data = json.loads(out.read_text())
    assert list(data["rows"]) == ["aug/full", "scripted/full"]
    assert (
        data["rows"]["scripted/full"]["label"] == "full, no linguistic teacher on RAVDESS and TESS"
    )
    assert data["seeds"] == [0, 1] and "updates" not in data
    # the base's own student is the group's seed 0 (linked; its training call finds it done)
    assert (tmp_path / "again/aug/folds/corpus/student/result.json").exists()
