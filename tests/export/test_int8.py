import hashlib
import json

import numpy as np
import onnx
import pytest

from export import build_model_dir
from export.parity import open_session, probe_signal, run_onnx
from export.quantize import predict_logits, unweighted_accuracy

INT8_KEYS = {"argmax_agreement", "ua_fp32", "ua_int8", "batching_max_abs_diff", "method"}


@pytest.fixture(scope="module")
def int8_dir(tmp_path_factory):
    import torch

    from training.data.utterance import EMOTIONS
    from training.student import Student, build_classifier

    torch.manual_seed(0)
    student = Student(build_classifier("tiny", EMOTIONS)).eval()
    rng = np.random.default_rng(0)
    audio = [probe_signal(int(n), seed=i) for i, n in enumerate(rng.integers(400, 60_000, 24))]
    labels = [i % 4 for i in range(len(audio))]
    out = build_model_dir(
        student,
        tmp_path_factory.mktemp("int8") / "model",
        int8=True,
        calibration=audio,
        calibration_labels=labels,
        hf=False,
    )
    return out, audio, labels


def test_int8_recorded_and_reproducible(int8_dir):
    out, audio, labels = int8_dir
    meta = json.loads((out / "model.json").read_text())
    int8 = meta["int8"]
    assert INT8_KEYS <= set(int8)
    data = (out / "model.int8.onnx").read_bytes()
    assert meta["files"]["model.int8.onnx"]["sha256"] == hashlib.sha256(data).hexdigest()
    fp32 = predict_logits(open_session(out / "model.onnx"), audio).argmax(1)
    q8 = predict_logits(open_session(out / "model.int8.onnx"), audio).argmax(1)
    assert int8["argmax_agreement"] == pytest.approx(float((fp32 == q8).mean()))
    assert int8["ua_fp32"] == pytest.approx(unweighted_accuracy(fp32, np.array(labels)))
    assert int8["ua_int8"] == pytest.approx(unweighted_accuracy(q8, np.array(labels)))


def test_int8_is_quantised_matmul_only(int8_dir):
    out, _, _ = int8_dir
    ops = {n.op_type for n in onnx.load(str(out / "model.int8.onnx")).graph.node}
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    assert "ConvInteger" not in ops and "DynamicQuantizeLinear" not in ops


def test_int8_batching_is_exact(int8_dir):
    """Static scales: a row's int8 logits do not depend on its batch mates."""
    out, _, _ = int8_dir
    session = open_session(out / "model.int8.onnx")
    rows = [probe_signal(n, seed=40 + i) for i, n in enumerate((400, 31_000, 7_777, 90_000))]
    logits = run_onnx(session, rows)[0]
    for i, row in enumerate(rows):
        assert np.abs(logits[i] - run_onnx(session, [row])[0][0]).max() <= 1e-4
    meta = json.loads((out / "model.json").read_text())
    assert meta["int8"]["batch_invariant"] is True
    assert meta["int8"]["batching_max_abs_diff"] <= 1e-4
