"""Streaming latency under load: N concurrent real-time streams on loopback.

Starts `python -m server` as its own process (so client and server do not share an event
loop), then for each N streams N copies of a synthesized clip (three espeak-ng sentences
separated by 1 s pauses) at real-time pace, in 100 ms frames, with start times spread over
one utterance period (independent speakers do not end their sentences in the same instant).
For every final it measures end-of-speech -> final latency: the wall time the final arrived
minus the wall time the last voiced sample of that sentence was "recorded" (its frame is sent
only once recorded, as a microphone would). Reports p50/p95 per N, the model's own time for
these utterances (batch 1, unloaded), the goal p50 <= min_silence_ms + 2 x model time, and
the most concurrent streams sustained with p95 < 1 s and no errors.

    .venv/bin/python benchmarks/bench_stream.py      # tiny and hubert-base (random weights)
    .venv/bin/python benchmarks/bench_stream.py --model-dir models/demo --streams 1,8,16
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# `make bench` runs this file directly: the example client and the test speech live in the
# repository, not in the installed package.
sys.path.insert(0, str(ROOT))

from emocore.audio import SAMPLE_RATE  # noqa: E402
from examples.stream_client import stream_audio  # noqa: E402
from tests.server.live_server import ServerFailed, wait_ready  # noqa: E402
from tests.server.speech_clips import three_utterances  # noqa: E402

RESULTS = ROOT / "benchmarks/results/bench_stream.json"
P95_LIMIT_S = 1.0
MIN_SILENCE_MS = 300.0
CHUNK_MS = 20.0  # a typical streaming client frame; the browser page sends 100 ms
PAD_S = 0.030  # the server's default stream_pad_ms: final["end"] - PAD_S is the VAD's speech end


def build_model(backbone: str) -> Path:
    """A randomly initialised student of this backbone, exported once to models/bench-<name>."""
    out = ROOT / "models" / f"bench-{backbone}"
    if (out / "model.json").is_file():
        return out
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from export import build_model_dir
    from training.data.utterance import EMOTIONS
    from training.models.student import Student, build_classifier

    torch.manual_seed(0)
    return build_model_dir(Student(build_classifier(backbone, EMOTIONS)).eval(), out, hf=False)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(model_dir: Path, port: int, max_streams: int) -> subprocess.Popen:
    env = os.environ | {
        "EMODISTILL_MODEL_DIR": str(model_dir),
        "EMODISTILL_HOST": "127.0.0.1",
        "EMODISTILL_PORT": str(port),
        "EMODISTILL_LOG_LEVEL": "warning",
        "EMODISTILL_STREAM_MAX_STREAMS": str(max_streams),
        # Every benchmark stream comes from 127.0.0.1 (ignored by servers without the limit).
        "EMODISTILL_STREAM_MAX_STREAMS_PER_CLIENT": str(max_streams),
        "EMODISTILL_STREAM_MIN_SILENCE_MS": str(MIN_SILENCE_MS),
        "PYTHONPATH": str(ROOT),
    }
    process = subprocess.Popen([sys.executable, "-m", "server"], cwd=ROOT, env=env)
    try:
        wait_ready(process, port, 120)
    except ServerFailed:
        process.terminate()
        raise
    return process


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


async def one_stream(
    url: str, samples: np.ndarray, truth_ends: list[float], delay: float, chunk_ms: float
) -> dict:
    await asyncio.sleep(delay)
    arrivals: dict[int, float] = {}

    def on_event(event: dict) -> None:
        if event.get("type") == "final":
            arrivals[event["utterance"]] = time.monotonic()

    result = await stream_audio(
        url, samples, SAMPLE_RATE, chunk_ms=chunk_ms, realtime=True, on_event=on_event
    )
    finals = [e for e in result.events if e["type"] == "final"]
    errors = [e for e in result.events if e["type"] == "error"]
    latencies = [
        arrivals[f["utterance"]] - (result.started + truth_ends[f["utterance"]])
        for f in finals
        if f["utterance"] < len(truth_ends)
    ]
    # The same, counted from where the VAD put the end of speech (its lag left out).
    after_vad = [arrivals[f["utterance"]] - (result.started + f["end"] - PAD_S) for f in finals]
    return {
        "latencies": latencies,
        "after_vad": after_vad,
        "finals": len(finals),
        "errors": [e["code"] for e in errors],
        "close_code": result.close_code,
        "timings": [f["timing"] for f in finals],
    }


async def run_level(url: str, streams: int, clip, spread_s: float, chunk_ms: float) -> list[dict]:
    rng = random.Random(streams)
    delays = [rng.uniform(0, spread_s) for _ in range(streams)]
    truth_ends = [end / SAMPLE_RATE for _, end in clip.truth]
    return await asyncio.gather(
        *(one_stream(url, clip.samples, truth_ends, d, chunk_ms) for d in delays)
    )


def summarise(
    streams: int, runs: list[dict], wall_s: float, cpu_s: tuple[float, float], expected: int
) -> dict:
    latencies = [x for run in runs for x in run["latencies"]]
    after_vad = [x for run in runs for x in run["after_vad"]]
    timings = [t for run in runs for t in run["timings"]]
    errors = [code for run in runs for code in run["errors"]]
    missing = sum(expected - run["finals"] for run in runs)
    p95 = percentile(latencies, 95)
    return {
        "streams": streams,
        "finals": len(latencies),
        "missing_finals": missing,
        "errors": errors,
        "latency_p50_s": percentile(latencies, 50),
        "latency_p95_s": p95,
        "latency_max_s": max(latencies) if latencies else None,
        "after_vad_end_p50_s": percentile(after_vad, 50),
        "after_vad_end_p95_s": percentile(after_vad, 95),
        "inference_p50_s": percentile([t["inference_s"] for t in timings], 50),
        "queue_wait_p50_s": percentile([t["queue_s"] for t in timings], 50),
        "mean_batch_size": statistics.fmean(t["batch_size"] for t in timings) if timings else None,
        "server_cpu_cores": round(cpu_s[0] / wall_s, 2),
        "client_cpu_cores": round(cpu_s[1] / wall_s, 2),
        "load_avg_1m_after": os.getloadavg()[0],
        "sustained": bool(latencies) and not errors and missing == 0 and p95 < P95_LIMIT_S,
    }


def _shown(path: Path) -> str:
    """A path relative to the repository when it is inside it (results stay portable)."""
    resolved = path.resolve()
    return str(resolved.relative_to(ROOT)) if resolved.is_relative_to(ROOT) else str(path)


def sweep(model_dir: Path, levels: list[int], chunk_ms: float, clip) -> dict:
    """Raise the number of streams until one level is not sustained; one server process."""
    meta = json.loads((model_dir / "model.json").read_text())
    period = clip.samples.shape[0] / SAMPLE_RATE / len(clip.truth)
    print(f"model {model_dir} ({meta['backbone']}), load {os.getloadavg()[0]:.2f}", flush=True)
    load_before = os.getloadavg()
    port = free_port()
    server = start_server(model_dir, port, max(levels) + 4)
    url = f"ws://127.0.0.1:{port}/v1/stream"
    results = []
    try:
        for streams in levels:
            before = cpu_seconds(server.pid), time.process_time()
            started = time.monotonic()
            runs = asyncio.run(run_level(url, streams, clip, period, chunk_ms))
            wall = time.monotonic() - started
            cpu = (cpu_seconds(server.pid) - before[0], time.process_time() - before[1])
            row = summarise(streams, runs, wall, cpu, len(clip.truth))
            results.append(row)
            print(
                f"N={streams:3d}  p50 {row['latency_p50_s']:.3f} s  p95 {row['latency_p95_s']:.3f} s"
                f"  inference p50 {row['inference_p50_s'] * 1000:.0f} ms"
                f"  batch {row['mean_batch_size']:.1f}  CPU server {row['server_cpu_cores']:.2f}"
                f" client {row['client_cpu_cores']:.2f}  errors {len(row['errors'])}"
                f"  {'ok' if row['sustained'] else 'NOT sustained'}",
                flush=True,
            )
            if not row["sustained"]:
                break
    finally:
        server.terminate()
        server.wait(timeout=60)

    model_s = results[0]["inference_p50_s"]
    goal_s = MIN_SILENCE_MS / 1000 + 2 * model_s
    sustained = [row["streams"] for row in results if row["sustained"]]
    return {
        "model": {"dir": _shown(model_dir), "backbone": meta["backbone"]},
        "load_avg_before": load_before,
        "load_avg_after": os.getloadavg(),
        "model_time_s": model_s,
        "goal": {
            "p50_limit_s": round(goal_s, 4),
            "met_at_one_stream": results[0]["latency_p50_s"] <= goal_s,
            "met_from_vad_end_at_one_stream": results[0]["after_vad_end_p50_s"] <= goal_s,
        },
        "max_sustained_streams": max(sustained) if sustained else 0,
        "highest_level_run": results[-1]["streams"],
        "levels": results,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--backbone", default="tiny,hubert-base", help="comma-separated; random-weight students"
    )
    source.add_argument("--model-dir", type=Path, help="an existing model directory instead")
    parser.add_argument("--streams", default="1,2,4,8,12,16,24,32", help="comma-separated levels")
    parser.add_argument("--chunk-ms", type=float, default=CHUNK_MS, help="audio per frame")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    levels = [int(n) for n in args.streams.split(",")]
    model_dirs = (
        [args.model_dir]
        if args.model_dir
        else [build_model(name.strip()) for name in args.backbone.split(",")]
    )
    clip = three_utterances()
    report = {
        "benchmark": "bench_stream",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "note": "CPU shared with other jobs during the run: see each model's load averages",
        },
        "method": {
            "clip": "3 espeak-ng sentences, 1 s pauses, 16 kHz pcm_s16le",
            "utterance_s": [round((e - s) / SAMPLE_RATE, 2) for s, e in clip.truth],
            "chunk_ms": args.chunk_ms,
            "pace": "real time; stream starts spread uniformly over one utterance period",
            "min_silence_ms": MIN_SILENCE_MS,
            "latency": "final arrival - wall time the sentence's last voiced sample was recorded",
            "after_vad_end": "final arrival - wall time of the VAD's speech end (final end - pad)",
            "model_time": "p50 of the finals' inference_s at one stream (batch 1)",
            "goal": "p50 <= min_silence_ms + 2 x model time, at one stream",
            "sustained": f"p95 < {P95_LIMIT_S} s, no errors, no missing finals",
        },
        "models": [sweep(model_dir, levels, args.chunk_ms, clip) for model_dir in model_dirs],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for entry in report["models"]:
        print(
            f"{entry['model']['dir']}: model {entry['model_time_s'] * 1000:.0f} ms, "
            f"goal {entry['goal']}, max sustained {entry['max_sustained_streams']} streams"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
