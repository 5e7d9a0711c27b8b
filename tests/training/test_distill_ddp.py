"""``torchrun --nproc_per_node 2 -m training.distill``: two gloo processes on CPU."""

import json
import os
import subprocess
import sys


def test_two_process_gloo_run(corpus, tiny_text_model, tmp_path):
    # The shared corpus of the training tests (64 utterances, the demo's 16 voices) and its
    # prosody cache (tests/training/conftest.py); a tiny local BERT as the text teacher. The
    # student stays the demo preset's (whisper-tiny.en, two layers frozen, weighted layers).
    run_dir = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "training.distill", "--preset", "demo", f"--data_path={corpus}", "--synth_n=64",
        "--synth_seed=0", f"--run_dir={run_dir}", f"--prosody_cache={corpus / 'prosody'}",
        f"--ling_model={tiny_text_model}", "--ling_epochs=1", "--ling_batch_size=64", "--pros_epochs=1", "--pros_hidden=16",
        "--epochs=2", "--batch_size=4", "--max_seconds=0.5", "--threads=1",
        # caps: the test is about the processes (rank 0 alone trains the teachers, both ranks
        # train and score the student), not about what is learnt
        "--ling_max_tokens=16", "--teacher_max_steps=2", "--max_steps=2",
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.getcwd()}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = (run_dir / "log.txt").read_text()
    assert "2 process(es)" in log
    assert log.count("EmoDistill run") == 1  # only rank 0 writes the log
    (fold_dir,) = (run_dir / "folds").iterdir()
    result = json.loads((fold_dir / "student" / "result.json").read_text())
    assert [h["epoch"] for h in result["history"]] == [1, 2]
    # Both ranks evaluated half of the test set each; the gathered predictions cover all of it.
    assert sum(map(sum, result["test_best"]["confusion"])) == len(
        (fold_dir / "test.jsonl").read_text().splitlines()
    )
    assert (run_dir / "results.md").is_file()
