"""/v1/stream on a real uvicorn over loopback: concurrency, vanishing clients, the example client."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from websockets.asyncio.client import connect

from emocore.audio import SAMPLE_RATE
from examples.stream_client import encode, stream_audio
from server.settings import Settings
from tests.server.speech_clips import three_utterances
from tests.server.uvicorn_thread import live_server

ROOT = Path(__file__).resolve().parents[3]
TOLERANCE_S = 0.150


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    settings = Settings(
        model_dir=tiny_model_dir,
        threads=1,
        max_wait_ms=5.0,
        stream_max_streams=24,
        stream_max_streams_per_client=24,
    )
    with live_server(settings) as running:
        yield running


def wait_until(condition, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_twenty_concurrent_streams_each_get_their_three_finals(server):
    clip = three_utterances()

    async def one(index: int):
        # Different frame sizes per stream; as fast as the server reads.
        return await stream_audio(
            server.ws_url, clip.samples, SAMPLE_RATE, chunk_ms=20 + 10 * index, realtime=False
        )

    async def all_of_them():
        return await asyncio.gather(*(one(i) for i in range(20)))

    results = asyncio.run(all_of_them())
    for result in results:
        assert result.close_code == 1000
        finals = [e for e in result.events if e["type"] == "final"]
        assert [f["utterance"] for f in finals] == [0, 1, 2]
        for final, (start, end) in zip(finals, clip.truth, strict=True):
            assert abs(final["start"] - start / SAMPLE_RATE) <= TOLERANCE_S
            assert abs(final["end"] - end / SAMPLE_RATE) <= TOLERANCE_S
    # Every stream's answer for an utterance is the same (exact batching across streams).
    first = [f["probabilities"] for f in results[0].events if f["type"] == "final"]
    for result in results[1:]:
        probabilities = [f["probabilities"] for f in result.events if f["type"] == "final"]
        for mine, theirs in zip(probabilities, first, strict=True):
            assert mine == pytest.approx(theirs, abs=1e-4)
    assert wait_until(lambda: server.app.state.server.streams.open == 0)


def test_client_vanishing_mid_utterance_frees_everything_quietly(server, caplog):
    clip = three_utterances()
    caplog.set_level(logging.INFO)
    mid_utterance = clip.truth[0][0] + SAMPLE_RATE

    async def vanish():
        url = f"{server.ws_url}?sample_rate=16000&interim=true&partial_interval_ms=100"
        async with connect(url) as ws:
            assert json.loads(await ws.recv())["type"] == "ready"
            await ws.send(encode(clip.samples[:mid_utterance], "pcm_s16le"))
            assert json.loads(await ws.recv())["type"] == "speech_start"
            ws.transport.abort()  # the TCP connection drops: no close frame

    asyncio.run(vanish())
    state = server.app.state.server
    assert wait_until(lambda: state.streams.open == 0)
    assert wait_until(lambda: state.batcher.depth == 0)
    assert wait_until(lambda: any("(disconnected" in r.getMessage() for r in caplog.records))
    noisy = [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert not noisy, [r.getMessage() for r in noisy]


def test_example_client_prints_the_events(server, tmp_path):
    clip = three_utterances()
    path = tmp_path / "three.wav"
    sf.write(path, clip.samples, SAMPLE_RATE, subtype="PCM_16")
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples/stream_client.py"),
            str(path),
            "--url",
            server.ws_url,
            "--fast",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    assert lines[0]["type"] == "ready"
    assert [e["utterance"] for e in lines if e.get("type") == "final"] == [0, 1, 2]
    assert lines[-1] == {"closed": 1000}


def test_a_fast_client_is_slowed_not_buffered(tiny_model_dir):
    """Inference far slower than the client: reading pauses, so the stream's audio does not
    pile up in the server, and every final still arrives in order."""
    clip = three_utterances()
    samples = np.concatenate([clip.samples] * 4)
    settings = Settings(model_dir=tiny_model_dir, threads=1, stream_max_pending=1)
    with live_server(settings) as running:
        batcher = running.app.state.server.batcher
        original = batcher.infer

        async def slow_infer(audio, **options):
            await asyncio.sleep(0.25)
            return await original(audio, **options)

        batcher.infer = slow_infer
        result = asyncio.run(
            stream_audio(running.ws_url, samples, SAMPLE_RATE, chunk_ms=100, realtime=False)
        )
    kinds = [(e["type"], e["utterance"]) for e in result.events]
    assert [u for kind, u in kinds if kind == "final"] == list(range(12))
    # One pending utterance allowed: the reader stops at endpoint k+1 until final k is out, so
    # it never reaches utterance k+2 before final k was sent.
    for k in range(10):
        assert kinds.index(("final", k)) < kinds.index(("speech_start", k + 2))
