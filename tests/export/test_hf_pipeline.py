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
