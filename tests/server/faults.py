"""Fault scenarios against a real ``python -m server`` process, shared by the tests
(tests/server/inference/test_faults.py, small and fast) and ``make reliability`` (benchmarks/reliability.py,
the same scenarios measured under load).

* ``faulty_model_dir``: a model directory whose ONNX graph raises for clips of ``fail_from_s``
  seconds or more (an out-of-range Gather on the length): a real ONNX Runtime error.
* ``bad_model_dirs`` / ``start_failure``: missing, corrupt and wrong-version model directories.
* ``sigterm_under_load``: HTTP requests in flight and streams mid-utterance when SIGTERM lands.
* ``kill_and_restart``: ``kill -9`` under load, then a new process on the same port.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from emocore.audio import SAMPLE_RATE
from emocore.model_dir import sha256_file
from server.inference.batcher import FAILURES_UNREADY
from tests.server.live_server import (
    ROOT,
    START_TIMEOUT_S,
    free_port,
    metric,
    serve,
    server_env,
)

FAILING_INPUT = "lengths"
BATCH_ID = re.compile(r"batch (\d+)")


def faulty_model_dir(model_dir: Path, out: Path, fail_from_s: float) -> Path:
    """A copy of ``model_dir`` whose logits pass through ``Gather(zeros[k], lengths // sr)``
    (k = fail_from_s): a batch holding a clip of ``fail_from_s`` s or longer makes ONNX Runtime
    raise (index out of range); shorter clips get the original answers."""
    import onnx
    from onnx import TensorProto, helper

    out = Path(shutil.copytree(model_dir, out, dirs_exist_ok=True))
    model = onnx.load(str(out / "model.onnx"))
    graph = model.graph
    (producer,) = [n for n in graph.node if "logits" in n.output]
    producer.output[list(producer.output).index("logits")] = "logits_unchecked"
    limit = int(fail_from_s)
    graph.initializer.extend(
        [
            helper.make_tensor("fault_table", TensorProto.FLOAT, [limit], [0.0] * limit),
            helper.make_tensor("fault_rate", TensorProto.INT64, [], [SAMPLE_RATE]),
        ]
    )
    graph.node.extend(
        [
            helper.make_node("Div", [FAILING_INPUT, "fault_rate"], ["fault_seconds"]),
            helper.make_node("Gather", ["fault_table", "fault_seconds"], ["fault_zeros"]),
            helper.make_node("ReduceSum", ["fault_zeros"], ["fault_zero"], keepdims=0),
            helper.make_node("Add", ["logits_unchecked", "fault_zero"], ["logits"]),
        ]
    )
    onnx.save(model, str(out / "model.onnx"))
    meta = json.loads((out / "model.json").read_text())
    path = out / "model.onnx"
    meta["files"]["model.onnx"] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    (out / "model.json").write_text(json.dumps(meta, indent=1))
    return out


def failing_batch(model_dir: Path, out: Path) -> dict:
    """A model that raises for clips of 2 s or more: 1 s clips and one 3 s clip at once (the
    3 s clip batches alone), then the 3 s clip again until readiness turns, then a 1 s clip.
    Returns the statuses, whether the failure's batch id is in the log, and /ready on the way."""
    model = faulty_model_dir(model_dir, out, fail_from_s=2)
    good, bad = wav(1.0), wav(3.0)
    with serve_logged(model, max_wait_ms=200, max_batch_size=8, max_length_ratio=1.5) as (
        process,
        url,
    ):
        with ThreadPoolExecutor(4) as pool:
            answers = list(
                pool.map(
                    lambda body: httpx.post(f"{url}/predict", content=body, timeout=60),
                    [good, bad, good, good],
                )
            )
        failed = answers[1].json().get("error", {}) if answers[1].status_code != 200 else {}
        batch_ids = BATCH_ID.findall(failed.get("message", ""))
        ready_after_one = httpx.get(f"{url}/ready").status_code
        repeated = [
            httpx.post(f"{url}/predict", content=bad, timeout=60).status_code
            for _ in range(FAILURES_UNREADY)
        ]
        ready = httpx.get(f"{url}/ready")
        recovered = httpx.post(f"{url}/predict", content=good, timeout=60).status_code
        ready_again = httpx.get(f"{url}/ready").status_code
        logged = [line for line in process.log().splitlines() if "inference failed" in line]
    return {
        "statuses": [a.status_code for a in answers],
        "failed_code": failed.get("code"),
        "batch_id_in_answer": batch_ids[0] if batch_ids else None,
        "batch_id_in_log": bool(batch_ids) and any(f"batch {batch_ids[0]} " in x for x in logged),
        "ready_after_one_failure": ready_after_one,
        "repeated_failures": repeated,
        "ready_after_repeated": ready.status_code,
        "ready_reason": ready.json().get("error", {}).get("message"),
        "served_after": recovered,
        "ready_after_a_success": ready_again,
    }


def client_gone_while_queued(model_dir: Path) -> dict:
    """A client that sends a request and closes its socket while the request waits for batch
    mates: is it dropped before inference? (metrics before and after a second, normal request)"""
    data = wav(1.0)
    with serve(model_dir, max_wait_ms=1000) as (_, url):
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as sock:
            head = f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: {len(data)}\r\n\r\n"
            sock.sendall(head.encode() + data)
            _until(lambda: metric(url, "emodistill_queue_depth") >= 1)
        _until(lambda: metric(url, "emodistill_dropped_total", reason="cancelled") >= 1)
        dropped = metric(url, "emodistill_dropped_total", reason="cancelled")
        status = httpx.post(f"{url}/predict", content=data, timeout=30).status_code
        inferred = metric(url, "emodistill_batch_size_sum")
    return {"dropped_cancelled": dropped, "next_status": status, "utterances_inferred": inferred}


def _until(condition, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)


def bad_model_dirs(model_dir: Path, root: Path) -> dict[str, Path]:
    """Three model directories a server must refuse to start on: missing, corrupt ONNX (the
    sha256 no longer matches), and a model.json of a future format_version."""
    missing = root / "no-such-model"
    corrupt = Path(shutil.copytree(model_dir, root / "corrupt", dirs_exist_ok=True))
    with (corrupt / "model.onnx").open("r+b") as handle:
        handle.seek(100)
        handle.write(b"\xff" * 64)
    future = Path(shutil.copytree(model_dir, root / "future", dirs_exist_ok=True))
    meta = json.loads((future / "model.json").read_text())
    (future / "model.json").write_text(json.dumps(meta | {"format_version": 99}))
    return {"missing": missing, "corrupt": corrupt, "wrong_version": future}


@dataclass
class StartFailure:
    returncode: int
    seconds: float
    stderr: str

    @property
    def line(self) -> str:
        """The start-up line that says why (the last non-empty stderr line)."""
        lines = [line for line in self.stderr.splitlines() if line.strip()]
        return lines[-1] if lines else ""


def start_failure(model_dir: Path, **env: str) -> StartFailure:
    """Run ``python -m server`` on ``model_dir``, expecting it to exit on its own."""
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "server"],
        cwd=ROOT,
        env=server_env(model_dir, free_port()) | env,
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_S,
    )
    return StartFailure(result.returncode, time.monotonic() - started, result.stderr)


def wav(seconds: float, seed: int = 0) -> bytes:
    from tests.fixtures import encode_clip

    return encode_clip("wav", seconds=seconds, kind="noise", seed=seed)


@dataclass
class DrainReport:
    """What SIGTERM under load left behind."""

    exit_code: int | None
    exit_s: float  # SIGTERM -> process gone
    http_status: list[int | str] = field(default_factory=list)  # each in-flight request
    stream_close_codes: list[int | None] = field(default_factory=list)
    finals_expected: int = 0
    finals_received: int = 0
    closing_events: int = 0
    stream_errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        answered = all(s == 200 or s == 503 for s in self.http_status)
        return (
            self.exit_code == 0
            and answered
            and all(code == 1001 for code in self.stream_close_codes)
            and self.finals_received == self.finals_expected
            and not self.stream_errors
        )


def _ws_url(url: str) -> str:
    return "ws" + url.removeprefix("http") + "/v1/stream?sample_rate=16000"


async def _stream_until_term(ws_url: str, spoken: np.ndarray, started: asyncio.Event) -> dict:
    """Send ``spoken`` (ends mid-utterance) and keep reading until the server closes."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    from examples.stream_client import encode

    events: list[dict] = []
    async with connect(ws_url, compression=None) as ws:
        events.append(json.loads(await ws.recv()))
        await ws.send(encode(spoken, "pcm_s16le"))
        code = None
        try:
            while True:
                events.append(json.loads(await ws.recv()))
                if events[-1]["type"] == "speech_start" and events[-1]["utterance"] == 1:
                    started.set()
        except ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd else None
    return {"events": events, "code": code}


async def _until_decoded(client: httpx.AsyncClient, audio_s: float, timeout_s: float = 60) -> None:
    """Until the server has decoded ``audio_s`` seconds of request audio (all queued)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = (await client.get("/metrics")).text
        done = sum(
            float(line.split()[1])
            for line in text.splitlines()
            if line.startswith("emodistill_audio_seconds_total ")
        )
        if done >= audio_s - 0.5:
            return
        await asyncio.sleep(0.05)


def sigterm_under_load(
    model_dir: Path,
    *,
    http_clients: int,
    streams: int,
    clip_s: float = 2.0,
    grace_s: float = 20.0,
    **settings: object,
) -> DrainReport:
    """``http_clients`` requests in flight and ``streams`` streams, each into its second
    utterance, when SIGTERM lands: every request answered (200, or 503 + Retry-After for one
    that arrived after the listener closed), every stream gets `closing`, both finals, 1001,
    and the process exits 0 within the grace period."""
    from tests.server.speech_clips import three_utterances

    clip = three_utterances()
    spoken = clip.samples[: clip.truth[1][0] + SAMPLE_RATE // 2]
    settings = (
        dict(
            shutdown_grace_s=grace_s,
            stream_drain_s=grace_s / 2,
            stream_max_streams_per_client=max(streams, 1),
            # what is measured is the drain of every stream opened, not admission: 8
            # HuBERT-base streams are past what 2 CPU cores serve, and would be refused
            stream_capacity_share=0,
        )
        | settings
    )
    with serve_logged(model_dir, **settings) as (process, url):

        async def scenario() -> tuple[list[dict], list[int | str], float]:
            begun = [asyncio.Event() for _ in range(streams)]
            stream_tasks = [
                asyncio.create_task(_stream_until_term(_ws_url(url), spoken, event))
                for event in begun
            ]
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in begun)), 60)
            body = wav(clip_s)
            async with httpx.AsyncClient(base_url=url, timeout=60) as client:
                posts = [
                    asyncio.create_task(client.post("/predict", content=body))
                    for _ in range(http_clients)
                ]
                await _until_decoded(client, http_clients * clip_s)  # all read and queued
                process.send_signal(signal.SIGTERM)
                signalled = time.monotonic()
                answers = await asyncio.gather(*posts, return_exceptions=True)
            statuses = [
                a.status_code if isinstance(a, httpx.Response) else type(a).__name__
                for a in answers
            ]
            for answer in answers:
                if isinstance(answer, httpx.Response) and answer.status_code == 503:
                    assert "Retry-After" in answer.headers
            return list(await asyncio.gather(*stream_tasks)), statuses, signalled

        outcomes, statuses, signalled = asyncio.run(scenario())
        try:
            exit_code = process.wait(timeout=grace_s + 10)
        except subprocess.TimeoutExpired:
            exit_code = None
        exit_s = time.monotonic() - signalled
    report = DrainReport(exit_code, round(exit_s, 2), statuses)
    for outcome in outcomes:
        events = outcome["events"]
        report.stream_close_codes.append(outcome["code"])
        report.finals_expected += 2
        report.finals_received += len({e["utterance"] for e in events if e["type"] == "final"})
        report.closing_events += sum(e["type"] == "closing" for e in events)
        report.stream_errors += [e["code"] for e in events if e["type"] == "error"]
    return report


@dataclass
class RestartReport:
    killed_answers: dict[str, int]  # outcome of the requests in flight at kill -9
    ready_s: float  # restart -> /ready 200
    served_after: int  # status of a request to the new process


def kill_and_restart(model_dir: Path, *, http_clients: int, **settings: object) -> RestartReport:
    """``kill -9`` with requests in flight, then a new process on the same port: how long until
    it is ready, and that it serves."""
    port = free_port()
    with serve_logged(model_dir, port=port, **settings) as (process, url):
        body = wav(2.0)
        with ThreadPoolExecutor(http_clients) as pool:
            pending = [
                pool.submit(httpx.post, f"{url}/predict", content=body, timeout=30)
                for _ in range(http_clients)
            ]
            time.sleep(0.3)
            process.kill()
            process.wait()
            outcomes: dict[str, int] = {}
            for future in pending:
                try:
                    key = str(future.result().status_code)
                except httpx.HTTPError as exc:
                    key = type(exc).__name__
                outcomes[key] = outcomes.get(key, 0) + 1
    restarted = time.monotonic()
    with serve_logged(model_dir, port=port, **settings) as (_, url):
        ready_s = time.monotonic() - restarted
        status = httpx.post(f"{url}/predict", content=body, timeout=30).status_code
    return RestartReport(outcomes, round(ready_s, 2), status)


@contextmanager
def serve_logged(model_dir: Path, **settings: object) -> Iterator[tuple[subprocess.Popen, str]]:
    """``serve`` with the server's output in a temporary file; ``process.log()`` reads it."""
    import tempfile

    with (
        tempfile.TemporaryFile("w+") as output,
        serve(model_dir, output=output, **settings) as (
            process,
            url,
        ),
    ):
        process.log = lambda: _read(output)  # type: ignore[attr-defined]
        yield process, url


def _read(output) -> str:
    output.flush()
    output.seek(0)
    return output.read()
