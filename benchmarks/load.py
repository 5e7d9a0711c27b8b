"""Load, soak and overload against a live ``python -m server`` on loopback.

    PYTHONPATH=. python benchmarks/load.py                      # 60 s: 64 HTTP clients + 16 streams
    PYTHONPATH=. python benchmarks/load.py --soak-minutes 5     # the same for 5 min (RSS growth)
    PYTHONPATH=. python benchmarks/load.py --overload           # 2x what the machine serves

HTTP requests are a mix of real speech (Debian alsa-utils / asterisk prompts, concatenated with
short pauses): ``short`` raw 0.5-4 s, ``long`` raw 4-15 s, ``segment`` 15-30 s with
``segment=true``, ``multipart`` two or three 0.5-4 s files in one request. They arrive open-loop
(exponential gaps) at a rate set as a multiple of the capacity measured first in the same run
(the machine may be shared: the load average is recorded), at most ``--http-clients`` in flight.
Streams send three espeak-ng sentences with 1 s pauses, over and over, at real-time pace.

Every HTTP answer is counted by status; an answer is *lost* unless it is a 200 or a 503 with
Retry-After (a transport error is lost too). Every spoken utterance is *finaled*, *refused* (an
error event said why: overloaded, shutting down) or *lost*. The server's RSS is sampled twice
a second. The benchmark imports torch only to export the model the first time.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import math
import os
import random
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf
from websockets.exceptions import InvalidStatus

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_stream import build_model  # noqa: E402
from emocore.audio import SAMPLE_RATE, load_audio  # noqa: E402
from examples.stream_client import stream_audio  # noqa: E402
from tests.server.speech_clips import three_utterances  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "load.json"
KINDS = {  # name: (weight, seconds range, query, files per request)
    "short": (0.4, (0.5, 4.0), "", 0),
    "long": (0.2, (4.0, 15.0), "", 0),
    "segment": (0.2, (15.0, 30.0), "?segment=true", 0),
    "multipart": (0.2, (0.5, 4.0), "", 3),
}
BODIES_PER_KIND = 12


# --- the workload -------------------------------------------------------------------------


def speech_pool() -> list[np.ndarray]:
    """Real human speech at 16 kHz; the espeak-ng sentences where the packages are missing."""
    try:
        from tests.fixtures import real_speech_files

        return [load_audio(path.read_bytes()) for path in real_speech_files(limit=40)]
    except BaseException:  # pytest.skip's exception: the Debian packages are not installed
        clip = three_utterances()
        return [clip.samples[s:e] for s, e in clip.truth]


def speech(seconds: float, pool: list[np.ndarray], rng: random.Random) -> np.ndarray:
    """``seconds`` of pool clips separated by 0.2-0.6 s pauses."""
    parts, total = [], 0
    while total < seconds * SAMPLE_RATE:
        gap = np.zeros(int(rng.uniform(0.2, 0.6) * SAMPLE_RATE), np.float32)
        parts += [rng.choice(pool), gap]
        total += parts[-2].shape[0] + gap.shape[0]
    return np.concatenate(parts)[: int(seconds * SAMPLE_RATE)]


def wav(samples: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


@dataclass
class Body:
    kind: str
    audio_s: float
    query: str
    content: bytes | None = None
    files: list[tuple[str, tuple[str, bytes]]] | None = None


def make_bodies(pool: list[np.ndarray], seed: int = 0) -> dict[str, list[Body]]:
    rng = random.Random(seed)
    bodies: dict[str, list[Body]] = {}
    for kind, (_, (low, high), query, files) in KINDS.items():
        bodies[kind] = []
        for _ in range(BODIES_PER_KIND):
            if files:
                clips = [
                    speech(rng.uniform(low, high), pool, rng) for _ in range(rng.randint(2, files))
                ]
                parts = [("file", (f"{i}.wav", wav(c))) for i, c in enumerate(clips)]
                audio_s = sum(c.shape[0] for c in clips) / SAMPLE_RATE
                bodies[kind].append(Body(kind, audio_s, query, files=parts))
            else:
                clip = speech(rng.uniform(low, high), pool, rng)
                bodies[kind].append(
                    Body(kind, clip.shape[0] / SAMPLE_RATE, query, content=wav(clip))
                )
    return bodies


def pick(bodies: dict[str, list[Body]], rng: random.Random) -> Body:
    kinds = list(KINDS)
    kind = rng.choices(kinds, weights=[KINDS[k][0] for k in kinds])[0]
    return rng.choice(bodies[kind])


# --- HTTP clients ---------------------------------------------------------------------------


@dataclass
class Answer:
    kind: str
    sent: float  # seconds since the run began
    latency_s: float
    status: int | str  # HTTP status, or the transport error's name
    retry_after: bool
    code: str | None = None


async def post(client: httpx.AsyncClient, body: Body, began: float) -> Answer:
    sent = time.monotonic()
    try:
        response = await client.post(
            f"/predict{body.query}", content=body.content, files=body.files
        )
    except httpx.HTTPError as exc:
        return Answer(body.kind, sent - began, time.monotonic() - sent, type(exc).__name__, False)
    code = None
    if response.status_code != 200:
        try:
            code = response.json()["error"]["code"]
        except (ValueError, KeyError, TypeError):
            code = "?"
    return Answer(
        body.kind,
        sent - began,
        time.monotonic() - sent,
        response.status_code,
        "retry-after" in response.headers,
        code,
    )


async def open_loop(
    url: str,
    bodies: dict[str, list[Body]],
    rate: Callable[[float], float],
    seconds: float,
    max_in_flight: int,
    seed: int = 1,
) -> tuple[list[Answer], int]:
    """Requests at ``rate(t)`` per second (exponential gaps) for ``seconds``, at most
    ``max_in_flight`` at once (an arrival finding them all busy is not sent: counted apart).
    Returns the answers and the number not sent."""
    rng = random.Random(seed)
    answers: list[Answer] = []
    not_sent = 0
    limits = httpx.Limits(max_connections=max_in_flight, max_keepalive_connections=max_in_flight)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        began = time.monotonic()
        in_flight: set[asyncio.Task] = set()
        t = 0.0
        while True:
            t += rng.expovariate(max(rate(t), 1e-6))
            if t >= seconds:
                break
            await asyncio.sleep(max(0.0, began + t - time.monotonic()))
            if len(in_flight) >= max_in_flight:
                not_sent += 1
                continue
            task = asyncio.create_task(post(client, pick(bodies, rng), began))
            in_flight.add(task)
            task.add_done_callback(
                lambda done: (in_flight.discard(done), answers.append(done.result()))
            )
        if in_flight:
            await asyncio.wait(in_flight)
    return answers, not_sent


async def closed_loop(
    url: str, bodies: dict[str, list[Body]], seconds: float, clients: int
) -> list[Answer]:
    """``clients`` clients sending back to back for ``seconds`` (capacity); a refused one
    waits 1 s before its next request (retrying at once only burns the server's CPU on
    decoding what it will refuse)."""
    answers: list[Answer] = []
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        began = time.monotonic()

        async def worker(index: int) -> None:
            rng = random.Random(100 + index)
            while time.monotonic() - began < seconds:
                answers.append(await post(client, pick(bodies, rng), began))
                if answers[-1].status == 503:  # refused: back off as a polite client would
                    await asyncio.sleep(1.0)

        await asyncio.gather(*(worker(i) for i in range(clients)))
    return answers


def capacity(url: str, bodies: dict[str, list[Body]], seconds: float, clients: int = 8) -> dict:
    """What the machine serves of this mix right now: requests and audio seconds per second."""
    answers = asyncio.run(closed_loop(url, bodies, seconds, clients))
    served = [a for a in answers if a.status == 200]
    elapsed = max(a.sent + a.latency_s for a in answers)
    audio = sum(_audio_s(bodies, a) for a in served)
    return {
        "seconds": round(elapsed, 1),
        "clients": clients,
        "requests_per_s": round(len(served) / elapsed, 3),
        "audio_s_per_s": round(audio / elapsed, 2),
        "not_200": len(answers) - len(served),
    }


def _audio_s(bodies: dict[str, list[Body]], answer: Answer) -> float:
    group = bodies[answer.kind]
    return sum(b.audio_s for b in group) / len(group)


# --- streams ------------------------------------------------------------------------------


async def one_stream(url: str, clip, repeats: int, delay_s: float) -> dict:
    """One real-time stream of ``clip`` x ``repeats``; a final's delay is its arrival minus the
    moment the end of its utterance (the VAD's end) was recorded."""
    await asyncio.sleep(delay_s)
    samples = np.tile(clip.samples, repeats)
    arrivals: dict[int, float] = {}

    def arrived(event: dict) -> None:
        if event["type"] == "final":
            arrivals[event["utterance"]] = time.monotonic()

    spoken = len(clip.truth) * repeats
    try:
        result = await stream_audio(
            url, samples, SAMPLE_RATE, chunk_ms=100, realtime=True, on_event=arrived
        )
    except InvalidStatus as exc:  # refused at the handshake: nothing was spoken
        response = exc.response
        return {
            "spoken": 0,
            "finals": 0,
            "errors": [],
            "refused": {
                "status": response.status_code,
                "retry_after": response.headers.get("Retry-After"),
                "code": _error_code(response.body),
            },
        }
    except Exception as exc:  # cut some other way: its utterances count as lost
        return {"spoken": spoken, "finals": 0, "errors": [type(exc).__name__]}
    finals = [e for e in result.events if e["type"] == "final"]
    return {
        "spoken": spoken,
        "finals": len({f["utterance"] for f in finals}),
        "errors": [e["code"] for e in result.events if e["type"] == "error"],
        "close_code": result.close_code,
        "close_reason": result.close_reason,
        "delay_s": [arrivals[f["utterance"]] - (result.started + f["end"]) for f in finals],
    }


def _error_code(body: bytes | None) -> str | None:
    try:
        return json.loads(body or b"")["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None


async def streams(ws_url: str, count: int, seconds: float) -> list[dict]:
    clip = three_utterances()
    period = clip.samples.shape[0] / SAMPLE_RATE
    repeats = max(1, math.ceil(seconds / period))
    rng = random.Random(count)
    return list(
        await asyncio.gather(
            *(one_stream(ws_url, clip, repeats, rng.uniform(0, period / 3)) for _ in range(count))
        )
    )


# --- the server's memory ------------------------------------------------------------------


class RssSampler:
    """The server process's RSS (MiB) every ``interval_s``, in a thread."""

    def __init__(self, pid: int, interval_s: float = 0.5):
        self.pid, self.interval_s = pid, interval_s
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self.began = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *_) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append((time.monotonic() - self.began, rss_mib(self.pid)))
            except OSError:
                return
            self._stop.wait(self.interval_s)

    def summary(self) -> dict:
        values = [mib for _, mib in self.samples]
        out = {"start_mib": values[0], "peak_mib": max(values), "end_mib": values[-1]}
        span = self.samples[-1][0]
        if span >= 120:  # a soak: the first minute against the last
            first = [mib for t, mib in self.samples if t < 60]
            last = [mib for t, mib in self.samples if t >= span - 60]
            out |= {
                "first_minute_mean_mib": round(float(np.mean(first)), 1),
                "last_minute_mean_mib": round(float(np.mean(last)), 1),
            }
            out["growth_first_to_last_minute"] = round(
                out["last_minute_mean_mib"] / out["first_minute_mean_mib"] - 1, 4
            )
        return out


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise OSError(f"no VmRSS for {pid}")


# --- summaries ----------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if values else None


def http_summary(answers: list[Answer], not_sent: int = 0) -> dict:
    by_status: dict[str, int] = {}
    for a in answers:
        by_status[str(a.status)] = by_status.get(str(a.status), 0) + 1
    lost = [a for a in answers if not (a.status == 200 or (a.status == 503 and a.retry_after))]
    per_kind = {}
    for kind in KINDS:
        served = [a.latency_s for a in answers if a.kind == kind and a.status == 200]
        per_kind[kind] = {
            "served": len(served),
            "p50_s": percentile(served, 50),
            "p99_s": percentile(served, 99),
        }
    refused = [a.latency_s for a in answers if a.status == 503]
    codes: dict[str, int] = {}
    for a in answers:
        if a.code:
            codes[a.code] = codes.get(a.code, 0) + 1
    return {
        "requests": len(answers),
        "not_sent_all_clients_busy": not_sent,
        "by_status": dict(sorted(by_status.items())),
        "error_codes": codes,
        "served": by_status.get("200", 0),
        "http_5xx_other_than_503": sum(
            n for s, n in by_status.items() if s.isdigit() and int(s) >= 500 and s != "503"
        ),
        "lost": len(lost),
        "refused_503_p99_s": percentile(refused, 99),
        "latency_by_kind": per_kind,
    }


def stream_summary(runs: list[dict]) -> dict:
    """Streams refused at the handshake spoke nothing (like an HTTP 503, nothing is lost; a
    refusal without 503 + Retry-After is counted apart); the others' utterances each get a
    final, an error event that refuses them, or count as lost."""
    refusals = [r["refused"] for r in runs if "refused" in r]
    spoken = sum(r["spoken"] for r in runs)
    finals = sum(r["finals"] for r in runs)
    errors = [code for r in runs for code in r["errors"]]
    refused = sum(r["spoken"] - r["finals"] for r in runs if r["errors"])
    delays = [x for r in runs for x in r.get("delay_s", [])]
    return {
        "streams": len(runs),
        "refused_at_handshake": len(refusals),
        "refused_without_503_retry_after": sum(
            not (r["status"] == 503 and r["retry_after"]) for r in refusals
        ),
        "refusal_codes": sorted({str(r["code"]) for r in refusals}),
        "utterances_spoken": spoken,
        "finals": finals,
        "refused_with_error": refused,
        "lost": spoken - finals - refused,
        "errors": errors,
        "close_codes": sorted({str(r.get("close_code")) for r in runs}),
        "incomplete": [
            {k: r.get(k) for k in ("spoken", "finals", "errors", "close_code", "close_reason")}
            for r in runs
            if r["finals"] < r["spoken"]
        ],
        "final_delay_p50_s": percentile(delays, 50),
        "final_delay_p99_s": percentile(delays, 99),
    }


# --- the runs -----------------------------------------------------------------------------


def load_run(
    url: str,
    pid: int,
    bodies: dict[str, list[Body]],
    *,
    seconds: float,
    http_rate: float,
    http_clients: int,
    stream_count: int,
) -> dict:
    """HTTP at ``http_rate`` requests/s (at most ``http_clients`` in flight) and
    ``stream_count`` real-time streams, together for ``seconds``."""
    ws_url = "ws" + url.removeprefix("http") + "/v1/stream"

    async def both():
        return await asyncio.gather(
            open_loop(url, bodies, lambda _: http_rate, seconds, http_clients),
            streams(ws_url, stream_count, seconds),
        )

    with RssSampler(pid) as rss:
        started = time.monotonic()
        (answers, not_sent), runs = asyncio.run(both())
        wall = time.monotonic() - started
    return {
        "seconds": round(wall, 1),
        "http_rate_offered_per_s": round(http_rate, 3),
        "http": http_summary(answers, not_sent),
        "streams": stream_summary(runs),
        "rss": rss.summary(),
    }


def overload_run(
    url: str,
    bodies: dict[str, list[Body]],
    served_rate: float,
    *,
    normal_s: float,
    over_s: float,
    after_s: float,
    factor: float = 2.0,
    base: float = 0.5,
    window_s: float | None = None,
) -> dict:
    """``base`` x then ``factor`` x then ``base`` x the served rate: per window, offered vs
    served vs refused and the p99 of what was served (per window of ``window_s``, by default
    long enough for 4 requests at the overload rate); the server's queue depth over time."""
    edges = (normal_s, normal_s + over_s)
    # Windows long enough for a few requests each at the overload rate (at least 2 s).
    window_s = window_s or max(2.0, 4 / max(factor * served_rate, 1e-6))
    total = normal_s + over_s + after_s

    def rate(t: float) -> float:
        return served_rate * (factor if edges[0] <= t < edges[1] else base)

    depth: list[tuple[float, int]] = []

    async def run() -> tuple[list[Answer], int]:
        stop = asyncio.Event()

        async def poll_depth() -> None:
            async with httpx.AsyncClient(base_url=url, timeout=5) as client:
                while not stop.is_set():
                    try:
                        response = await client.get("/metrics")
                        for line in response.text.splitlines():
                            if line.startswith("emodistill_queue_depth "):
                                depth.append(
                                    (time.monotonic() - began, int(float(line.split()[1])))
                                )
                    except httpx.HTTPError:
                        pass
                    await asyncio.sleep(0.5)

        began = time.monotonic()
        poller = asyncio.create_task(poll_depth())
        result = await open_loop(url, bodies, rate, total, max_in_flight=1024, seed=7)
        stop.set()
        await poller
        return result

    answers, _ = asyncio.run(run())
    windows = []
    for start in np.arange(0, total, window_s):
        sent = [a for a in answers if start <= a.sent < start + window_s]
        served = [a.latency_s for a in sent if a.status == 200]
        windows.append(
            {
                "t": round(float(start), 1),
                "offered_per_s": round(len(sent) / window_s, 2),
                "served_per_s": round(len(served) / window_s, 2),
                "refused_per_s": round(sum(a.status == 503 for a in sent) / window_s, 2),
                "p99_s": percentile(served, 99),
            }
        )
    phase = {
        name: [a for a in answers if lo <= a.sent < hi]
        for name, (lo, hi) in {
            "normal": (0, edges[0]),
            "overload": edges,
            "after": (edges[1], total),
        }.items()
    }
    summary = {name: http_summary(group) for name, group in phase.items()}
    over = phase["overload"]
    first_refusal = min((a.sent for a in over if a.status == 503), default=None)
    normal_p99 = summary["normal"]["latency_by_kind"]
    return {
        "served_rate_per_s": round(served_rate, 3),
        "factor": factor,
        "phases_s": [normal_s, over_s, after_s],
        "first_refusal_after_s": None
        if first_refusal is None
        else round(first_refusal - edges[0], 2),
        "refusal_p99_s": summary["overload"]["refused_503_p99_s"],
        "accepted_p99_s": percentile([a.latency_s for a in over if a.status == 200], 99),
        "normal_p99_s": percentile([a.latency_s for a in phase["normal"] if a.status == 200], 99),
        "recovery_s": recovery_s(depth, edges[0], edges[1], settle_s=2.0),
        "phases": summary,
        "windows": windows,
        "queue_depth": depth,
        "normal_latency_by_kind": normal_p99,
    }


def recovery_s(
    depth: list[tuple[float, int]], normal_end: float, dropped_at: float, settle_s: float
) -> float | None:
    """Seconds after the load dropped until the queue depth is back within what it was before
    the overload (its maximum then) and stays there for ``settle_s``."""
    threshold = max((d for t, d in depth if t < normal_end), default=0)
    after = [(t, d) for t, d in depth if t >= dropped_at]
    for index, (t, _d) in enumerate(after):
        if all(x <= threshold for s, x in after[index:] if s <= t + settle_s):
            return round(t - dropped_at, 2)
    return None


def plot_overload(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    windows = result["windows"]
    t = [w["t"] for w in windows]
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    top.plot(t, [w["offered_per_s"] for w in windows], label="offered")
    top.plot(t, [w["served_per_s"] for w in windows], label="served (200)")
    top.plot(t, [w["refused_per_s"] for w in windows], label="refused (503)")
    top.set_ylabel("requests / s (by send time)")
    top.legend()
    bottom.plot(t, [w["p99_s"] or 0 for w in windows], color="black", label="p99 latency, served")
    depth_t = [x for x, _ in result["queue_depth"]]
    twin = bottom.twinx()
    twin.plot(
        depth_t, [d for _, d in result["queue_depth"]], color="grey", alpha=0.5, label="queue depth"
    )
    twin.set_ylabel("queue depth (utterances)")
    bottom.set_ylabel("seconds")
    bottom.set_xlabel("time (s)")
    for edge in (result["phases_s"][0], sum(result["phases_s"][:2])):
        for axis in (top, bottom):
            axis.axvline(edge, color="red", linestyle=":")
    bottom.legend(loc="upper left")
    figure.suptitle(f"Overload: {result['factor']:g}x the served rate, then back")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main() -> int:
    from tests.server.live_server import serve

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backbone", default="hubert-base", help="random-weight student (cached)")
    parser.add_argument("--model-dir", type=Path, help="an existing model directory instead")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--soak-minutes", type=float, help="a soak of this length instead")
    parser.add_argument("--http-clients", type=int, default=64)
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--load", type=float, default=0.5, help="HTTP offered, x the capacity")
    parser.add_argument("--capacity-seconds", type=float, default=20.0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    model_dir = args.model_dir or build_model(args.backbone)
    bodies = make_bodies(speech_pool())
    seconds = 60 * args.soak_minutes if args.soak_minutes else args.seconds
    settings = dict(
        threads=0,
        stream_max_streams=args.streams + 4,
        stream_max_streams_per_client=args.streams + 4,
    )
    report = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "load_average_start": load_average(),
    }
    with serve(model_dir, start_timeout_s=180, output=sys.stderr, **settings) as (process, url):
        report["capacity"] = capacity(url, bodies, args.capacity_seconds)
        rate = args.load * report["capacity"]["requests_per_s"]
        report["run"] = load_run(
            url,
            process.pid,
            bodies,
            seconds=seconds,
            http_rate=rate,
            http_clients=args.http_clients,
            stream_count=args.streams,
        )
    report["load_average_end"] = load_average()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
