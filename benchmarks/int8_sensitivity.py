"""Where int8 moves a trained Whisper student's outputs, and why its batches are not exact.

    PYTHONPATH=. python benchmarks/int8_sensitivity.py --run runs/demo --model models/demo
        [--out benchmarks/results/int8_sensitivity.json]

On the export's own int8 sets (``export.run.int8_sets``: calibration from training clips, the
check on the validation clips), for model.onnx:
  * variants of the int8 recipe, one model each, against fp32 on the check clips: the recipe as
    shipped; only one encoder layer quantised; only the convolutions; only the projection after
    pooling; one kind of operator left fp32 in every layer; the first layer and the
    convolutions left fp32; SmoothQuant (per-channel scales folded into each LayerNorm and the
    MatMuls it feeds, alpha 0.5); symmetric int8 activations. Each: the dimensions' largest and
    mean difference (1-5 scale), the logits' largest, the share of equal labels;
  * every quantised operator's input on the calibration clips: range, RMS and the signal to
    uint8-rounding-noise ratio of the recipe's MinMax scale; each LayerNorm output's per-channel
    largest magnitude, max / median (the outliers SmoothQuant addresses);
  * batches of 8 clips cropped to one length against each clip alone, fp32 and int8, with one
    and two ONNX Runtime threads: padding is not the only source of the batching drift.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from export.parity import open_session, pad_batch, run_onnx  # noqa: E402
from export.quantize import predict_outputs, quantize, quantized_nodes  # noqa: E402
from export.run import choose_fold, int8_sets  # noqa: E402

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "int8_sensitivity.json"
KINDS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")
SMOOTHQUANT_ALPHA = 0.5


def layer_of(node: str) -> int | None:
    match = re.search(r"layers\.(\d+)/", node)
    return int(match.group(1)) if match else None


def variants(nodes: list[str]) -> dict[str, tuple[list[str], dict]]:
    """name -> (nodes quantised, quantize_static options)."""
    from onnxruntime.quantization import QuantType

    layers = sorted({layer_of(n) for n in nodes if layer_of(n) is not None})
    is_conv = [n for n in nodes if "conv" in n.lower()]
    chosen: dict[str, tuple[list[str], dict]] = {"as shipped": (nodes, {})}
    for layer in layers:
        chosen[f"only layer {layer}"] = ([n for n in nodes if layer_of(n) == layer], {})
    chosen["only the convolutions"] = (is_conv, {})
    chosen["only the projection"] = ([n for n in nodes if "projector" in n], {})
    for kind in KINDS:
        chosen[f"{kind} fp32"] = ([n for n in nodes if f"/{kind}/" not in n], {})
    first = [n for n in nodes if layer_of(n) != layers[0] and n not in is_conv]
    chosen[f"layer {layers[0]} and convolutions fp32"] = (first, {})
    symmetric = {"activation_type": QuantType.QInt8, "extra_options": {"ActivationSymmetric": True}}
    chosen["symmetric int8 activations"] = (nodes, symmetric)
    return chosen


def with_outputs(model: onnx.ModelProto, names: list[str]) -> ort.InferenceSession:
    """A session that also returns the named intermediate tensors."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for name in names:
        probe.graph.output.append(
            onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
        )
    return ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])


def layernorm_feeds(model: onnx.ModelProto) -> list[tuple[onnx.NodeProto, list[onnx.NodeProto]]]:
    """LayerNorms whose output feeds only weight MatMuls (and Shape ops): SmoothQuant's pairs."""
    weights = {i.name for i in model.graph.initializer}
    users: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    pairs = []
    for node in model.graph.node:
        if node.op_type != "LayerNormalization" or not set(node.input[1:3]) <= weights:
            continue
        fed = users.get(node.output[0], [])
        matmuls = [u for u in fed if u.op_type == "MatMul" and u.input[1] in weights]
        if matmuls and all(u.op_type in ("MatMul", "Shape") for u in fed):
            pairs.append((node, matmuls))
    return pairs


def channel_max(model: onnx.ModelProto, names: list[str], rows) -> dict[str, np.ndarray]:
    session = with_outputs(model, names)
    found = {name: 0.0 for name in names}
    for row in rows:
        audio, lengths = pad_batch([row])
        for name, out in zip(
            names, session.run(names, {"audio": audio, "lengths": lengths}), strict=True
        ):
            found[name] = np.maximum(found[name], np.abs(out).reshape(-1, out.shape[-1]).max(0))
    return found


def smoothquant(model_path: Path, out: Path, rows, alpha: float) -> tuple[Path, dict]:
    """model.onnx with SmoothQuant's per-channel scales s = max|x|^a / max|w|^(1-a) folded into
    each LayerNorm (scale and bias / s) and the MatMuls it feeds (weight rows * s): the same
    function in fp32, flatter activations for int8. Also returns each LayerNorm's max/median."""
    model = onnx.load(str(model_path))
    inits = {i.name: i for i in model.graph.initializer}
    pairs = layernorm_feeds(model)
    largest = channel_max(model, [norm.output[0] for norm, _ in pairs], rows)
    ratios = {}
    for norm, matmuls in pairs:
        x = largest[norm.output[0]]
        ratios[norm.name] = float(x.max() / np.median(x))
        weights = [numpy_helper.to_array(inits[m.input[1]]) for m in matmuls]
        w = np.abs(np.concatenate(weights, 1)).max(1)
        s = np.clip(x, 1e-5, None) ** alpha / np.clip(w, 1e-5, None) ** (1 - alpha)
        for name in norm.input[1:3]:
            scaled = (numpy_helper.to_array(inits[name]) / s).astype(np.float32)
            inits[name].CopyFrom(numpy_helper.from_array(scaled, name))
        for matmul, weight in zip(matmuls, weights, strict=True):
            scaled = (weight * s[:, None]).astype(np.float32)
            inits[matmul.input[1]].CopyFrom(numpy_helper.from_array(scaled, matmul.input[1]))
    onnx.save(model, str(out))
    return out, ratios


def input_snr(model_path: Path, rows) -> dict[str, dict]:
    """Each quantised operator's input over the calibration rows: range, RMS, and the ratio of
    its RMS to the rounding noise of a uint8 grid over that range (step / sqrt 12), in dB."""
    model = onnx.load(str(model_path))
    by_name = {n.name: n for n in model.graph.node}
    nodes = quantized_nodes(model)
    inputs = list(dict.fromkeys(by_name[n].input[0] for n in nodes))
    session = with_outputs(model, inputs)
    low = dict.fromkeys(inputs, np.inf)
    high = dict.fromkeys(inputs, -np.inf)
    squares, count = dict.fromkeys(inputs, 0.0), dict.fromkeys(inputs, 0)
    for row in rows:
        audio, lengths = pad_batch([row])
        for name, out in zip(
            inputs, session.run(inputs, {"audio": audio, "lengths": lengths}), strict=True
        ):
            low[name], high[name] = min(low[name], out.min()), max(high[name], out.max())
            squares[name] += float((out.astype(np.float64) ** 2).sum())
            count[name] += out.size
    report = {}
    for node in nodes:
        name = by_name[node].input[0]
        step = float(max(high[name], 0) - min(low[name], 0)) / 255
        rms = (squares[name] / count[name]) ** 0.5
        report[node] = {
            "range": [round(float(low[name]), 3), round(float(high[name]), 3)],
            "rms": round(rms, 4),
            "snr_db": round(float(20 * np.log10(rms / (step / 12**0.5))), 1),
        }
    return report


def compare(reference: list[np.ndarray], got: list[np.ndarray]) -> dict:
    entry = {
        "logits_max_abs_diff": float(np.abs(got[0] - reference[0]).max()),
        "argmax_agreement": float((got[0].argmax(1) == reference[0].argmax(1)).mean()),
    }
    if len(got) > 2:
        diff = np.abs(got[2] - reference[2])
        entry |= {"dimensions_max_abs_diff": float(diff.max()),
                  "dimensions_mean_abs_diff": float(diff.mean())}  # fmt: skip
    return entry


def equal_length_drift(path: Path, rows, threads: int) -> dict:
    """Batches of 8 clips cropped to the shortest clip's length against each clip alone."""
    shortest = min(len(r) for r in rows)
    cropped = [r[:shortest] for r in rows[: 8 * (len(rows) // 8)]]
    session = open_session(path, threads=threads)
    worst, identical = 0.0, 0
    for start in range(0, len(cropped), 8):
        batch = cropped[start : start + 8]
        outputs = run_onnx(session, batch)
        for i, row in enumerate(batch):
            alone = run_onnx(session, [row])
            drift = max(
                float(np.abs(o[i] - a[0]).max()) for o, a in zip(outputs, alone, strict=True)
            )
            worst, identical = max(worst, drift), identical + (drift == 0.0)
    return {"samples": shortest, "rows": len(cropped), "max_abs_diff": worst,
            "rows_identical": identical}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--fold")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    started, load_before = time.time(), [round(x, 2) for x in os.getloadavg()]
    meta = json.loads((args.model / "model.json").read_text())
    fold = choose_fold(args.run, args.fold or (meta.get("training") or {}).get("fold"))
    calibration, check = int8_sets(fold, args.run, meta["labels"])
    fp32_path = args.model / "model.onnx"
    reference = predict_outputs(open_session(fp32_path), check["audio"])
    nodes = quantized_nodes(onnx.load(str(fp32_path)))
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (chosen, options) in variants(nodes).items():
            path = quantize(
                fp32_path, Path(tmp) / "v.onnx", calibration["audio"], chosen, **options
            )
            results[name] = compare(reference, predict_outputs(open_session(path), check["audio"]))
            print(name, json.dumps(results[name]), file=sys.stderr, flush=True)
        smoothed, ratios = smoothquant(
            fp32_path, Path(tmp) / "smooth.onnx", calibration["audio"], SMOOTHQUANT_ALPHA
        )
        smooth_fp32 = compare(reference, predict_outputs(open_session(smoothed), check["audio"]))
        path = quantize(smoothed, Path(tmp) / "v.onnx", calibration["audio"])
        name = f"SmoothQuant (alpha {SMOOTHQUANT_ALPHA})"
        results[name] = compare(reference, predict_outputs(open_session(path), check["audio"]))
        results[name]["fp32_smoothed_logits_max_abs_diff"] = smooth_fp32["logits_max_abs_diff"]
        shipped = quantize(fp32_path, Path(tmp) / "shipped.onnx", calibration["audio"])
        drift = {
            f"{kind}, {threads} thread{'s' if threads > 1 else ''}": equal_length_drift(
                path, check["audio"], threads
            )
            for kind, path in (("fp32", fp32_path), ("int8", shipped))
            for threads in (1, 2)
        }
    commit = subprocess.run(
        ["git", "rev-parse", "--short=10", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    report = {
        "command": "PYTHONPATH=. python benchmarks/int8_sensitivity.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
        "commit": commit or None,
        "minutes": round((time.time() - started) / 60, 1),
        "load_average": [load_before, [round(x, 2) for x in os.getloadavg()]],
        "model": args.model.name,
        "backbone": meta["backbone"],
        "calibration_clips": len(calibration["audio"]),
        "check_clips": len(check["audio"]),
        "variants": results,
        "layernorm_max_over_median": ratios,
        "input_snr": input_snr(fp32_path, calibration["audio"]),
        "equal_length_batches": drift,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("variants", "equal_length_batches")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
