"""A tiny hand-built ONNX model directory with the served contract (audio + lengths in, logits +
embedding out): its answer is a linear map of two statistics of each row's valid samples.

With ``gain_invariant`` the statistics are those of |x| / max|x| (a gain cancels exactly, up to
float rounding); without it, of |x| itself (a gain moves every answer)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

LABELS = ["neutral", "happy", "angry", "sad"]
WEIGHTS = np.array([[8.0, -4.0, 2.0, -6.0], [-10.0, 6.0, 1.0, 3.0]], np.float32)
BIAS = np.array([0.5, 0.0, -0.5, 0.2], np.float32)


def _graph(gain_invariant: bool) -> onnx.ModelProto:
    n = helper.make_node
    axis = numpy_helper.from_array(np.array([1], np.int64), "axis")
    nodes = [
        n("Shape", ["audio"], ["shape"]),
        n("Gather", ["shape", "one"], ["width"], axis=0),
        n("Range", ["zero", "width", "one"], ["steps"]),
        n("Unsqueeze", ["steps", "zero_axis"], ["steps_row"]),
        n("Unsqueeze", ["lengths", "axis"], ["lengths_col"]),
        n("Less", ["steps_row", "lengths_col"], ["valid"]),
        n("Cast", ["valid"], ["mask"], to=TensorProto.FLOAT),
        n("Abs", ["audio"], ["magnitude"]),
        n("Mul", ["magnitude", "mask"], ["masked"]),
        n("ReduceSum", ["mask", "axis"], ["count"], keepdims=1),
    ]
    if gain_invariant:
        nodes += [
            n("ReduceMax", ["masked"], ["peak"], axes=[1], keepdims=1),
            n("Div", ["masked", "peak"], ["level"]),
        ]
    else:
        nodes.append(n("Identity", ["masked"], ["level"]))
    nodes += [
        n("Mul", ["level", "level"], ["power"]),
        n("ReduceSum", ["level", "axis"], ["sum1"], keepdims=1),
        n("ReduceSum", ["power", "axis"], ["sum2"], keepdims=1),
        n("Div", ["sum1", "count"], ["mean1"]),
        n("Div", ["sum2", "count"], ["mean2"]),
        n("Concat", ["mean1", "mean2"], ["embedding"], axis=1),
        n("MatMul", ["embedding", "weights"], ["product"]),
        n("Add", ["product", "bias"], ["logits"]),
    ]
    constants = [
        axis,
        numpy_helper.from_array(np.array([0], np.int64), "zero_axis"),
        numpy_helper.from_array(np.array(0, np.int64), "zero"),
        numpy_helper.from_array(np.array(1, np.int64), "one"),
        numpy_helper.from_array(WEIGHTS, "weights"),
        numpy_helper.from_array(BIAS, "bias"),
    ]
    graph = helper.make_graph(
        nodes,
        "fake",
        [
            helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["batch", "samples"]),
            helper.make_tensor_value_info("lengths", TensorProto.INT64, ["batch"]),
        ],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 4]),
            helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", 2]),
        ],
        constants,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def make_model_dir(folder: Path, *, gain_invariant: bool = True, max_samples=None) -> Path:
    """model.onnx + model.json (format 1) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    data = _graph(gain_invariant).SerializeToString()
    (folder / "model.onnx").write_bytes(data)
    meta = {
        "format_version": 1,
        "labels": LABELS,
        "sample_rate": 16_000,
        "min_samples": 400,
        "max_samples": max_samples,
        "backbone": "fake-gain-invariant" if gain_invariant else "fake-gain-sensitive",
        "temperature": None,
        "files": {"model.onnx": {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}},
        "training": {"dataset": "corpora", "protocol": "corpus", "fold": "corpus", "epoch": 2},
    }
    (folder / "model.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
    return folder
