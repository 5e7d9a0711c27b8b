import json

import pytest
import soundfile as sf

from export.__main__ import main
from export.parity import probe_signal
from training.data.utterance import EMOTIONS, Utterance, write_jsonl
from training.models.student import save_student


def fake_run(run_dir, make_student, folds=("1", "2"), student="tiny", train=0):
    """A run directory per the contract: two folds with a saved student, summary and valid.jsonl
    (and ``train`` training clips of two other speakers in train.jsonl)."""
    for k, fold in enumerate(folds):
        best = run_dir / "folds" / fold / "student" / "best"
        save_student(make_student(student), best)
        scores = {"ua": 0.5 + 0.1 * k, "wa": 0.5, "macro_f1": 0.5}
        summary = {
            "dataset": "synthetic", "protocol": "speaker-independent", "fold": fold,
            "backbone": "tiny", "epoch": 3, "labels": list(EMOTIONS), "valid": scores,
            "test": scores, "seed": 0, "variant": "distill",
            "corpora": [{"name": "tess", "licence": "CC BY-NC-ND 4.0"}], "usage": "non-commercial",
        }  # fmt: skip
        (best / "summary.json").write_text(json.dumps(summary))
        utterances = []
        for i in range(8):
            path = run_dir / "audio" / f"{fold}_{i}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, probe_signal(4_000 + 2_000 * i, seed=i), 16_000, subtype="PCM_16")
            speaker = f"spk{i // 4}"  # two validation speakers, 4 clips each, in speaker order
            utterances.append(Utterance(f"{fold}_{i}", str(path), EMOTIONS[i % 4], speaker=speaker))
        write_jsonl(utterances, run_dir / "folds" / fold / "valid.jsonl")
        if train:
            clips = []
            for i in range(train):
                path = run_dir / "audio" / f"{fold}_train_{i}.wav"
                sf.write(path, probe_signal(6_000 + 500 * i, seed=50 + i), 16_000, subtype="PCM_16")
                clips.append(
                    Utterance(f"{fold}_t{i}", str(path), EMOTIONS[i % 4], speaker=f"tr{i % 2}")
                )
            write_jsonl(clips, run_dir / "folds" / fold / "train.jsonl")


def test_cli_does_not_choose_between_folds_by_validation_ua(tmp_path, make_student, capsys):
    """Each fold validates on other speakers; its UA does not pick the fold."""
    fake_run(tmp_path / "run", make_student)
    assert main(["--run", str(tmp_path / "run"), "--out", str(tmp_path / "m")]) == 1
    err = capsys.readouterr().err
    assert "2 folds (1, 2)" in err and "--fold" in err and "--protocol=final" in err
    assert not (tmp_path / "m").exists()


def test_cli_exports_named_fold_with_int8_and_triton(tmp_path, make_student, capsys):
    fake_run(tmp_path / "run", make_student)
    out, triton = tmp_path / "models" / "demo", tmp_path / "triton"
    args = ["--run", str(tmp_path / "run"), "--fold", "1", "--out", str(out), "--int8"]
    assert main([*args, "--triton", str(triton)]) == 0
    meta = json.loads((out / "model.json").read_text())
    assert meta["training"]["fold"] == "1"
    assert meta["backbone"] == "tiny"
    # The training corpora's terms, at the top where /v1/model and the web page read them.
    assert meta["usage"] == "non-commercial" and meta["corpora"][0]["name"] == "tess"
    int8 = meta["int8"]
    # Calibration and the accuracy check: disjoint halves, both spanning both speakers (the
    # first 64 validation clips had been one speaker's, and the check had included them).
    assert int8["evaluated_on"] == 4 and not int8["evaluated_on_calibration_clips"]
    assert int8["evaluation_speakers"] == ["spk0", "spk1"]
    assert "4 utterances of validation audio of spk0, spk1" in int8["method"]
    assert 0 <= int8["ua_int8"] <= 1 and int8["accepted"] is True
    assert (out / "model.int8.onnx").is_file()
    assert (out / "hf" / "config.json").exists()
    assert (triton / "emodistill" / "config.pbtxt").exists()
    assert "wrote" in capsys.readouterr().out


def test_cli_reports_missing_fold(tmp_path, make_student, capsys):
    fake_run(tmp_path / "run", make_student, folds=("1",))
    args = ["--run", str(tmp_path / "run"), "--fold", "7", "--out", str(tmp_path / "m")]
    assert main(args) == 1
    assert "fold '7'" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_int8_that_loses_accuracy_is_not_shipped(tmp_path, make_student):
    """The held-out accuracy check gates (here with an impossible allowance)."""
    from export.run import export_run

    fake_run(tmp_path / "run", make_student, folds=("1",))
    out = export_run(tmp_path / "run", tmp_path / "m", int8=True, int8_max_ua_drop=-1.0)
    meta = json.loads((out / "model.json").read_text())
    assert meta["int8"]["accepted"] is False and "not shipped" in meta["int8"]["reason"]
    assert "model.int8.onnx" not in meta["files"] and not (out / "model.int8.onnx").exists()


def test_the_final_fold_is_chosen_without_a_name(tmp_path, make_student):
    """A run with a model trained on every speaker (--protocol=final) exports that one."""
    from export.run import choose_fold

    fake_run(tmp_path / "run", make_student, folds=("Ses01", "final"))
    assert choose_fold(tmp_path / "run", None).name == "final"


def test_int8_calibrates_on_training_clips_and_checks_every_validation_clip(tmp_path, make_student):
    """Calibration needs no held-out clips, the check does: all of them count (a finer UA
    resolution), and the int8 model's batching is measured on those real clips too."""
    from export.run import export_run

    fake_run(tmp_path / "run", make_student, folds=("1",), train=6)
    out = export_run(tmp_path / "run", tmp_path / "m", int8=True)
    int8 = json.loads((out / "model.json").read_text())["int8"]
    assert "6 utterances of training audio of tr0, tr1" in int8["method"]
    assert int8["evaluated_on"] == 8 and int8["evaluation_speakers"] == ["spk0", "spk1"]
    assert not int8["evaluated_on_calibration_clips"]
    assert int8["batching_max_abs_diff"] >= int8["batching_max_abs_diff_clips"] >= 0
    assert int8["batch_invariant"] == (int8["batching_max_abs_diff"] <= 1e-4)


@pytest.mark.parametrize(("student", "written"), [("tiny", False), ("tiny-whisper", True)])
def test_whisper_students_get_int8_unless_told(tmp_path, make_student, student, written):
    from export.run import export_run

    fake_run(tmp_path / "run", make_student, folds=("1",), student=student, train=4)
    out = export_run(tmp_path / "run", tmp_path / "m")  # int8 not named: auto
    meta = json.loads((out / "model.json").read_text())
    assert (meta["int8"] is not None) == written
    assert ("model.int8.onnx" in meta["files"]) == (written and meta["int8"]["accepted"])
    out = export_run(tmp_path / "run", tmp_path / "m", int8=False)
    assert json.loads((out / "model.json").read_text())["int8"] is None
