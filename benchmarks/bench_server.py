"""Server throughput and latency against the transformers pipeline and a bare ONNX Runtime session.

    PYTHONPATH=. python benchmarks/bench_server.py [--seconds 20] [--concurrency 8]

One run measures, on the same HuBERT-base-architecture weights (random init; speed does not
depend on the weights) and the same 3 s clips:
  * transformers pipeline("audio-classification") on the model dir's hf/ checkpoint, sequential;
  * a bare ONNX Runtime session on model.onnx / model.int8.onnx, batch 1, sequential;
  * `python -m server` on loopback (fp32, then int8) driven by concurrent HTTP clients for a
    fixed time: throughput (audio seconds per second), p50/p95/p99 latency, mean batch size;
  * a lone 3 s request's p50 latency against the bare session's p50 on the same clip.
The CPU may be shared: compare the ratios measured in one run, and see the recorded load.
The benchmark imports torch (to export the model and run the pipeline); the server does not.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from server.audio import SAMPLE_RATE  # noqa: E402

DEFAULT_CACHE = ROOT / ".cache" / "bench_server" / "hubert-base"
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "bench_server.json"
GOALS = {"fp32_vs_pipeline": 1.15, "int8_vs_pipeline": 1.6, "lone_overhead_max": 1.15}
CLIP_SECONDS = 3.0
CLIPS = 16


def build_model_dir(cache: Path) -> Path:
    """Export the HuBERT-base-architecture student once (fp32 + int8 + hf/) into ``cache``."""
    if (
        (cache / "model.json").is_file()
        and (cache / "model.int8.onnx").is_file()
        and (cache / "hf").is_dir()
    ):
        return cache
    import torch

    from export import build_model_dir as export_model_dir
    from training.data.utterance import EMOTIONS
    from training.student import Student, build_classifier

    torch.manual_seed(0)
    print(f"exporting the hubert-base student to {cache} (once)...", file=sys.stderr)
    return export_model_dir(
        Student(build_classifier("hubert-base", EMOTIONS)).eval(), cache, int8=True
    )


def make_clips(count: int, seconds: float) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [
        (0.1 * rng.standard_normal(int(seconds * SAMPLE_RATE))).astype(np.float32)
        for _ in range(count)
    ]


def wav_bytes(clip: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, clip, SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def percentiles(latencies_s: list[float]) -> dict:
    ms = np.array(latencies_s) * 1000
    return {f"p{q}_ms": round(float(np.percentile(ms, q)), 2) for q in (50, 95, 99)}


def sequential(run, clips: list[np.ndarray], seconds: float) -> dict:
    """Call ``run(clip)`` back to back for ``seconds`` (after one warm-up call)."""
    run(clips[0])
    latencies, audio_s, started = [], 0.0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        clip = clips[len(latencies) % len(clips)]
        t0 = time.perf_counter()
        run(clip)
        latencies.append(time.perf_counter() - t0)
        audio_s += len(clip) / SAMPLE_RATE
    elapsed = time.perf_counter() - started
    return {
        "audio_s_per_s": round(audio_s / elapsed, 3),
        "requests": len(latencies),
        **percentiles(latencies),
    }


def bench_pipeline(model_dir: Path, clips: list[np.ndarray], seconds: float) -> dict:
    import torch
    from transformers import pipeline

    torch.set_num_threads(os.cpu_count() or 1)
    classify = pipeline("audio-classification", model=str(model_dir / "hf"), device=-1)
    with torch.inference_mode():
        return sequential(lambda clip: classify(clip), clips, seconds)


def bare_session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(clip: np.ndarray):
        return session.run(
            ["logits"], {"audio": clip[None], "lengths": np.array([len(clip)], np.int64)}
        )

    return run


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def server(model_dir: Path, int8: bool, max_batch_size: int, max_wait_ms: float):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMODISTILL_")} | {
        "EMODISTILL_MODEL_DIR": str(model_dir),
        "EMODISTILL_INT8": str(int8).lower(),
        "EMODISTILL_HOST": "127.0.0.1",
        "EMODISTILL_PORT": str(port),
        "EMODISTILL_MAX_BATCH_SIZE": str(max_batch_size),
        "EMODISTILL_MAX_WAIT_MS": str(max_wait_ms),
        "EMODISTILL_LOG_LEVEL": "warning",
        "PYTHONPATH": str(ROOT),
    }
    process = subprocess.Popen([sys.executable, "-m", "server"], cwd=ROOT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"server exited with {process.returncode}")
            try:
                if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server did not become ready")
            time.sleep(0.2)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


def batch_stats(url: str) -> tuple[float, float]:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics").text
    values = {
        s.name: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name in ("emodistill_batch_size_sum", "emodistill_batch_size_count")
    }
    return values.get("emodistill_batch_size_sum", 0.0), values.get(
        "emodistill_batch_size_count", 0.0
    )


async def drive(url: str, bodies: list[bytes], seconds: float, concurrency: int) -> dict:
    """``concurrency`` clients posting back to back for ``seconds``."""
    latencies: list[float] = []
    audio_s = 0.0
    errors = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        stop_at = time.perf_counter() + seconds

        async def worker(index: int) -> None:
            nonlocal audio_s, errors
            sent = index
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                response = await client.post("/predict", content=bodies[sent % len(bodies)])
                sent += concurrency
                if response.status_code != 200:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - t0)
                audio_s += response.json()["results"][0]["duration_s"]

        started = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {
        "audio_s_per_s": round(audio_s / elapsed, 3),
        "requests": len(latencies),
        "errors": errors,
        **percentiles(latencies),
    }


def bench_server(model_dir: Path, int8: bool, bodies: list[bytes], args) -> dict:
    with server(model_dir, int8, args.max_batch_size, args.max_wait_ms) as url:
        asyncio.run(drive(url, bodies[:2], 2.0, 2))  # warm-up
        before = batch_stats(url)
        loaded = asyncio.run(drive(url, bodies, args.seconds, args.concurrency))
        after = batch_stats(url)
        loaded["mean_batch_size"] = round((after[0] - before[0]) / max(after[1] - before[1], 1), 3)
        lone = asyncio.run(drive(url, bodies[:1], args.seconds / 2, 1))
    return {"concurrent": loaded, "lone_3s": lone}


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="per throughput measurement")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    model_dir = build_model_dir(args.cache)
    clips = make_clips(CLIPS, CLIP_SECONDS)
    bodies = [wav_bytes(clip) for clip in clips]
    from server.audio import load_audio

    decoded = [load_audio(body) for body in bodies]  # what the server infers: 16-bit rounding
    load_before = load_average()
    print(f"load average {load_before}; {args.seconds:g} s per measurement", file=sys.stderr)

    results: dict = {"pipeline": bench_pipeline(model_dir, decoded, args.seconds)}
    print("pipeline", results["pipeline"], file=sys.stderr)
    results["bare_onnxruntime"], results["server"] = {}, {}
    for variant, int8 in (("fp32", False), ("int8", True)):
        run = bare_session(model_dir / ("model.int8.onnx" if int8 else "model.onnx"))
        results["bare_onnxruntime"][variant] = sequential(run, decoded, args.seconds)
        lone_bare = sequential(run, decoded[:1], args.seconds / 2)
        results["bare_onnxruntime"][variant]["lone_3s_p50_ms"] = lone_bare["p50_ms"]
        del run
        print(variant, "bare", results["bare_onnxruntime"][variant], file=sys.stderr)
        results["server"][variant] = bench_server(model_dir, int8, bodies, args)
        print(variant, "server", results["server"][variant], file=sys.stderr)

    pipeline_rate = results["pipeline"]["audio_s_per_s"]
    ratios = (
        {
            f"{v}_vs_pipeline": round(
                results["server"][v]["concurrent"]["audio_s_per_s"] / pipeline_rate, 3
            )
            for v in ("fp32", "int8")
        }
        | {
            f"{v}_bare_vs_pipeline": round(
                results["bare_onnxruntime"][v]["audio_s_per_s"] / pipeline_rate, 3
            )
            for v in ("fp32", "int8")
        }
        | {
            f"{v}_lone_p50_vs_bare": round(
                results["server"][v]["lone_3s"]["p50_ms"]
                / results["bare_onnxruntime"][v]["lone_3s_p50_ms"],
                3,
            )
            for v in ("fp32", "int8")
        }
    )
    report = {
        "what": "server vs transformers pipeline vs bare ONNX Runtime, HuBERT-base architecture, 3 s clips",
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_average_before": load_before,
            "load_average_after": load_average(),
        },
        "config": {
            "seconds_per_measurement": args.seconds,
            "concurrency": args.concurrency,
            "max_batch_size": args.max_batch_size,
            "max_wait_ms": args.max_wait_ms,
            "clip_seconds": CLIP_SECONDS,
            "clips": CLIPS,
            "model": json.loads((model_dir / "model.json").read_text())["backbone"],
        },
        "results": results,
        "ratios": ratios,
        "goals": GOALS
        | {
            "met": {
                "fp32_vs_pipeline": ratios["fp32_vs_pipeline"] >= GOALS["fp32_vs_pipeline"],
                "int8_vs_pipeline": ratios["int8_vs_pipeline"] >= GOALS["int8_vs_pipeline"],
                "fp32_lone_overhead": ratios["fp32_lone_p50_vs_bare"] <= GOALS["lone_overhead_max"],
                "int8_lone_overhead": ratios["int8_lone_p50_vs_bare"] <= GOALS["lone_overhead_max"],
            }
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({"ratios": ratios, "met": report["goals"]["met"]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
