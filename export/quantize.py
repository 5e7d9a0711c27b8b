"""model.onnx -> model.int8.onnx for CPU: static, calibrated int8 on the weight MatMuls and the
feature encoder's dense convolutions.

Why static: dynamic quantisation computes activation scales over the whole padded batch, so an
utterance's logits depend systematically on its batch mates (5e-2 on hubert-base). Fixed,
calibrated scales remove that dependence, but not all of it: ORT's fp32 ops differ by ~1e-7
between batch shapes (GEMM blocking), and such a difference occasionally moves a value across a
rounding boundary of the int8 grid, a jump of one quantisation step that propagates to the
logits (measured up to ~2e-2 on hubert-base). So the batching drift is measured, and
model.json's ``batch_invariant`` says whether it is within the tolerance; when it is not, the
server runs int8 one utterance at a time (on 2 CPU cores batching gains ~4%, int8 ~1.5x).
Which ops: MatMuls with a weight (the attention products QK^T and AV multiply two activations
whose ranges vary per utterance) and the dense convolutions after the first (static QLinearConv:
on hubert-base 1.9-2.1x fp32 vs 1.4x for MatMuls alone; dynamic ConvInteger, quantize_dynamic's
default, is 2x *slower* than fp32). The first conv (raw audio in) and the grouped positional
conv (a residual branch; no faster in int8) stay fp32.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)

from emocore.audio import MIN_SAMPLES, SAMPLE_RATE
from emocore.model_dir import TOLERANCE, parity_cases
from export.parity import (
    batching_max_abs_diff,
    length_batches,
    open_session,
    pad_batch,
    probe_signal,
    run_onnx,
)
from training.eval.metrics import ccc_per_dimension, compute_metrics

CALIBRATION_MAX = 64  # utterances used for the activation ranges
EVALUATION_MAX = 256  # held-out utterances for the int8 accuracy check
# int8 is shipped only if its UA on the held-out clips is at most this far below fp32's
# (training.config's int8_max_ua_drop sets it for ``--export``).
INT8_MAX_UA_DROP = 0.02
# ... and, for a model with dimensions, only if int8 moves none of them by more than this
# (scale units: 1-5) on those clips, or, where the clips are rated, no dimension's CCC with the
# ratings falls more than INT8_MAX_CCC_DROP below fp32's (training.config's
# int8_max_dimensions_diff and int8_max_ccc_drop).
INT8_MAX_DIMENSIONS_DIFF = 0.05
INT8_MAX_CCC_DROP = 0.01
METHOD = (
    "onnxruntime quantize_static, QDQ, weight MatMuls + dense convs after the first, "
    "per-channel int8 weights, "
    "uint8 activations with MinMax-calibrated static scales"
)


class RowsReader(CalibrationDataReader):
    """Feeds one utterance at a time, as the server would see it alone."""

    def __init__(self, rows: Sequence[np.ndarray]):
        self._rows = iter(rows)

    def get_next(self) -> dict | None:
        row = next(self._rows, None)
        if row is None:
            return None
        audio, lengths = pad_batch([row])
        return {"audio": audio, "lengths": lengths}


def quantized_nodes(model: onnx.ModelProto) -> list[str]:
    """MatMuls with a weight, and ungrouped Convs whose weight has more than one input channel."""
    weights = {init.name: init for init in model.graph.initializer}
    chosen = []
    for node in model.graph.node:
        weight = weights.get(node.input[1]) if len(node.input) > 1 else None
        if weight is None:
            continue
        if node.op_type == "MatMul":
            chosen.append(node.name)
        elif node.op_type == "Conv":
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            if group == 1 and weight.dims[1] > 1:
                chosen.append(node.name)
    return chosen


def synthetic_calibration(count: int = 16) -> list[np.ndarray]:
    """For tests and untrained models only: export_run passes real validation audio."""
    lengths = np.linspace(SAMPLE_RATE // 2, 6 * SAMPLE_RATE, count).astype(int)
    return [probe_signal(int(n), seed=500 + i) for i, n in enumerate(lengths)]


def quantize(
    fp32_path: Path,
    int8_path: Path,
    calibration: Sequence[np.ndarray],
    nodes: Sequence[str] | None = None,
    **options,
) -> Path:
    """The shipped int8 recipe; ``nodes`` (default: ``quantized_nodes``) and ``options`` (to
    ``quantize_static``) vary it for the sensitivity study (benchmarks/int8_sensitivity.py)."""
    chosen = quantized_nodes(onnx.load(str(fp32_path))) if nodes is None else list(nodes)
    recipe = dict(
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=["MatMul", "Conv"],
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
    )
    quantize_static(
        str(fp32_path),
        str(int8_path),
        RowsReader(list(calibration)[:CALIBRATION_MAX]),
        nodes_to_quantize=chosen,
        **(recipe | options),
    )
    return int8_path


def predict_outputs(session, rows: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Every output (logits, embedding, dimensions if any) per utterance, one at a time: how a
    server runs a model that is not batch-invariant (and on CPU batching gains little)."""
    alone = [run_onnx(session, [row]) for row in rows]
    return [np.concatenate(parts) for parts in zip(*alone, strict=True)]


def predict_logits(session, rows: Sequence[np.ndarray]) -> np.ndarray:
    """Logits per utterance, one at a time (``predict_outputs``)."""
    return predict_outputs(session, rows)[0]


def unweighted_accuracy(logits: np.ndarray, targets: Sequence[int]) -> float:
    classes = range(logits.shape[1])
    return compute_metrics(list(targets), logits.argmax(1).tolist(), classes)["ua"]


def quantize_model(
    fp32_path: Path,
    int8_path: Path,
    calibration: Sequence[np.ndarray] | None,
    labels: Sequence[int] | None = None,
    tolerance: float = TOLERANCE,
    min_samples: int = MIN_SAMPLES,
    check: dict | None = None,
    max_ua_drop: float = INT8_MAX_UA_DROP,
    calibration_info: dict | None = None,
    max_dimensions_diff: float = INT8_MAX_DIMENSIONS_DIFF,
    max_ccc_drop: float = INT8_MAX_CCC_DROP,
) -> dict:
    """Write the int8 model and measure it against fp32: the model.json "int8" entry.
    ``min_samples``: the model's shortest legal input (model.json), the shortest row fed.

    ``check`` ({"audio", "labels", "speakers"} and, for rated clips, "dimensions" [N, 3]:
    held-out clips, none of them calibration clips) is what the accuracy figures are measured
    on, and it gates: when int8's UA there is more than ``max_ua_drop`` below fp32's, or int8
    moves a dimension by more than ``max_dimensions_diff`` while no ratings show its CCC within
    ``max_ccc_drop`` of fp32's, the entry says ``accepted: false`` with the reason and the
    caller must not ship the file. Without ``check`` (direct calls, tests) the figures are
    measured on the calibration clips with ``labels``, as before, and gate nothing.
    """
    source = "validation audio" if calibration else "synthetic signals (no validation audio given)"
    if calibration_info:
        source = f"{calibration_info['source']} audio of {', '.join(calibration_info['speakers'])}"
    rows = list(calibration) if calibration else synthetic_calibration()
    quantize(fp32_path, int8_path, rows)
    fp32, int8 = open_session(fp32_path), open_session(int8_path)
    gated = bool(check and check["audio"])
    ratings = None
    if gated:
        rows, labels, ratings = list(check["audio"]), check["labels"], check.get("dimensions")
    fp32_out, int8_out = predict_outputs(fp32, rows), predict_outputs(int8, rows)
    fp32_logits, int8_logits = fp32_out[0], int8_out[0]
    batching = max(
        batching_max_abs_diff(int8, [probe_signal(n, seed=900 + i) for i, n in enumerate(case)])
        for case in parity_cases(min_samples)
        if len(case) > 1
    )
    # ... and on the clips themselves, batched as the server batches them: real audio moved
    # Whisper int8 by up to 6e-2 between batch shapes where the probe signals showed 1e-6
    # (an fp32 difference of ~1e-6 upstream that crosses a rounding boundary of the int8 grid).
    clip_batching = max(
        (batching_max_abs_diff(int8, batch) for batch in length_batches(rows) if len(batch) > 1),
        default=0.0,
    )
    agreement = (fp32_logits.argmax(1) == int8_logits.argmax(1)).mean()
    ua_fp32 = unweighted_accuracy(fp32_logits, labels) if labels is not None else None
    ua_int8 = unweighted_accuracy(int8_logits, labels) if labels is not None else None
    n_calibration = min(len(list(calibration) if calibration else rows), CALIBRATION_MAX)
    entry = {
        "argmax_agreement": float(agreement),
        "ua_fp32": ua_fp32,
        "ua_int8": ua_int8,
        "batching_max_abs_diff": max(batching, clip_batching),
        "batching_max_abs_diff_clips": clip_batching,
        "batch_invariant": max(batching, clip_batching) <= tolerance,
        "method": f"{METHOD}; calibrated on {n_calibration} utterances of {source}",
        "evaluated_on": len(rows),
        # False: the figures come from held-out clips and gated the file (a server's
        # EMODISTILL_INT8=auto serves only such an int8 model)
        "evaluated_on_calibration_clips": not gated,
        "accepted": True,
    }
    dimensions = None
    if len(fp32_out) > 2:  # the dimensions output: how far int8 moves it (scale units)
        dimensions = dimension_figures(fp32_out[2], int8_out[2], ratings)
        entry |= dimensions
    if gated:
        entry["evaluation_speakers"] = check["speakers"]
        entry["max_ua_drop"] = max_ua_drop
        reasons = []
        if ua_fp32 - ua_int8 > max_ua_drop:
            reasons.append(
                f"int8 UA {ua_int8:.3f} is {ua_fp32 - ua_int8:.3f} below fp32's {ua_fp32:.3f} "
                f"(allowed: {max_ua_drop})"
            )
        if dimensions is not None:
            entry |= {"max_dimensions_diff": max_dimensions_diff, "max_ccc_drop": max_ccc_drop}
            if (
                why := dimensions_refusal(dimensions, max_dimensions_diff, max_ccc_drop)
            ) is not None:
                reasons.append(why)
        if reasons:
            entry["accepted"] = False
            entry["reason"] = (
                f"{'; '.join(reasons)} on {len(rows)} held-out clips; model.int8.onnx not shipped"
            )
    return entry


def dimension_figures(
    fp32: np.ndarray, int8: np.ndarray, ratings: np.ndarray | None
) -> dict[str, object]:
    """How far int8 moves the dimensions (max over clips and dimensions, scale units) and,
    when the clips are rated, each dimension's CCC with the ratings for fp32 and int8."""
    figures: dict[str, object] = {"dimensions_max_abs_diff": float(np.abs(fp32 - int8).max())}
    if ratings is not None:
        ratings = np.asarray(ratings, dtype=np.float64)
        if (~np.isnan(ratings).any(-1)).sum() >= 2:
            figures["dimensions_ccc_fp32"] = ccc_per_dimension(fp32, ratings)
            figures["dimensions_ccc_int8"] = ccc_per_dimension(int8, ratings)
    return figures


def dimensions_refusal(figures: dict, max_diff: float, max_ccc_drop: float) -> str | None:
    """Why int8's dimensions are refused (None: within ``max_diff`` of fp32, or no dimension's
    CCC with the ratings more than ``max_ccc_drop`` below fp32's)."""
    diff = figures["dimensions_max_abs_diff"]
    if diff <= max_diff:
        return None
    ccc_fp32, ccc_int8 = figures.get("dimensions_ccc_fp32"), figures.get("dimensions_ccc_int8")
    if ccc_fp32 is not None:
        drop = max(a - b for a, b in zip(ccc_fp32, ccc_int8, strict=True))
        if drop <= max_ccc_drop:
            return None
        return (
            f"int8 moves the dimensions by up to {diff:.3f} (allowed: {max_diff}) and lowers a "
            f"dimension's CCC by {drop:.3f} (allowed: {max_ccc_drop})"
        )
    return f"int8 moves the dimensions by up to {diff:.3f} (allowed: {max_diff}; clips unrated)"
