"""SIGTERM on a real `python -m server` process: open streams are drained, not cut (1012)."""

from __future__ import annotations

import asyncio
import json
import signal

import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from emocore.audio import SAMPLE_RATE
from examples.stream_client import encode
from tests.server.live_server import serve
from tests.server.speech_clips import three_utterances


def test_sigterm_sends_closing_then_every_spoken_final_then_1001(tiny_model_dir):
    clip = three_utterances()
    # All of the first utterance and half a second into the second: both were spoken.
    spoken = clip.samples[: clip.truth[1][0] + SAMPLE_RATE // 2]
    with serve(tiny_model_dir, shutdown_grace_s=10, stream_drain_s=4) as (process, url):
        ws_url = "ws" + url.removeprefix("http") + "/v1/stream?sample_rate=16000"

        async def scenario() -> tuple[list[dict], int, bool]:
            events: list[dict] = []
            async with connect(ws_url) as ws:
                events.append(json.loads(await ws.recv()))
                await ws.send(encode(spoken, "pcm_s16le"))
                while not any(e["type"] == "speech_start" and e["utterance"] == 1 for e in events):
                    events.append(json.loads(await ws.recv()))
                process.send_signal(signal.SIGTERM)
                try:
                    while True:
                        events.append(json.loads(await ws.recv()))
                except ConnectionClosed as closed:
                    code = closed.rcvd.code if closed.rcvd else None
            # The server admits no new stream while it drains or after.
            try:
                async with connect(ws_url, open_timeout=5) as late:
                    await late.recv()
                admitted = True
            except (OSError, ConnectionClosed, Exception):
                admitted = False
            return events, code, admitted

        events, code, admitted = asyncio.run(scenario())
        assert process.wait(timeout=30) == 0
    kinds = [(e["type"], e.get("utterance")) for e in events]
    assert code == 1001, kinds
    assert ("closing", None) in kinds
    finals = [e for e in events if e["type"] == "final"]
    assert [f["utterance"] for f in finals] == [0, 1]
    assert finals[1]["end"] == pytest.approx(len(spoken) / SAMPLE_RATE, abs=0.05)
    assert kinds.index(("closing", None)) < kinds.index(("final", 1))
    assert not [e for e in events if e["type"] == "error"]
    assert not admitted
    assert np.isfinite(finals[1]["probabilities"]["neutral"])
