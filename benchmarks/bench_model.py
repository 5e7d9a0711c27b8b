"""Model throughput on CPU, in one run: the HuBERT-base architecture (random init) and the
Whisper-encoder students (pretrained Whisper tiny.en and base encoders, random head).

HuBERT-base: audio-seconds processed per second for PyTorch eager, the transformers
audio-classification pipeline (built from the exported hf/ checkpoint), ONNX Runtime fp32
(TorchScript export, the one shipped), ONNX Runtime fp32 from the dynamo exporter (for the
exporter choice) and ONNX Runtime int8. Whisper tiny.en and base students: ONNX Runtime fp32 and
int8 from the same model-directory export (int8 calibrated on a few synthetic rows). All at
batch 1 and 8 on 3 s clips, plus the machine's fp32 matmul GFLOP/s and each model's parameter
count and GFLOP per audio second, so each path shows its share of its model's compute ceiling.
All paths of all models are measured in the same interleaved rounds (medians), so ratios within
one run, across models too (Whisper fp32 / HuBERT fp32, int8 / fp32), are fair even on a shared
machine.

    .venv/bin/python benchmarks/bench_model.py [--rounds 5] [--no-dynamo] [--no-whisper]
        [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # runnable without installing

import numpy as np
import onnx
import onnxruntime as ort
import torch
import transformers
from torch.utils.flop_counter import FlopCounterMode

from export import build_model_dir
from export.onnx_export import export_onnx
from export.parity import open_session, pad_batch, probe_signal
from export.quantize import synthetic_calibration
from training.data.utterance import EMOTIONS
from training.models.student import Student, build_classifier

CONFIG = "hubert-base"
WHISPER = ("whisper-tiny.en", "whisper-base")
# Few rows: int8 speed does not depend on the calibration data, and each row costs fp32 and int8
# passes during the build.
CALIBRATION_ROWS = 4
THREADS = 2
CLIP_SECONDS = 3.0
BATCH_SIZES = (1, 8)
LONG_SECONDS = 20.0  # the exporter comparison also times one long utterance
MIN_MEASURE_S = 1.0  # each timing repeats calls for at least this long
RESULTS = Path(__file__).parent / "results" / "bench_model.json"
SAMPLE_RATE = 16_000

Runner = Callable[[list[np.ndarray]], object]
RATIOS = (("ort_fp32", "pytorch_eager"), ("ort_int8", "ort_fp32"), ("ort_fp32", "ort_fp32_dynamo"))
# Whisper paths are keyed "<model>:<path>"; bare keys are the HuBERT-base paths.
WHISPER_RATIOS = (
    ("{m}:ort_fp32", "ort_fp32"),
    ("{m}:ort_int8", "ort_int8"),
    ("{m}:ort_int8", "{m}:ort_fp32"),
)


def _gemm_rate(run: Callable[[], object], size: int, repeats: int) -> float:
    run()
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = max(best, 2 * size**3 / (time.perf_counter() - start) / 1e9)
    return best


def matmul_gflops(size: int = 2048, repeats: int = 5) -> float:
    """Best fp32 GEMM rate with THREADS threads: the machine's compute ceiling. Measured in
    every round beside the paths, so the ceiling sees the same machine load they do. Both
    torch.mm and ONNX Runtime's MatMul (MLAS) are timed and the faster counts: on this
    machine MLAS reaches about twice torch.mm's rate, so torch alone understates the ceiling."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch_rate = _gemm_rate(lambda: torch.mm(a, b), size, repeats)
    spec = [
        onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [size, size]) for n in "ABC"
    ]
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("MatMul", ["A", "B"], ["C"])], "gemm", spec[:2], spec[2:]
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    model.ir_version = 8
    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    feeds = {"A": a.numpy(), "B": b.numpy()}
    ort_rate = _gemm_rate(lambda: session.run(None, feeds), size, repeats)
    return max(torch_rate, ort_rate)


def model_gflop_per_audio_second(student: Student) -> dict:
    """FlopCounterMode (no_grad: inference_mode breaks parametrised convs) misses CPU SDPA
    attention, so the attention products are added: 2 matmuls x 2 FLOP x frames^2 x hidden.
    The Whisper encoders too: on whisper-tiny.en the estimate equals the extra bmm FLOPs counted
    under the math SDPA backend."""
    samples = int(CLIP_SECONDS * SAMPLE_RATE)
    audio, lengths = torch.from_numpy(probe_signal(samples, 0))[None], torch.tensor([samples])
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        student(audio, lengths)
    counted = counter.get_total_flops() / 1e9
    frames = int(student.frame_lengths(lengths)[0])
    config = student.config
    attention = 4 * frames**2 * config.hidden_size * config.num_hidden_layers / 1e9
    return {
        "counted": counted / CLIP_SECONDS,
        "attention_estimate": attention / CLIP_SECONDS,
        "total": (counted + attention) / CLIP_SECONDS,
    }


def throughput(run: Runner, rows: list[np.ndarray]) -> float:
    """Audio-seconds per second over repeated calls lasting at least MIN_MEASURE_S."""
    audio_seconds = sum(len(r) for r in rows) / SAMPLE_RATE
    calls, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < MIN_MEASURE_S or calls < 2:
        run(rows)
        calls += 1
    return calls * audio_seconds / elapsed


def ort_runner(session: ort.InferenceSession) -> Runner:
    def run(rows):
        audio, lengths = pad_batch(rows)
        return session.run(None, {"audio": audio, "lengths": lengths})

    return run


def eager_runner(student: Student) -> Runner:
    def run(rows):
        audio, lengths = pad_batch(rows)
        with torch.inference_mode():
            return student(torch.from_numpy(audio), torch.from_numpy(lengths))

    return run


def pipeline_runner(hf_dir: Path) -> Runner:
    classify = transformers.pipeline("audio-classification", model=str(hf_dir), device="cpu")

    def run(rows):
        inputs = [{"raw": r, "sampling_rate": SAMPLE_RATE} for r in rows]
        return classify(inputs, batch_size=len(rows), top_k=None)

    return run


def op_counts(path: Path) -> dict:
    """Node counts that explain the exporter gap: dynamo's SDPA adds IsNaN/Where guards."""
    graph = onnx.load(str(path)).graph
    ops = [node.op_type for node in graph.node]
    return {"nodes": len(ops), **{op: ops.count(op) for op in ("IsNaN", "Where", "Softmax")}}


def build(workdir: Path, dynamo: bool) -> tuple[Student, dict[str, Runner], dict]:
    torch.manual_seed(0)
    student = Student(build_classifier(CONFIG, EMOTIONS)).eval()
    start = time.perf_counter()
    # No validation audio for a random-init model: export calibrates on its synthetic signals.
    model_dir = build_model_dir(student, workdir / "model", int8=True)
    info = {"build_model_dir_s": time.perf_counter() - start}
    info["model_json"] = json.loads((model_dir / "model.json").read_text())
    runners = {
        "pytorch_eager": eager_runner(student),
        "hf_pipeline": pipeline_runner(model_dir / "hf"),
        "ort_fp32": ort_runner(open_session(model_dir / "model.onnx", THREADS)),
        "ort_int8": ort_runner(open_session(model_dir / "model.int8.onnx", THREADS)),
    }
    if dynamo:
        start = time.perf_counter()
        path = export_onnx(student, workdir / "dynamo.onnx", exporter="dynamo")
        info["dynamo_export_s"] = time.perf_counter() - start
        info["graph_ops"] = {
            "torchscript": op_counts(model_dir / "model.onnx"),
            "dynamo": op_counts(path),
        }
        runners["ort_fp32_dynamo"] = ort_runner(open_session(path, THREADS))
    return student, runners, info


def build_whisper(name: str, workdir: Path) -> tuple[Student, dict[str, Runner], dict]:
    torch.manual_seed(0)  # the head is random: the same one every run
    verbosity = transformers.logging.get_verbosity()
    # The load report lists every decoder weight the encoder-only student leaves unused.
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    try:
        # Pooled as trained pretrained students are: a weighted sum of all layers.
        student = Student(build_classifier(name, EMOTIONS, use_weighted_layer_sum=True)).eval()
    finally:
        transformers.logging.set_verbosity(verbosity)
        transformers.logging.enable_progress_bar()
    start = time.perf_counter()
    model_dir = build_model_dir(
        student,
        workdir / name,
        int8=True,
        calibration=synthetic_calibration(CALIBRATION_ROWS),
        hf=False,
    )
    meta = json.loads((model_dir / "model.json").read_text())
    info = {
        "build_model_dir_s": time.perf_counter() - start,
        # model.json calls any calibration it is given "validation audio"
        "calibration": f"{CALIBRATION_ROWS} synthetic rows (export.quantize.synthetic_calibration)",
        "parity": meta["parity"],
        "int8": meta["int8"],
    }
    runners = {
        f"{name}:ort_fp32": ort_runner(open_session(model_dir / "model.onnx", THREADS)),
        f"{name}:ort_int8": ort_runner(open_session(model_dir / "model.int8.onnx", THREADS)),
    }
    return student, runners, info


def parameter_count(student: Student) -> int:
    return sum(p.numel() for p in student.parameters())


def model_of(name: str) -> str:
    return name.rpartition(":")[0] or CONFIG


def ratio_key(num: str, den: str, batch: int) -> str:
    """The HuBERT-only ratios keep their bare keys; cross-model ones name both models."""
    if ":" in num or ":" in den:
        num, den = (k if ":" in k else f"{CONFIG}:{k}" for k in (num, den))
    return f"{num}/{den}@{batch}"


def measure(runners: dict[str, Runner], rounds: int) -> dict[str, list[float]]:
    """Interleaved rounds, so every path sees the same machine load; one sample per round."""
    clips = {
        b: [probe_signal(int(CLIP_SECONDS * SAMPLE_RATE), seed=i) for i in range(b)]
        for b in BATCH_SIZES
    }
    long = [probe_signal(int(LONG_SECONDS * SAMPLE_RATE), seed=99)]
    exporters = [name for name in ("ort_fp32", "ort_fp32_dynamo") if name in runners]
    samples: dict[str, list[float]] = {}
    for run in runners.values():  # warm-up: first-call allocations, lazy init
        for rows in clips.values():
            run(rows)
    for _ in range(rounds):
        samples.setdefault("matmul_gflops", []).append(matmul_gflops())
        for name, run in runners.items():
            for b, rows in clips.items():
                samples.setdefault(f"{name}@{b}", []).append(throughput(run, rows))
        for name in exporters:
            start = time.perf_counter()
            runners[name](long)
            samples.setdefault(f"{name}@long", []).append(time.perf_counter() - start)
    return samples


def summarise(samples: dict[str, list[float]], flops_per_audio_s: dict[str, float]) -> dict:
    """Medians (typical under the load of the run) and bests (closest to an idle machine).
    Ratios are taken within each round, where both paths saw the same load, then medianed.
    ``flops_per_audio_s`` per model; "paths" holds every model's paths (Whisper ones keyed
    "<model>:<path>"), each share taken of its own model's ceiling."""
    peak = samples["matmul_gflops"]
    ceilings = {
        model: {"median": statistics.median(peak) / flops, "best": max(peak) / flops}
        for model, flops in flops_per_audio_s.items()
    }
    paths = {}
    for key, values in samples.items():
        if key == "matmul_gflops" or key.endswith("@long"):
            continue
        name, batch = key.split("@")
        ceiling = ceilings[model_of(name)]
        stats = {"median": statistics.median(values), "best": max(values)}
        entry = paths.setdefault(name, {"audio_s_per_s": {}, "share_of_ceiling": {}})
        entry["audio_s_per_s"][batch] = stats
        entry["share_of_ceiling"][batch] = {k: v / ceiling[k] for k, v in stats.items()}
    pairs = list(RATIOS) + [
        (num.format(m=model), den.format(m=model))
        for model in flops_per_audio_s
        if model != CONFIG
        for num, den in WHISPER_RATIOS
    ]
    ratios = {
        ratio_key(num, den, b): statistics.median(
            n / d for n, d in zip(samples[f"{num}@{b}"], samples[f"{den}@{b}"], strict=True)
        )
        for num, den in pairs
        if num in paths and den in paths
        for b in BATCH_SIZES
    }
    return {
        "matmul_gflops": {"median": statistics.median(peak), "best": max(peak)},
        "ceilings": ceilings,
        "paths": paths,
        "ratios": ratios,
        "long_utterance_latency_s": {
            key.split("@")[0]: {"median": statistics.median(v), "best": min(v)}
            for key, v in samples.items()
            if key.endswith("@long")
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-dynamo", action="store_true", help="skip the dynamo exporter path")
    parser.add_argument(
        "--no-whisper", action="store_true", help="skip the Whisper tiny.en and base students"
    )
    parser.add_argument(
        "--out", type=Path, default=RESULTS, help=f"results JSON (default {RESULTS})"
    )
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    load_before = os.getloadavg()
    whisper = {}
    with tempfile.TemporaryDirectory() as tmp:
        student, runners, info = build(Path(tmp), dynamo=not args.no_dynamo)
        flops = model_gflop_per_audio_second(student)
        parameters = parameter_count(student)
        for name in () if args.no_whisper else WHISPER:
            w_student, w_runners, w_info = build_whisper(name, Path(tmp))
            runners.update(w_runners)
            whisper[name] = {
                "parameters": parameter_count(w_student),
                "model_gflop_per_audio_s": model_gflop_per_audio_second(w_student),
                "export": w_info,
            }
            del w_student  # only its ORT sessions are measured
        samples = measure(runners, args.rounds)
    meta = info.pop("model_json")
    totals = {CONFIG: flops["total"]} | {
        name: entry["model_gflop_per_audio_s"]["total"] for name, entry in whisper.items()
    }
    summary = summarise(samples, totals)
    ceilings, all_paths = summary.pop("ceilings"), summary.pop("paths")
    for name, entry in whisper.items():
        entry["ceiling_audio_s_per_s"] = ceilings[name]
        entry["paths"] = {
            key.partition(":")[2]: value
            for key, value in all_paths.items()
            if model_of(key) == name
        }
        entry["export"] = entry.pop("export")  # last, as for HuBERT-base
    result = {
        "config": CONFIG,
        "threads": THREADS,
        "clip_seconds": CLIP_SECONDS,
        "rounds": args.rounds,
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "load_avg_before": load_before,
            "load_avg_after": os.getloadavg(),
        },
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "onnxruntime": ort.__version__,
        },
        "parameters": parameters,
        "model_gflop_per_audio_s": flops,
        "matmul_gflops": summary.pop("matmul_gflops"),
        "ceiling_audio_s_per_s": ceilings[CONFIG],
        "paths": {key: value for key, value in all_paths.items() if model_of(key) == CONFIG},
        **summary,
        "long_utterance_seconds": LONG_SECONDS,
        "export": {**info, "parity": meta["parity"], "int8": meta["int8"]},
        "whisper": whisper,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print_table(result)
    print(f"wrote {args.out}")


def print_table(result: dict) -> None:
    peak, load = result["matmul_gflops"], result["machine"]
    print(
        f"matmul {peak['median']:.0f} GFLOP/s median, {peak['best']:.0f} best "
        f"({result['threads']} threads, {result['clip_seconds']:.0f} s clips, "
        f"{result['rounds']} rounds, load "
        f"{load['load_avg_before'][0]:.2f} -> {load['load_avg_after'][0]:.2f})"
    )
    models = {
        CONFIG: {key: result[key] for key in ("parameters", "model_gflop_per_audio_s", "paths")}
        | {"ceiling_audio_s_per_s": result["ceiling_audio_s_per_s"]},
        **result["whisper"],
    }
    print("| model | parameters | GFLOP per audio s | ceiling audio-s/s (median / best) |")
    print("|---|---|---|---|")
    for name, model in models.items():
        flops, ceiling = model["model_gflop_per_audio_s"], model["ceiling_audio_s_per_s"]
        print(
            f"| {name} | {model['parameters'] / 1e6:.1f}M | {flops['total']:.2f} "
            f"({flops['counted']:.2f} counted + {flops['attention_estimate']:.2f} attention) | "
            f"{ceiling['median']:.1f} / {ceiling['best']:.1f} |"
        )
    print()
    columns = [f"batch {b} {stat}" for b in BATCH_SIZES for stat in ("median", "best")]
    print("| model | path (audio-s/s, % of ceiling) | " + " | ".join(columns) + " |")
    print("|---" * (2 + len(columns)) + "|")
    for model_name, model in models.items():
        for name, path in model["paths"].items():
            cells = [
                f"{path['audio_s_per_s'][str(b)][stat]:.1f} "
                f"({100 * path['share_of_ceiling'][str(b)][stat]:.0f}%)"
                for b in BATCH_SIZES
                for stat in ("median", "best")
            ]
            print(f"| {model_name} | {name} | " + " | ".join(cells) + " |")
    for key, value in result["ratios"].items():
        print(f"{key}: {value:.2f}x (median of per-round ratios)")
    for name, latency in result["long_utterance_latency_s"].items():
        print(
            f"{name}: {latency['median']:.2f} s median, {latency['best']:.2f} s best for one "
            f"{result['long_utterance_seconds']:.0f} s utterance"
        )


if __name__ == "__main__":
    main()
