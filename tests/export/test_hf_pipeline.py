import json
import os
import subprocess
import sys

import numpy as np
import pytest
from transformers import pipeline

from export.parity import open_session, probe_signal, run_onnx


@pytest.mark.parametrize("seconds", [0.5, 3.0])
def test_hf_pipeline_agrees_with_onnx(student_and_dir, seconds):
    student, out = student_and_dir
    classify = pipeline("audio-classification", model=str(out / "hf"), device="cpu")
    # Quiet with a DC offset: only agrees if the pipeline normalises like the graph does.
    audio = 0.01 * probe_signal(int(seconds * 16_000), seed=7) + 0.2
    scores = classify({"raw": audio, "sampling_rate": 16_000}, top_k=None)
    by_label = {s["label"]: s["score"] for s in scores}
    logits = run_onnx(open_session(out / "model.onnx"), [audio])[0][0]
    assert set(by_label) == set(student.labels)
    # Scores are a softmax: log-scores equal the logits up to a constant, so compare centred.
    hf = np.log([by_label[label] for label in student.labels])
    assert np.abs((hf - hf.mean()) - (logits - logits.mean())).max() <= 1e-4
    assert int(np.argmax(hf)) == int(np.argmax(logits))


MODEL_CODE = {"tiny-mel": "mel_hubert.py", "tiny-whisper": "whisper_encoder.py"}

# A process that cannot import this package: it loads hf/ with trust_remote_code and writes the
# logits of one request (a JSON line: model folder, audio .npy, logits .npy) per line of stdin.
CLEAN_PROCESS = """\
import json, sys, traceback
class NoTraining:  # this package cannot be imported in this process
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('training', 'export', 'server'):
            raise ImportError(name)
sys.meta_path.insert(0, NoTraining())
import numpy as np, torch
from transformers import AutoFeatureExtractor, AutoModelForAudioClassification
for line in sys.stdin:
    try:
        path, audio, out = json.loads(line)
        model = AutoModelForAudioClassification.from_pretrained(path, trust_remote_code=True)
        extract = AutoFeatureExtractor.from_pretrained(path)
        inputs = extract(np.load(audio), sampling_rate=16000, return_tensors='pt')
        with torch.no_grad():
            logits = model(inputs['input_values']).logits[0].numpy()
        np.save(out, logits)
        print('ok', flush=True)
    except Exception:
        print(json.dumps(traceback.format_exc()), flush=True)
"""


@pytest.fixture(scope="module")
def clean_process(tmp_path_factory):
    """One such process for both students (its torch and transformers imports took ~5 s a
    process on 2 cores)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", CLEAN_PROCESS], cwd=tmp_path_factory.mktemp("clean"), env=env,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    yield proc
    proc.stdin.close()
    assert proc.wait(timeout=60) == 0


@pytest.mark.parametrize("student_and_dir", list(MODEL_CODE), indirect=True)
def test_log_mel_checkpoint_loads_without_this_package(
    student_and_dir, tmp_path, request, clean_process
):
    """hf/ of the log-mel and Whisper students carries its model code (auto_map): a process
    that never imports `training` loads it with trust_remote_code and gets the ONNX logits."""
    student, out = student_and_dir
    assert (out / "hf" / MODEL_CODE[request.node.callspec.params["student_and_dir"]]).is_file()
    audio = probe_signal(16_000, seed=3)
    np.save(tmp_path / "audio.npy", audio)
    job = [str(out / "hf"), str(tmp_path / "audio.npy"), str(tmp_path / "logits.npy")]
    clean_process.stdin.write(json.dumps(job) + "\n")
    clean_process.stdin.flush()
    reply = clean_process.stdout.readline().strip()
    assert reply == "ok", json.loads(reply) if reply else "the process exited"
    logits = run_onnx(open_session(out / "model.onnx"), [audio])[0][0]
    assert np.abs(np.load(tmp_path / "logits.npy") - logits).max() <= 1e-4
