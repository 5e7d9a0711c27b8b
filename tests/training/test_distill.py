"""End to end: the recipe (``training.distill.run``) on a tiny synthetic corpus (seconds a run)."""

import json
import logging

import numpy as np
import pytest

from training import distill
from training.config import load_config
from training.eval.calibration import ece, nll
from training.fit.loop import predict
from training.models.student import load_student
from training.runs import read_stages
from training.stages import export as export_stage
from training.stages import students as student_stage
from training.stages.data import PARTS, audio_set, read_fold

# Small enough for seconds on 2 CPU cores, large enough that the loss visibly falls. What it
# does not do is learn the categories: over seeds 0-2 the student's test UA was 0.125-0.375 on
# its 8 test utterances (chance: 0.25) and its training cross-entropy stayed at ln 4 = 1.39
# (with 40 epochs: 1.25, test UA 0.25-0.375). The checks below are on what it does learn;
# test_recipe_learns.py checks that the pretrained student learns the categories.
TINY = [
    "--synth_n=64",
    "--ling_epochs=1",
    "--ling_batch_size=64",
    "--pros_epochs=2",
    "--pros_hidden=16",
    "--epochs=3",
    "--batch_size=8",
    "--max_seconds=1.0",
    "--lr_encoder=2e-3",
    "--lr_heads=5e-3",
    "--warmup_ratio=0.0",
    "--threads=1",
    "--student_model=tiny-mel",  # the from-scratch log-mel student: seconds, whatever the preset
]


def _config(corpus, run_dir, *extra):
    args = [*TINY, f"--data_path={corpus}", f"--run_dir={run_dir}"]
    args.append(f"--prosody_cache={corpus / 'prosody'}")
    return load_config("demo", overrides=[*args, *extra])


def _fold_dir(run_dir):
    (fold_dir,) = (run_dir / "folds").iterdir()
    return fold_dir


def test_end_to_end_writes_every_stage_and_exports(corpus, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    run_dir, model_dir = tmp_path / "run", tmp_path / "model"
    cfg = _config(corpus, run_dir, f"--export={model_dir}")
    metrics = distill.run(cfg)
    fold_dir = _fold_dir(run_dir)
    parts = read_fold(fold_dir)
    assert all(parts[p] for p in PARTS)
    for teacher in ("ling", "pros"):
        tm = json.loads((fold_dir / "teachers" / teacher / "metrics.json").read_text())
        assert np.sum(tm["test"]["confusion"]) == len(parts["test"])  # scored on every one
        assert (fold_dir / "targets" / f"{teacher}.npz").is_file()
    summary = json.loads((fold_dir / "student" / "best" / "summary.json").read_text())
    assert summary["variant"] == "full" and summary["labels"] == [
        "neutral",
        "happy",
        "angry",
        "sad",
    ]
    assert set(summary["test"]) == {"ua", "wa", "macro_f1"}
    assert (fold_dir / "student" / "last" / "projections.pt").is_file()
    for name in ("config.json", "log.txt", "metrics.json", "results.md", "training_curves.png"):
        assert (run_dir / name).stat().st_size > 0
    assert len(list(run_dir.glob("confusion_*.png"))) == 3  # two teachers + the student
    assert "student: full" in (run_dir / "results.md").read_text()
    history = json.loads((fold_dir / "student" / "result.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[-1]["loss"] < history[0]["loss"]
    # Distillation pulls the student towards the teachers: the cosine distance of its projected
    # embeddings to each teacher's fell by 43-45% (ling) and 93-97% (pros) over 3 epochs for
    # seeds 0-2.
    for teacher in ("ling", "pros"):
        assert history[-1][f"emb_{teacher}"] < 0.8 * history[0][f"emb_{teacher}"]
    assert metrics["summary"]["students"]["full"]["runs"] == 1
    assert json.loads((run_dir / "config.json").read_text())["epochs"] == 3
    model = json.loads((model_dir / "model.json").read_text())  # --export ran export.export_run
    assert model["labels"] == summary["labels"] and model["training"]["fold"] == fold_dir.name
    # Calibration: T fitted on validation, reported on test, folded into the exported graph.
    calibration = metrics["students"][0]["calibration"]
    assert calibration == summary["calibration"] and calibration["temperature"] > 0
    # The figures are the best student's on the test speakers, and T is the one that fits the
    # validation speakers best.
    best = load_student(fold_dir / "student" / "best")
    accelerator = distill.make_accelerator(cfg)
    scored = {}
    for part in ("valid", "test"):
        audio = audio_set(cfg, parts[part])
        scored[part] = (predict(best, audio, cfg.eval_batch_size, accelerator)[0], audio.y)
    temperature = calibration["temperature"]
    for key, t in (("test_ece_before", 1.0), ("test_ece_after", temperature)):
        assert calibration[key] == pytest.approx(ece(*scored["test"], t), abs=1e-4)
    assert nll(*scored["valid"], temperature) <= nll(*scored["valid"]) + 1e-9
    assert "test ECE after" in (run_dir / "results.md").read_text()
    assert (fold_dir / "student" / "reliability.png").stat().st_size > 0
    assert model["temperature"] == pytest.approx(calibration["temperature"])
    from export.parity import open_session, probe_signal, run_onnx, run_torch

    clip = probe_signal(16_000, 0)
    onnx_logits = run_onnx(open_session(model_dir / "model.onnx"), [clip])[0][0]
    raw_logits = run_torch(load_student(fold_dir / "student" / "best").eval(), [clip])[0][0]
    assert np.abs(onnx_logits - raw_logits / calibration["temperature"]).max() < 1e-3
    # Dimensions (the demo preset learns them): CCC on validation and test, the teachers'
    # predicted dimensions cached and distilled, the third output exported (not calibrated).
    result = metrics["students"][0]
    assert set(result["test_best"]["ccc"]) == {"arousal", "valence", "dominance"}
    assert set(result["valid_best"]["ccc"]) == {"arousal", "valence", "dominance"}
    assert {"ccc", "dim_ling", "dim_pros"} <= set(history[0]) and "valid_ccc" in history[0]
    # The head learns its training speakers' ratings: 1 - CCC fell by 0.10-0.16 over 3 epochs
    # for seeds 0-2.
    assert history[-1]["ccc"] < history[0]["ccc"] - 0.03
    for teacher in ("ling", "pros"):
        cached = np.load(fold_dir / "targets" / f"{teacher}.npz")
        assert cached["dimensions"].shape == (len(cached["ids"]), 3)
        assert (fold_dir / "teachers" / teacher / "dimensions.npz").is_file()
        stats = json.loads((fold_dir / "targets" / f"{teacher}.json").read_text())
        assert set(stats["dimensions_ccc"]["valid"]) == {"arousal", "valence", "dominance"}
    # Beyond chance (CCC 0) on speakers it never saw: the prosodic teacher's read-out predicts
    # the validation speakers' arousal (CCC 0.56-0.85 for seeds 0-2).
    pros = json.loads((fold_dir / "targets" / "pros.json").read_text())
    assert pros["dimensions_ccc"]["valid"]["arousal"] > 0.3
    assert "test CCC A (best valid)" in (run_dir / "results.md").read_text()
    assert model["dimensions"] == {
        "names": ["arousal", "valence", "dominance"],
        "scale": [1.0, 5.0],
    }
    onnx_out = run_onnx(open_session(model_dir / "model.onnx"), [clip])
    torch_out = run_torch(load_student(fold_dir / "student" / "best").eval(), [clip])
    assert np.abs(onnx_out[2] - torch_out[2]).max() < 1e-4


def test_whisper_student_reports_layer_weights_and_subsets(
    corpus, tmp_path, monkeypatch, tiny_text_model
):
    """A Whisper-encoder student (tiny random config) through the whole recipe: weighted layer
    pooling learned and reported, test UA on the words-only / prosody-only subsets."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    run_dir = tmp_path / "run"
    distill.run(
        _config(
            corpus,
            run_dir,
            "--student_model=tiny-whisper",
            "--weighted_layers=on",
            "--freeze_layers=1",
            "--dim_weight=0",
            f"--ling_model={tiny_text_model}",  # MiniLM: test_end_to_end_writes_every_stage...
        )  # fmt: skip
    )
    result = json.loads((_fold_dir(run_dir) / "student" / "result.json").read_text())
    # dim_weight=0: no dimensions head, no CCC, no teacher dimensions in the targets.
    assert "ccc" not in result["test_best"] and "ccc" not in result["history"][0]
    assert not (_fold_dir(run_dir) / "student" / "best" / "dimensions.pt").exists()
    assert "dimensions" not in np.load(_fold_dir(run_dir) / "targets" / "ling.npz").files
    weights = result["layer_weights"]
    assert len(weights) == 3 and abs(sum(weights) - 1) < 1e-5
    assert weights != [1 / 3] * 3  # learned, not the uniform start
    subsets = result["subsets_last"]
    assert set(subsets) <= {"words_only", "prosody_only"} and subsets
    assert sum(s["n"] for s in subsets.values()) <= result["test_last"]["n"]
    table = (run_dir / "results.md").read_text()
    assert "words_only UA (last)" in table or "prosody_only UA (last)" in table
    assert (run_dir / "layer_weights.png").stat().st_size > 0


def test_killed_run_resumes(corpus, tmp_path, monkeypatch, caplog, tiny_text_model):
    """Interrupt the student after its first epoch; the rerun skips teachers and targets and
    continues the student from epoch 2."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    run_dir = tmp_path / "run"
    cfg = _config(corpus, run_dir, "--variant=ce+ling", f"--ling_model={tiny_text_model}")
    real_scorer = student_stage.scorer
    calls = {"n": 0}

    def dying_scorer(labels):
        score = real_scorer(labels)

        def wrapped(y, logits):
            calls["n"] += 1
            if calls["n"] == 2:  # the validation after epoch 2, before its checkpoint
                raise KeyboardInterrupt
            return score(y, logits)

        return wrapped

    monkeypatch.setattr(student_stage, "scorer", dying_scorer)
    with pytest.raises(KeyboardInterrupt):
        distill.run(cfg)
    fold_dir = _fold_dir(run_dir)
    teacher_file = fold_dir / "teachers" / "ling" / "metrics.json"
    stamp = teacher_file.stat().st_mtime_ns
    assert not (fold_dir / "student" / "result.json").exists()
    assert (fold_dir / "student" / "last" / "trainer.pt").is_file()

    monkeypatch.setattr(student_stage, "scorer", real_scorer)
    with caplog.at_level(logging.INFO, logger="emodistill.training"):
        distill.run(cfg)
    text = (run_dir / "log.txt").read_text()
    assert "ling teacher and targets: done, skipped" in text
    assert "resuming after epoch 1 of 3" in text
    assert teacher_file.stat().st_mtime_ns == stamp
    assert not (fold_dir / "teachers" / "pros").exists()  # ce+ling never needs it
    result = json.loads((fold_dir / "student" / "result.json").read_text())
    assert [h["epoch"] for h in result["history"]] == [1, 2, 3]

    # A third run finds everything done and trains nothing.
    distill.run(cfg)
    assert "student ce+ling seed 0: done, skipped" in (run_dir / "log.txt").read_text()
    # stages.jsonl tells work from what a resumed launch found done (timed figures use work)
    records = [(r["stage"], r.get("skipped")) for r in read_stages(run_dir) if r["stage"] != "data"]
    assert records == [
        # the corpus's own transcripts: nothing to transcribe
        ("transcribe", True), ("teachers", False),  # killed in the student's epoch 2
        ("transcribe", True), ("teachers", True), ("student", False),  # resumed
        ("transcribe", True), ("teachers", True), ("student", True),  # everything done
    ]  # fmt: skip


def test_ablation_table(corpus, tmp_path, monkeypatch, tiny_text_model):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    run_dir = tmp_path / "run"
    # The default variants are all of them; three of them keep the test short.
    assert load_config("demo").variants == [
        "ce_only", "ce+ling", "ce+pros", "logit_only", "embedding_only", "full",
        "full_no_dim_kd", "no_dims",
    ]  # fmt: skip
    variants = "--variants=ce_only,full,no_dims"
    text = f"--ling_model={tiny_text_model}"  # the table, not the text model, is tested here
    metrics = distill.run(
        _config(corpus, run_dir, "--ablation", "--seeds=0,1", "--epochs=1", variants, text)
    )
    students = metrics["summary"]["students"]
    assert list(students) == ["ce_only", "full", "no_dims"]
    # CCC per dimension beside UA/WA, mean +- std over the seeds; no_dims has none.
    assert set(students["full"]) >= {
        f"test_best_ccc_{d}" for d in ("arousal", "valence", "dominance")
    }
    assert not any(k.startswith("test_best_ccc") for k in students["no_dims"])
    no_dims_row = next(
        x for x in (run_dir / "results.md").read_text().splitlines() if "no_dims" in x
    )
    assert no_dims_row.rstrip(" |").endswith("| - | - | - | -")
    assert all(s["runs"] == 2 for s in students.values())
    table = (run_dir / "results.md").read_text()
    for row in ("linguistic teacher", "prosodic teacher", "student: ce_only", "full - ce_only"):
        assert row in table
    fold_dir = _fold_dir(run_dir)
    assert (fold_dir / "student" / "best" / "summary.json").is_file()  # full, seed 0
    assert (fold_dir / "students" / "ce_only-seed1" / "result.json").is_file()
    # Distillation is what tells the variants apart: the full student's loss adds each
    # teacher's KD and embedding terms to its CE (and the CCC term), ce_only's is CE + CCC
    # alone, and from the same start (seed) the two students train differently.
    cfg = load_config("demo")  # the main variant and seed: where each student lives
    for seed in (0, 1):
        full, ce_only = (
            json.loads(
                (student_stage.student_dir(cfg, fold_dir, v, seed) / "result.json").read_text()
            )
            for v in ("full", "ce_only")
        )
        first, plain = full["history"][0], ce_only["history"][0]
        distilled = [f"{term}_{t}" for term in ("kd", "emb") for t in ("ling", "pros")]
        assert all(first[k] > 0 for k in distilled) and not set(distilled) & set(plain)
        dim = full["weights"]["dim"]
        assert first["loss"] > first["ce"] + dim * first["ccc"] + 0.1
        assert plain["loss"] == pytest.approx(plain["ce"] + dim * plain["ccc"], abs=1e-4)
        assert first["ce"] != plain["ce"]

    # A subset of the variants: the finished students are reused and only they are reported.
    metrics = distill.run(
        _config(
            corpus,
            run_dir,
            "--ablation",
            "--seeds=1",
            "--epochs=1",
            "--variants=full,ce_only",
            text,
        )
    )
    assert list(metrics["summary"]["students"]) == ["full", "ce_only"]
    assert "student full seed 1: done, skipped" in (run_dir / "log.txt").read_text()


@pytest.mark.parametrize(
    ("overrides", "flags"),
    [
        ([], []),  # auto: the export writes int8 for Whisper students (the demo's)
        (["--int8"], ["--int8"]),
        (["--int8=false"], ["--no-int8"]),
    ],
)
def test_the_export_stage_asks_for_int8_by_the_config(tmp_path, overrides, flags):
    cfg = load_config("demo", overrides=[f"--export={tmp_path / 'model'}", *overrides])
    command = export_stage.command(cfg, tmp_path / "run", "f1")
    assert [a for a in command if a in ("--int8", "--no-int8")] == flags
    assert ("--int8-max-dimensions-diff=0.05" in command) == (flags != ["--no-int8"])


def test_a_failed_export_fails_the_run_with_its_reason(tmp_path, capfd):
    """``--export`` runs ``python -m export`` as a process of its own (training never imports
    export); a failure stops the run with the export's reason above a line that names it."""
    cfg = load_config(
        "demo", overrides=[f"--export={tmp_path / 'model'}", "--int8", "--int8_max_ua_drop=0.05"]
    )
    assert export_stage.command(cfg, tmp_path / "run", "f1")[1:] == [
        "-m", "export", "--run", str(tmp_path / "run"), "--fold", "f1",
        "--out", str(tmp_path / "model"), "--int8", "--int8-max-ua-drop=0.05",
        "--int8-max-dimensions-diff=0.05", "--int8-max-ccc-drop=0.01",
    ]  # fmt: skip
    with pytest.raises(export_stage.ExportFailed, match="exited with status 1"):
        export_stage.export_model(cfg, tmp_path / "run", "f1")  # no such run: exit 1, not 2
    assert "export failed:" in capfd.readouterr().err
    assert not (tmp_path / "model").exists()
