"""Where one lone ``POST /predict`` spends its time, stage by stage, against a bare ONNX Runtime
session on the same model and clip.

    PYTHONPATH=. python benchmarks/profile_request.py --model-dir models/demo [--int8]
        [--requests 300] [--threads 0] [--source DIR] [--label NAME] [--out PATH]

The app runs under uvicorn (httptools, uvloop: as ``python -m server`` runs it) in a thread of
this process, and a keep-alive HTTP client sends one 3 s 16-bit WAV clip at a time; blocks of
requests alternate with blocks of calls of a bare session on the same decoded clip, so both see
the same machine. Time stamps
are taken at fixed points of the request's path by wrapping the functions that mark them
(nothing in the server is changed for it):

  A  the ASGI app is called (uvicorn has parsed the request line and headers)
  B  ``read_uploads`` starts (the middleware, the dependencies and the API key check are done)
  C  the body is read
  D  ``load_audio`` starts (in whichever thread decodes it)
  E  ``load_audio`` returns
  F  ``Batcher.infer`` is called (the utterance is handed to the batcher)
  G  ``Runtime.run`` starts (ONNX Runtime, in the batcher's worker thread)
  H  ``Runtime.run`` returns
  I  ``Batcher.infer`` returns the answer to the route
  J  the response's head is sent (scores, the answer object, its JSON)
  K  the response's body is sent

The stages are the differences, medians over the requests; "client and HTTP" is the client's
latency less A to K (the request parsed, the socket both ways, the client itself). ``--source``
profiles another checkout of the server (e.g. an older commit) with this same script.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "profile_request.json"
CLIP_SECONDS = 3.0
# Bare calls and requests alternate in blocks: both see the same machine, and an ONNX Runtime
# pool left spinning by one (the server's before it stopped at the end of a run) slows only
# the first call of the other's block, which the medians leave out.
BLOCK = 20
MARKS = "ABCDEFGHIJK"
STAGES = [
    ("middleware, dependencies, API key", "A", "B"),
    ("body read", "B", "C"),
    ("to the decoder (a worker thread, or not)", "C", "D"),
    ("decode + validation", "D", "E"),
    ("to the batcher", "E", "F"),
    ("batcher hand-off (queue, wait, worker hop)", "F", "G"),
    ("ONNX Runtime", "G", "H"),
    ("back to the route", "H", "I"),
    ("scores, answer, JSON", "I", "J"),
    ("response body sent", "J", "K"),
]


class Marks:
    """Time stamps of the request in flight (one at a time)."""

    def __init__(self) -> None:
        self.current: dict[str, float] = {}

    def mark(self, name: str) -> None:
        self.current.setdefault(name, time.perf_counter())


def instrument(marks: Marks) -> None:
    """Wrap the functions whose calls mark the stages."""
    from server.api import predict
    from server.inference.batcher import Batcher
    from server.inference.runtime import Runtime

    read_uploads, load_audio = predict.read_uploads, predict.load_audio
    infer, run = Batcher.infer, Runtime.run

    async def timed_read_uploads(*args, **kwargs):
        marks.mark("B")
        try:
            return await read_uploads(*args, **kwargs)
        finally:
            marks.mark("C")

    def timed_load_audio(*args, **kwargs):
        marks.mark("D")
        try:
            return load_audio(*args, **kwargs)
        finally:
            marks.mark("E")

    async def timed_infer(self, *args, **kwargs):
        marks.mark("F")
        try:
            return await infer(self, *args, **kwargs)
        finally:
            marks.mark("I")

    def timed_run(self, *args, **kwargs):
        marks.mark("G")
        try:
            return run(self, *args, **kwargs)
        finally:
            marks.mark("H")

    predict.read_uploads, predict.load_audio = timed_read_uploads, timed_load_audio
    Batcher.infer, Runtime.run = timed_infer, timed_run


def timed_app(app, marks: Marks):
    """The ASGI app with marks A (called), J (response head sent) and K (body sent)."""

    async def wrapped(scope, receive, send):
        if scope["type"] != "http" or scope["path"] != "/predict":
            return await app(scope, receive, send)
        marks.mark("A")

        async def timed_send(message):
            if message["type"] == "http.response.start":
                marks.mark("J")
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                marks.mark("K")

        await app(scope, receive, timed_send)

    return wrapped


def bare_session(path: Path, threads: int):
    """The same bare session whichever server is profiled: the current server's options
    (spinning within a run, stopping at its end), written out here so that ``--source`` does
    not change the reference."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1")
    options.add_session_config_entry("session.force_spinning_stop", "1")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(clip: np.ndarray):
        return session.run(None, {"audio": clip[None], "lengths": np.array([len(clip)])})

    return run


def profile(args) -> dict:
    from server.settings import Settings
    from tests.server.uvicorn_thread import live_server

    marks = Marks()
    instrument(marks)
    settings = Settings(model_dir=args.model_dir, int8=args.int8, threads=args.threads)
    with live_server(settings, wrap=lambda app: timed_app(app, marks)) as live:
        return measure(args, marks, live.url)


def measure(args, marks: Marks, url: str) -> dict:
    import soundfile as sf

    from emocore.audio import SAMPLE_RATE, load_audio
    from emocore.model_dir import INT8_FILE, MODEL_FILE

    rng = np.random.default_rng(0)
    clip = (0.1 * rng.standard_normal(int(CLIP_SECONDS * SAMPLE_RATE))).astype(np.float32)
    buffer = io.BytesIO()
    sf.write(buffer, clip, SAMPLE_RATE, format="WAV", subtype="PCM_16")
    body = buffer.getvalue()
    decoded = load_audio(body)
    bare = bare_session(args.model_dir / (INT8_FILE if args.int8 else MODEL_FILE), args.threads)
    connection = http.client.HTTPConnection(url.removeprefix("http://"))

    def post() -> float:
        started = time.perf_counter()
        connection.request("POST", "/predict", body, {"Content-Type": "audio/wav"})
        response = connection.getresponse()
        answer = response.read()
        elapsed = time.perf_counter() - started
        assert response.status == 200, answer[:300]
        return elapsed

    for _ in range(20):  # warm-up: first calls of every path
        post()
        bare(decoded)
    client, bare_s, stages = [], [], {name: [] for name, _, _ in STAGES}
    try:
        for index in range(args.requests):
            if index % BLOCK == 0:  # a block of bare calls, then a block of requests
                for _ in range(BLOCK):
                    started = time.perf_counter()
                    bare(decoded)
                    bare_s.append(time.perf_counter() - started)
            marks.current = {}
            client.append(post())
            got = marks.current
            missing = [m for m in MARKS if m not in got]
            assert not missing, f"marks never reached: {missing}"
            for name, start, end in STAGES:
                stages[name].append(got[end] - got[start])
            stages.setdefault("client and HTTP", []).append(client[-1] - (got["K"] - got["A"]))
    finally:
        connection.close()

    def ms(values: list[float]) -> float:
        return round(float(np.median(values)) * 1000, 3)

    return {
        "client_p50_ms": ms(client),
        "bare_p50_ms": ms(bare_s),
        "overhead_p50_ms": round(ms(client) - ms(bare_s), 3),
        "stages_p50_ms": {name: ms(values) for name, values in stages.items()},
        "requests": args.requests,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=ROOT / "models" / "demo")
    parser.add_argument("--int8", action="store_true", help="serve model.int8.onnx")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0 = cores)")
    parser.add_argument("--source", type=Path, help="profile the server of this checkout")
    parser.add_argument("--label", default="after", help="the key this profile is saved under")
    parser.add_argument("--commit", help="the commit profiled (recorded)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))  # this checkout's test helpers (the in-thread server)
    if args.source:  # that checkout's packages: imported first, their submodules follow them
        sys.path.insert(0, str(args.source.resolve()))
        import emocore  # noqa: F401
        import server  # noqa: F401

        sys.path.pop(0)
    args.model_dir = args.model_dir.resolve()
    load_before = [round(x, 2) for x in os.getloadavg()]
    result = profile(args)
    result |= {
        "model_dir": str(args.model_dir.relative_to(ROOT))
        if args.model_dir.is_relative_to(ROOT)
        else args.model_dir.name,
        "backbone": json.loads((args.model_dir / "model.json").read_text())["backbone"],
        "variant": "int8" if args.int8 else "fp32",
        "threads": args.threads or os.cpu_count(),
        "commit": args.commit,
        "load_average": [load_before, [round(x, 2) for x in os.getloadavg()]],
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    print(json.dumps(result, indent=1))
    report = json.loads(args.out.read_text()) if args.out.exists() else {}
    report.setdefault("machine", {"cpus": os.cpu_count(), "platform": platform.platform()})
    report.setdefault("profiles", {})[args.label] = result
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
