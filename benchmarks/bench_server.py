"""Server throughput and latency against the transformers pipeline and a bare ONNX Runtime
session, for the shipped backbone (Whisper tiny.en, the demo model), Whisper base and HuBERT-base.

    PYTHONPATH=. python benchmarks/bench_server.py [--rounds 3] [--seconds 10]
        [--models whisper-tiny.en whisper-base hubert-base] [--demo models/demo]

Each model is served from one model directory, and every path runs its weights:
  * whisper-tiny.en: the demo model (``--demo``, built by ``python -m training.demo``: trained
    weights, its int8 model as its export gated it);
  * whisper-base: the real Whisper base encoder with a random head (weighted layer pooling and a
    dimensions head, as the demo's), int8 calibrated, and its batching measured, on the demo
    build's speech clips (``--speech-run``; nothing gated: a random head's accuracy is no
    figure);
  * hubert-base: the HuBERT-base architecture, random init (speed does not depend on weights).
Each round measures, per model, back to back on the same 3 s clips:
  * transformers ``pipeline("audio-classification")`` on the model dir's hf/ checkpoint
    (``trust_remote_code`` for the Whisper students), sequential;
  * a bare ONNX Runtime session on model.onnx / model.int8.onnx, batch 1 sequential and
    batches of 8;
  * ``python -m server`` on loopback (one fp32 and one int8 process per model) with one client
    (sequential) and with 8 concurrent clients, for a fixed time: throughput, p50/p95/p99
    latency, mean batch size;
  * a lone 3 s request's p50 latency against the bare session's on the same clip, the two
    alternating call by call so that both see the same load.
The clients are keep-alive ``http.client`` connections, one thread each, in this process (not
the server's). Throughput is audio seconds per wall second (the goal metric) and per CPU
second (server + client process; robust to other load on a shared machine). Medians over
interleaved rounds: compare ratios, and see the recorded load average.
The benchmark imports torch (to export the models and run the pipeline); the server does not.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import platform
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from emocore.audio import SAMPLE_RATE, load_audio  # noqa: E402
from server.settings import Settings  # noqa: E402
from tests.server.live_server import metric, serve  # noqa: E402

DEFAULT_CACHE = ROOT / ".cache" / "bench_server"
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "bench_server.json"
MODELS = ("whisper-tiny.en", "whisper-base", "hubert-base")
DEMO = "whisper-tiny.en"  # the shipped demo student: the goals are its
# The demo model as served by default (int8 where its export accepted it), against the
# transformers pipeline on the same weights; the lone request against a bare session.
GOALS = {"clients_vs_pipeline": 2.8, "sequential_vs_pipeline": 1.9, "lone_overhead_ms": 2.0}
CLIP_SECONDS = 3.0
CLIPS = 16
VARIANTS = ("fp32", "int8")
Runner = Callable[[np.ndarray], object]


# ---- the model directories --------------------------------------------------------------------


def build_random(name: str, cache: Path, speech_run: Path | None = None) -> Path:
    """A model directory (fp32 + int8 + hf/) for ``name`` with random weights where it has no
    pretrained ones, exported once into ``cache``. A Whisper student's int8 is calibrated and
    its batching measured on ``speech_run``'s clips (the demo build's: the training part and
    the validation speakers, as an export does) when given: Whisper int8 batches exactly on
    synthetic signals but not on speech."""
    out = cache / name
    if all((out / f).exists() for f in ("model.json", "model.int8.onnx", "hf")):
        return out
    import torch
    import transformers

    from export import build_model_dir
    from export.quantize import synthetic_calibration
    from training.data.utterance import EMOTIONS
    from training.models.student import Student, build_classifier

    torch.manual_seed(0)
    print(f"exporting the {name} student to {out} (once, a few minutes)", file=sys.stderr)
    transformers.logging.set_verbosity_error()  # the unused Whisper decoder weights
    if name == "hubert-base":
        student = Student(build_classifier(name, EMOTIONS))
    else:  # pooled and with dimensions, as the demo student
        classifier = build_classifier(name, EMOTIONS, use_weighted_layer_sum=True)
        student = Student(classifier, dimensions=True)
    if speech_run is None or name == "hubert-base":
        calibration = synthetic_calibration(8)
        return build_model_dir(student.eval(), out, int8=True, calibration=calibration)
    from export.run import choose_fold, int8_sets

    calibration, check = int8_sets(choose_fold(speech_run, None), speech_run, list(EMOTIONS))
    # a random head: its accuracy means nothing, so nothing is gated (speed only)
    limits = {"max_dimensions_diff": float("inf"), "max_ccc_drop": float("inf")}
    return build_model_dir(
        student.eval(), out, int8=True, calibration=calibration["audio"], int8_check=check,
        int8_max_ua_drop=1.0, int8_limits=limits,
    )  # fmt: skip


def model_dirs(
    names: list[str], demo: Path, cache: Path, speech_run: Path | None
) -> dict[str, tuple[Path, str]]:
    """name -> (model directory, what its weights are)."""
    dirs = {}
    for name in names:
        if name == DEMO:
            meta = json.loads((demo / "model.json").read_text())
            if "model.int8.onnx" not in meta["files"]:
                raise SystemExit(f"{demo} has no accepted int8 model: {meta['int8']}")
            dirs[name] = (demo, f"the demo model ({demo.name}/, trained weights)")
        elif name == "whisper-base":
            dirs[name] = (build_random(name, cache, speech_run), "real encoder, random head")
        else:
            dirs[name] = (build_random(name, cache), "random init")
    return dirs


# ---- the paths ----------------------------------------------------------------------------------


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


def sequential(run: Runner, batches: list, seconds: float) -> dict:
    """Call ``run(batch)`` back to back for ``seconds`` (after one warm-up call)."""
    run(batches[0])
    latencies: list[float] = []
    audio_s = 0.0
    started, cpu_started = time.perf_counter(), time.process_time()
    while time.perf_counter() - started < seconds:
        batch = batches[len(latencies) % len(batches)]
        t0 = time.perf_counter()
        run(batch)
        latencies.append(time.perf_counter() - t0)
        audio_s += sum(len(c) for c in batch) / SAMPLE_RATE
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    return rates(audio_s, elapsed, cpu) | {"calls": len(latencies), **percentiles(latencies)}


def pipeline_runner(model_dir: Path, threads: int) -> Runner:
    """transformers pipeline("audio-classification") on the model dir's hf/ checkpoint."""
    import torch
    from transformers import pipeline

    classify = pipeline(
        "audio-classification", model=str(model_dir / "hf"), device=-1, trust_remote_code=True
    )

    def run(batch: list[np.ndarray]):
        torch.set_num_threads(threads or os.cpu_count() or 1)
        with torch.inference_mode():
            return [classify(clip) for clip in batch]

    return run


def bare_session(path: Path, threads: int) -> Runner:
    """A bare session with the server's session options (its threads, spinning within a run
    only): every output, padded batches. Options of its own would measure them, not the
    server: a session left spinning after its run slows whatever runs next on the 2 cores."""
    import onnxruntime as ort

    from emocore.model_dir import pad_batch
    from server.inference.runtime import session_options

    options = session_options(threads)
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(batch: list[np.ndarray]):
        audio, lengths = pad_batch(batch)
        return session.run(None, {"audio": audio, "lengths": lengths})

    return run


class Client:
    """One keep-alive HTTP/1.1 connection (http.client: little CPU of its own)."""

    def __init__(self, url: str):
        self.connection = http.client.HTTPConnection(url.removeprefix("http://"), timeout=300)

    def post(self, body: bytes) -> dict:
        self.connection.request("POST", "/predict", body, {"Content-Type": "audio/wav"})
        response = self.connection.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"{response.status}: {data[:200]!r}")
        return json.loads(data)

    def close(self) -> None:
        self.connection.close()


def drive(url: str, bodies: list[bytes], seconds: float, clients: int) -> tuple[dict, float]:
    """``clients`` threads posting back to back for ``seconds``: (stats, audio seconds)."""
    latencies: list[float] = []
    audio = [0.0]
    errors = [0]
    stop_at = time.perf_counter() + seconds
    lock = threading.Lock()

    def worker(index: int) -> None:
        client, sent = Client(url), index
        try:
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                try:
                    answer = client.post(bodies[sent % len(bodies)])
                except RuntimeError:
                    with lock:
                        errors[0] += 1
                    continue
                finally:
                    sent += clients
                elapsed = time.perf_counter() - t0
                with lock:
                    latencies.append(elapsed)
                    audio[0] += answer["results"][0]["duration_s"]
        finally:
            client.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"requests": len(latencies), "errors": errors[0], **percentiles(latencies)}, audio[0]


def measure_server(url: str, pid: int, bodies: list[bytes], seconds: float, clients: int) -> dict:
    """Throughput of a running server; CPU time counts the server and this (client) process."""
    sums = [metric(url, f"emodistill_batch_size_{k}") for k in ("sum", "count")]
    started, cpu_started = time.perf_counter(), time.process_time() + process_cpu_s(pid)
    stats, audio_s = drive(url, bodies, seconds, clients)
    elapsed = time.perf_counter() - started
    cpu = time.process_time() + process_cpu_s(pid) - cpu_started
    after = [metric(url, f"emodistill_batch_size_{k}") for k in ("sum", "count")]
    mean_batch = (after[0] - sums[0]) / max(after[1] - sums[1], 1)
    return rates(audio_s, elapsed, cpu) | stats | {"mean_batch_size": round(mean_batch, 3)}


def lone_latency(bare: Runner, clip: np.ndarray, url: str, body: bytes, seconds: float) -> dict:
    """One request at a time, alternating bare session call and server request."""
    bare_s, server_s = [], []
    client = Client(url)
    try:
        client.post(body)
        bare([clip])
        stop_at = time.perf_counter() + seconds
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            bare([clip])
            bare_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            client.post(body)
            server_s.append(time.perf_counter() - t0)
    finally:
        client.close()
    bare_p50, server_p50 = float(np.median(bare_s)) * 1000, float(np.median(server_s)) * 1000
    return {
        "pairs": len(bare_s),
        "bare_p50_ms": round(bare_p50, 2),
        "server_p50_ms": round(server_p50, 2),
        "overhead_ms": round(server_p50 - bare_p50, 2),
    }


# ---- rounds -------------------------------------------------------------------------------------


def one_round(model: dict, clips: list[np.ndarray], bodies: list[bytes], args) -> dict:
    """Every path of one model once, back to back, so that they see the same machine load."""
    singles = [[c] for c in clips]
    eights = [clips[i : i + 8] for i in range(0, len(clips), 8)]
    result: dict = {"pipeline": sequential(model["pipeline"], singles, args.seconds)}
    pipeline = result["pipeline"]["audio_s_per_s"]
    ratios: dict[str, float] = {}
    for variant in VARIANTS:
        bare, (url, pid) = model["bare"][variant], model["servers"][variant]
        result[f"bare_{variant}"] = sequential(bare, singles, args.seconds)
        result[f"bare_{variant}_b8"] = sequential(bare, eights, args.seconds)
        result[f"server_{variant}_seq"] = measure_server(url, pid, bodies, args.seconds, 1)
        result[f"server_{variant}_clients"] = measure_server(
            url, pid, bodies, args.seconds, args.clients
        )
        lone = lone_latency(bare, clips[0], url, bodies[0], args.lone_seconds)
        result[f"{variant}_lone_3s"] = lone
        for path in ("bare_{}", "bare_{}_b8", "server_{}_seq", "server_{}_clients"):
            key = path.format(variant)
            ratios[f"{key}_vs_pipeline"] = result[key]["audio_s_per_s"] / pipeline
        ratios[f"{variant}_lone_overhead_ms"] = lone["overhead_ms"]
        ratios[f"{variant}_lone_vs_bare"] = lone["server_p50_ms"] / lone["bare_p50_ms"]
    result["ratios"] = {key: round(value, 3) for key, value in ratios.items()}
    print(json.dumps({model["name"]: result["ratios"]}), file=sys.stderr, flush=True)
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


def goals_met(ratios: dict, variant: str) -> dict[str, bool]:
    return {
        "clients_vs_pipeline": ratios[f"server_{variant}_clients_vs_pipeline"]
        >= GOALS["clients_vs_pipeline"],
        "sequential_vs_pipeline": ratios[f"server_{variant}_seq_vs_pipeline"]
        >= GOALS["sequential_vs_pipeline"],
        "lone_overhead_ms": ratios[f"{variant}_lone_overhead_ms"] <= GOALS["lone_overhead_ms"],
    }


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def commit() -> str | None:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short=10", "HEAD"],
            cwd=ROOT, capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return None


@contextmanager
def served(model_dir: Path, args) -> Iterator[dict]:
    """One `python -m server` process per variant on loopback: {variant: (url, pid)}."""
    with ExitStack() as stack:
        servers = {}
        for variant in VARIANTS:
            process, url = stack.enter_context(
                serve(
                    model_dir,
                    start_timeout_s=180,
                    int8=str(variant == "int8").lower(),
                    threads=args.threads,
                    max_batch_size=args.max_batch_size,
                    max_wait_ms=args.max_wait_ms,
                    ort_spinning=args.ort_spinning,
                )
            )
            servers[variant] = (url, process.pid)
        yield servers


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repetitions (medians)")
    parser.add_argument("--seconds", type=float, default=10.0, help="per throughput measurement")
    parser.add_argument("--lone-seconds", type=float, default=10.0, help="per lone measurement")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients")
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--max-wait-ms", type=float, help="default: the server's")
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0 = cores)")
    parser.add_argument(
        "--ort-spinning", choices=("true", "false"), help="the server's (default: its own)"
    )
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--demo", type=Path, default=ROOT / "models" / "demo")
    parser.add_argument(
        "--speech-run",
        type=Path,
        default=ROOT / "runs" / "demo",
        help="the demo build's run: its clips calibrate Whisper base's int8 (once)",
    )
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    speech_run = args.speech_run if (args.speech_run / "folds").is_dir() else None
    dirs = model_dirs(args.models, args.demo, args.cache, speech_run)
    clips = make_clips(CLIPS, CLIP_SECONDS)
    bodies = [wav_bytes(clip) for clip in clips]
    decoded = [load_audio(body) for body in bodies]  # what the server infers (16-bit WAV)
    models: dict[str, dict] = {}
    load_before, started = load_average(), time.time()
    with ExitStack() as stack:
        for name, (model_dir, weights) in dirs.items():
            meta = json.loads((model_dir / "model.json").read_text())
            servers = stack.enter_context(served(model_dir, args))
            models[name] = {
                "name": name,
                "pipeline": pipeline_runner(model_dir, args.threads),
                "bare": {
                    v: bare_session(
                        model_dir / f"model{'.int8' if v == 'int8' else ''}.onnx", args.threads
                    )
                    for v in VARIANTS
                },  # fmt: skip
                "servers": servers,
                "info": {
                    "weights": weights,
                    "backbone": meta["backbone"],
                    "dimensions": bool(meta.get("dimensions")),
                    "int8_batch_invariant": meta["int8"]["batch_invariant"],
                    "int8_accepted": meta["int8"].get("accepted"),
                },
            }
            for url, _ in servers.values():  # first requests of each shape
                drive(url, bodies[:2], 1.0, 2)
        print(f"load average {load_before}", file=sys.stderr)
        rounds: dict[str, list[dict]] = {name: [] for name in models}
        for index in range(args.rounds):
            print(f"round {index + 1} of {args.rounds}", file=sys.stderr, flush=True)
            for name, model in models.items():
                rounds[name].append(one_round(model, decoded, bodies, args))
        for model in models.values():
            url = model["servers"]["int8"][0]
            served_model = json.loads(_get(url, "/v1/model"))
            model["info"]["int8_served_max_batch_size"] = served_model["max_batch_size"]
    report = {
        "what": "python -m server vs the transformers pipeline vs bare ONNX Runtime, per model, "
        "3 s clips; medians over interleaved rounds",
        "command": "PYTHONPATH=. python benchmarks/bench_server.py " + shlex.join(sys.argv[1:]),
        "commit": commit(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
        "minutes": round((time.time() - started) / 60, 1),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "load_average": [load_before, load_average()],
        "config": {
            "rounds": args.rounds,
            "seconds_per_measurement": args.seconds,
            "lone_seconds": args.lone_seconds,
            "clients": args.clients,
            "max_batch_size": args.max_batch_size,
            "max_wait_ms": Settings().max_wait_ms if args.max_wait_ms is None else args.max_wait_ms,
            "threads": args.threads or os.cpu_count(),
            "ort_spinning": Settings().ort_spinning
            if args.ort_spinning is None
            else args.ort_spinning == "true",
            "clip_seconds": CLIP_SECONDS,
            "clips": CLIPS,
        },
        "goals": GOALS,
        "demo": DEMO,
        "models": {},
    }
    for name, model in models.items():
        summary = median_of(rounds[name])
        entry = {**model["info"], "median": summary, "rounds": rounds[name]}
        if name == DEMO:
            entry["met"] = goals_met(summary["ratios"], "int8")
            entry["met_rounds"] = [goals_met(r["ratios"], "int8") for r in rounds[name]]
            print(json.dumps({"goals": GOALS, "met": entry["met"]}, indent=1))
        report["models"][name] = entry
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


def _get(url: str, path: str) -> str:
    connection = http.client.HTTPConnection(url.removeprefix("http://"), timeout=30)
    try:
        connection.request("GET", path)
        return connection.getresponse().read().decode()
    finally:
        connection.close()


if __name__ == "__main__":
    sys.exit(main())
