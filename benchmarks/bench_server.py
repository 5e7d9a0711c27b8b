"""Server throughput and latency against the transformers pipeline and a bare ONNX Runtime session.

    PYTHONPATH=. python benchmarks/bench_server.py [--rounds 3] [--seconds 15] [--concurrency 8]

On the same HuBERT-base-architecture weights (random init: speed does not depend on the
weights) and the same 3 s clips, each round measures back to back:
  * transformers pipeline("audio-classification") on the model dir's hf/ checkpoint, sequential;
  * a bare ONNX Runtime session on model.onnx / model.int8.onnx, batch 1, sequential;
  * `python -m server` on loopback (fp32 and int8 processes) driven by concurrent HTTP clients
    for a fixed time: throughput, p50/p95/p99 latency, mean batch size;
  * a lone 3 s request's p50 latency against the bare session's p50 on the same clip, the two
    alternating call by call so that both see the same load.
Throughput is audio seconds per wall second (the goal metric) and per CPU second (server +
client process; robust to other load on a shared machine). Medians over interleaved rounds:
the machine may be shared, so compare ratios, and see the recorded load average.
The benchmark imports torch (to export the model and run the pipeline); the server does not.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from emocore.audio import SAMPLE_RATE, load_audio  # noqa: E402
from tests.server.live_server import serve  # noqa: E402

DEFAULT_CACHE = ROOT / ".cache" / "bench_server" / "hubert-base"
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "bench_server.json"
GOALS = {"fp32_vs_pipeline": 1.15, "int8_vs_pipeline": 1.6, "lone_overhead_max": 1.15}
CLIP_SECONDS = 3.0
CLIPS = 16
Runner = Callable[[np.ndarray], object]


def build_model_dir(cache: Path) -> Path:
    """Export the HuBERT-base-architecture student once (fp32 + int8 + hf/) into ``cache``."""
    if all((cache / name).exists() for name in ("model.json", "model.int8.onnx", "hf")):
        return cache
    import torch

    from export import build_model_dir as export_model_dir
    from training.data.utterance import EMOTIONS
    from training.models.student import Student, build_classifier

    torch.manual_seed(0)
    print(f"exporting the hubert-base student to {cache} (once, a few minutes)", file=sys.stderr)
    student = Student(build_classifier("hubert-base", EMOTIONS)).eval()
    return export_model_dir(student, cache, int8=True)


def make_clips(count: int, seconds: float) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    size = int(seconds * SAMPLE_RATE)
    return [(0.1 * rng.standard_normal(size)).astype(np.float32) for _ in range(count)]


def wav_bytes(clip: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, clip, SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def percentiles(latencies_s: list[float]) -> dict:
    ms = np.array(latencies_s) * 1000
    return {f"p{q}_ms": round(float(np.percentile(ms, q)), 2) for q in (50, 95, 99)}


def rates(audio_s: float, elapsed_s: float, cpu_s: float) -> dict:
    """Audio seconds per wall second (the goal metric) and per CPU second."""
    return {
        "audio_s_per_s": round(audio_s / elapsed_s, 3),
        "audio_s_per_cpu_s": round(audio_s / max(cpu_s, 1e-9), 3),
    }


def process_cpu_s(pid: int) -> float:
    """user + system CPU seconds of another process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sequential(run: Runner, clips: list[np.ndarray], seconds: float) -> dict:
    """Call ``run(clip)`` back to back for ``seconds`` (after one warm-up call)."""
    run(clips[0])
    latencies: list[float] = []
    audio_s = 0.0
    started, cpu_started = time.perf_counter(), time.process_time()
    while time.perf_counter() - started < seconds:
        clip = clips[len(latencies) % len(clips)]
        t0 = time.perf_counter()
        run(clip)
        latencies.append(time.perf_counter() - t0)
        audio_s += len(clip) / SAMPLE_RATE
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    return rates(audio_s, elapsed, cpu) | {"requests": len(latencies), **percentiles(latencies)}


def pipeline_runner(model_dir: Path, threads: int) -> Runner:
    """transformers pipeline("audio-classification") on the model dir's hf/ checkpoint."""
    import torch
    from transformers import pipeline

    classify = pipeline("audio-classification", model=str(model_dir / "hf"), device=-1)

    def run(clip: np.ndarray):
        torch.set_num_threads(threads or os.cpu_count() or 1)
        with torch.inference_mode():
            return classify(clip)

    return run


def bare_session(path: Path, threads: int) -> Runner:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(clip: np.ndarray):
        lengths = np.array([len(clip)], np.int64)
        return session.run(["logits"], {"audio": clip[None], "lengths": lengths})

    return run


@contextmanager
def server(model_dir: Path, int8: bool, threads: int, args) -> Iterator[tuple[str, int]]:
    """A `python -m server` process on loopback: yields (url, pid)."""
    settings = dict(int8=str(int8).lower(), threads=threads, max_batch_size=args.max_batch_size)
    with serve(model_dir, start_timeout_s=120, max_wait_ms=args.max_wait_ms, **settings) as (
        process,
        url,
    ):
        yield url, process.pid


def batch_stats(url: str) -> tuple[float, float]:
    """(sum, count) of the server's batch-size histogram."""
    from prometheus_client.parser import text_string_to_metric_families

    wanted = ("emodistill_batch_size_sum", "emodistill_batch_size_count")
    values = {
        sample.name: sample.value
        for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text)
        for sample in family.samples
        if sample.name in wanted
    }
    return values.get(wanted[0], 0.0), values.get(wanted[1], 0.0)


async def drive(
    url: str, bodies: list[bytes], seconds: float, concurrency: int
) -> tuple[dict, float]:
    """``concurrency`` clients posting back to back for ``seconds``: (stats, audio seconds)."""
    latencies: list[float] = []
    audio_s = 0.0
    errors = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:
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

        await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return {"requests": len(latencies), "errors": errors, **percentiles(latencies)}, audio_s


def measure_server(
    url: str, pid: int, bodies: list[bytes], seconds: float, concurrency: int
) -> dict:
    """Throughput of a running server; CPU time counts the server and this (client) process."""
    batches_before = batch_stats(url)
    started, cpu_started = time.perf_counter(), time.process_time() + process_cpu_s(pid)
    stats, audio_s = asyncio.run(drive(url, bodies, seconds, concurrency))
    elapsed = time.perf_counter() - started
    cpu = time.process_time() + process_cpu_s(pid) - cpu_started
    batches = batch_stats(url)
    mean_batch = (batches[0] - batches_before[0]) / max(batches[1] - batches_before[1], 1)
    return rates(audio_s, elapsed, cpu) | stats | {"mean_batch_size": round(mean_batch, 3)}


def lone_latency(
    bare: Runner, clip: np.ndarray, url: str, pid: int, body: bytes, seconds: float
) -> dict:
    """One request at a time, alternating bare session call and server request, for ``seconds``.

    Also CPU milliseconds per request: the server's (+ this client's) against the bare call's.
    """
    bare_s, server_s, bare_cpu, server_cpu = [], [], 0.0, 0.0
    with httpx.Client(base_url=url, timeout=300) as client:
        client.post("/predict", content=body)
        bare(clip)
        stop_at = time.perf_counter() + seconds
        while time.perf_counter() < stop_at:
            t0, c0 = time.perf_counter(), time.process_time()
            bare(clip)
            bare_s.append(time.perf_counter() - t0)
            bare_cpu += time.process_time() - c0
            t0, c0 = time.perf_counter(), time.process_time() + process_cpu_s(pid)
            response = client.post("/predict", content=body)
            server_s.append(time.perf_counter() - t0)
            server_cpu += time.process_time() + process_cpu_s(pid) - c0
            response.raise_for_status()
    count = len(bare_s)
    return {
        "pairs": count,
        "bare_p50_ms": round(float(np.median(bare_s)) * 1000, 2),
        "server_p50_ms": round(float(np.median(server_s)) * 1000, 2),
        "bare_cpu_ms_per_request": round(bare_cpu / count * 1000, 2),
        "server_cpu_ms_per_request": round(server_cpu / count * 1000, 2),
    }


def one_round(runners: dict[str, Runner], servers: dict, clips, bodies, args) -> dict:
    """Every measurement once, back to back, so that they see the same machine load."""
    result: dict = {"pipeline": sequential(runners["pipeline"], clips, args.seconds)}
    pipeline = result["pipeline"]
    ratios: dict[str, float] = {}
    for variant, (url, pid) in servers.items():
        bare, served = f"bare_{variant}", f"server_{variant}"
        result[bare] = sequential(runners[variant], clips, args.seconds)
        result[served] = measure_server(url, pid, bodies, args.seconds, args.concurrency)
        result[f"{variant}_lone_3s"] = lone_latency(
            runners[variant], clips[0], url, pid, bodies[0], args.lone_seconds
        )
        ratios |= {
            f"{served}_vs_pipeline": result[served]["audio_s_per_s"] / pipeline["audio_s_per_s"],
            f"{bare}_vs_pipeline": result[bare]["audio_s_per_s"] / pipeline["audio_s_per_s"],
            f"{served}_vs_pipeline_per_cpu_s": result[served]["audio_s_per_cpu_s"]
            / pipeline["audio_s_per_cpu_s"],
            f"{served}_lone_p50_vs_bare": result[f"{variant}_lone_3s"]["server_p50_ms"]
            / result[f"{variant}_lone_3s"]["bare_p50_ms"],
        }
    result["ratios"] = {key: round(value, 3) for key, value in ratios.items()}
    print(json.dumps(result["ratios"]), file=sys.stderr)
    return result


def median_of(rounds: list[dict]) -> dict:
    """Per-key median over rounds (nested dicts too)."""
    first = rounds[0]
    return {
        key: median_of([r[key] for r in rounds])
        if isinstance(first[key], dict)
        else round(float(np.median([r[key] for r in rounds])), 3)
        for key in first
    }


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repetitions (medians)")
    parser.add_argument("--seconds", type=float, default=15.0, help="per throughput measurement")
    parser.add_argument(
        "--lone-seconds", type=float, default=16.0, help="per lone-request measurement"
    )
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument(
        "--threads", type=int, nargs="+", default=[0], help="intra-op threads for all (0 = cores)"
    )
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    model_dir = build_model_dir(args.cache)
    clips = make_clips(CLIPS, CLIP_SECONDS)
    bodies = [wav_bytes(clip) for clip in clips]
    decoded = [load_audio(body) for body in bodies]  # what the server infers (16-bit WAV)
    report = {
        "what": "python -m server vs transformers pipeline vs bare ONNX Runtime (batch 1), "
        "HuBERT-base architecture, 3 s clips; medians over interleaved rounds, per thread count",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "config": {
            "rounds": args.rounds,
            "seconds_per_measurement": args.seconds,
            "lone_seconds": args.lone_seconds,
            "concurrency": args.concurrency,
            "max_batch_size": args.max_batch_size,
            "max_wait_ms": args.max_wait_ms,
            "clip_seconds": CLIP_SECONDS,
            "clips": CLIPS,
            "backbone": json.loads((model_dir / "model.json").read_text())["backbone"],
        },
        "goals": GOALS,
        "by_threads": {},
    }
    for threads in args.threads:
        report["by_threads"][str(threads)] = measure_all(model_dir, threads, decoded, bodies, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


def measure_all(model_dir: Path, threads: int, decoded, bodies, args) -> dict:
    """Pipeline, bare sessions and servers, all with ``threads`` intra-op threads (0 = cores)."""
    runners = {
        "pipeline": pipeline_runner(model_dir, threads),
        "fp32": bare_session(model_dir / "model.onnx", threads),
        "int8": bare_session(model_dir / "model.int8.onnx", threads),
    }
    load_before = load_average()
    print(f"threads {threads}: load average {load_before}", file=sys.stderr)
    with (
        server(model_dir, False, threads, args) as fp32,
        server(model_dir, True, threads, args) as int8,
    ):
        servers = {"fp32": fp32, "int8": int8}
        for url, _ in servers.values():  # first requests of each shape
            asyncio.run(drive(url, bodies[:2], 2.0, 2))
        rounds = [one_round(runners, servers, decoded, bodies, args) for _ in range(args.rounds)]
        effective = {
            v: httpx.get(f"{u}/v1/model").json()["max_batch_size"] for v, (u, _) in servers.items()
        }
    summary = median_of(rounds)
    ratios = summary["ratios"]
    met = {
        "fp32_vs_pipeline": ratios["server_fp32_vs_pipeline"] >= GOALS["fp32_vs_pipeline"],
        "int8_vs_pipeline": ratios["server_int8_vs_pipeline"] >= GOALS["int8_vs_pipeline"],
        "fp32_lone_overhead": ratios["server_fp32_lone_p50_vs_bare"] <= GOALS["lone_overhead_max"],
        "int8_lone_overhead": ratios["server_int8_lone_p50_vs_bare"] <= GOALS["lone_overhead_max"],
    }
    print(json.dumps({"threads": threads, "ratios": ratios, "met": met}, indent=2))
    return {
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "effective_max_batch_size": effective,
        "median": summary,
        "met": met,
        "rounds": rounds,
    }


if __name__ == "__main__":
    sys.exit(main())
