import json

import soundfile as sf

from export.__main__ import main
from export.parity import probe_signal
from training.data.utterance import EMOTIONS, Utterance, write_jsonl
from training.student import save_student


def fake_run(run_dir, make_student, folds=("1", "2")):
    """A run directory per the contract: two folds with a saved student, summary and valid.jsonl."""
    for k, fold in enumerate(folds):
        best = run_dir / "folds" / fold / "student" / "best"
        save_student(make_student("tiny"), best)
        scores = {"ua": 0.5 + 0.1 * k, "wa": 0.5, "macro_f1": 0.5}
        summary = {
            "dataset": "synthetic", "protocol": "speaker-independent", "fold": fold,
            "backbone": "tiny", "epoch": 3, "labels": list(EMOTIONS), "valid": scores,
            "test": scores, "seed": 0, "variant": "distill",
        }  # fmt: skip
        (best / "summary.json").write_text(json.dumps(summary))
        utterances = []
        for i in range(8):
            path = run_dir / "audio" / f"{fold}_{i}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, probe_signal(4_000 + 2_000 * i, seed=i), 16_000, subtype="PCM_16")
            utterances.append(Utterance(f"{fold}_{i}", str(path), EMOTIONS[i % 4]))
        write_jsonl(utterances, run_dir / "folds" / fold / "valid.jsonl")


def test_cli_exports_best_fold_with_int8_and_triton(tmp_path, make_student, capsys):
    fake_run(tmp_path / "run", make_student)
    out, triton = tmp_path / "models" / "demo", tmp_path / "triton"
    args = ["--run", str(tmp_path / "run"), "--out", str(out), "--int8", "--triton", str(triton)]
    assert main(args) == 0
    meta = json.loads((out / "model.json").read_text())
    assert meta["training"]["fold"] == "2"  # the higher validation UA
    assert meta["backbone"] == "tiny"
    assert meta["int8"]["evaluated_on"] == 8 and 0 <= meta["int8"]["ua_int8"] <= 1
    assert "validation audio" in meta["int8"]["method"]
    assert (out / "hf" / "config.json").exists()
    assert (triton / "emodistill" / "config.pbtxt").exists()
    assert "wrote" in capsys.readouterr().out


def test_cli_reports_missing_fold(tmp_path, make_student, capsys):
    fake_run(tmp_path / "run", make_student, folds=("1",))
    args = ["--run", str(tmp_path / "run"), "--fold", "7", "--out", str(tmp_path / "m")]
    assert main(args) == 1
    assert "fold '7'" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()
