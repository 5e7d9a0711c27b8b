"""A batcher that cannot die silently: its collector is restarted or readiness says why,
repeated inference failures flip readiness, failures and timeouts are counted once each, and
one request never holds more queue slots than the queue has (failure and timeout counts:
tests/server/inference/test_batcher.py)."""

from __future__ import annotations

import asyncio
import io
import logging

import pytest
import soundfile as sf

from server.inference.batcher import FAILURES_UNREADY, MAX_RESTARTS
from server.inference.requests import BatcherUnavailable, InferenceFailed
from tests.fixtures import encode_clip
from tests.server.inference.test_batcher import FakeRuntime, clip, run, started


def crash_collector(batcher, times: int | None) -> list[int]:
    """Make the collector raise outside its per-batch try ``times`` times (None: always)."""
    crashes = []
    original = batcher._take_batch

    def take():
        if times is None or len(crashes) < times:
            crashes.append(1)
            raise RuntimeError("collector bug")
        return original()

    batcher._take_batch = take
    return crashes


def test_a_crashed_collector_is_logged_once_and_restarted(caplog):
    runtime = FakeRuntime()

    async def main():
        batcher = await started(runtime, max_batch_size=2, max_wait_ms=0, timeout_s=5)
        crashes = crash_collector(batcher, times=1)
        result = await batcher.infer(clip(0.5))  # the restarted collector answers it
        assert crashes == [1] and batcher.restarts == 1
        assert batcher.unready_reason is None
        await batcher.close()
        return result

    with caplog.at_level(logging.ERROR, "emodistill.batcher"):
        assert run(main()).batch_size == 1
    crashed = [r for r in caplog.records if "collector crashed" in r.getMessage()]
    assert len(crashed) == 1 and crashed[0].exc_info is not None


def test_a_collector_that_keeps_crashing_fails_fast_and_turns_unready():
    runtime = FakeRuntime()

    async def main():
        batcher = await started(runtime, max_batch_size=2, max_wait_ms=0, timeout_s=20)
        crash_collector(batcher, times=None)
        loop = asyncio.get_running_loop()
        began = loop.time()
        with pytest.raises((BatcherUnavailable, InferenceFailed)):
            await batcher.infer(clip(0.5))
        assert loop.time() - began < 5  # not the 20 s request timeout
        assert batcher.restarts == MAX_RESTARTS
        assert "crashed" in batcher.unready_reason and "collector bug" in batcher.fault
        with pytest.raises(BatcherUnavailable):
            await batcher.infer(clip(0.5))
        await batcher.close()

    run(main())


def test_requests_waiting_for_room_fail_fast_when_the_collector_stays_down():
    """A request waiting for queue room (streams' finals wait) is told at once that the
    batcher is down, not at its timeout, and never queues on the dead batcher."""
    runtime = FakeRuntime()

    async def main():
        batcher = await started(runtime, max_batch_size=1, max_wait_ms=0, timeout_s=20,
                                queue_size=1)  # fmt: skip
        crash_collector(batcher, times=None)
        loop = asyncio.get_running_loop()
        began = loop.time()
        queued = asyncio.ensure_future(batcher.infer(clip(0.5)))
        waiting = asyncio.ensure_future(batcher.infer(clip(0.5), wait=True))  # queue full
        with pytest.raises((BatcherUnavailable, InferenceFailed)):
            await queued
        with pytest.raises(BatcherUnavailable):
            await waiting
        assert loop.time() - began < 5  # not the 20 s request timeout
        assert not batcher._queue
        await batcher.close()

    run(main())


def test_ready_and_health_say_why_the_batcher_is_down(make_client):
    with make_client() as client:
        crash_collector(client.app.state.server.batcher, times=None)
        response = client.post("/predict", content=encode_clip("wav"))
        assert response.status_code in (500, 503)
        assert response.status_code != 503 or response.json()["error"]["code"] == "unavailable"
        response = client.post("/predict", content=encode_clip("wav"))
        assert response.status_code == 503 and response.json()["error"]["code"] == "unavailable"
        ready = client.get("/ready")
        assert ready.status_code == 503 and "crashed" in ready.json()["error"]["message"]
        health = client.get("/health")
        assert health.status_code == 503
        assert health.json()["status"] == "unhealthy" and "crashed" in health.json()["reason"]


def test_repeated_inference_failures_flip_readiness_until_a_success(make_client):
    with make_client() as client:
        runtime = client.app.state.server.runtime
        original = runtime.run

        def broken(*args):
            raise RuntimeError("device lost")

        runtime.run = broken
        for attempt in range(FAILURES_UNREADY):
            assert client.get("/ready").status_code == 200, attempt
            response = client.post("/predict", content=encode_clip("wav"))
            assert response.json()["error"]["code"] == "inference_failed"
        ready = client.get("/ready")
        assert ready.status_code == 503 and "RuntimeError" in ready.json()["error"]["message"]
        health = client.get("/health")
        assert health.status_code == 200 and health.json()["status"] == "degraded"
        metrics = client.get("/metrics").text
        assert (
            f'emodistill_inference_failures_total{{unit="batches"}} {FAILURES_UNREADY}.0' in metrics
        )
        runtime.run = original
        assert client.post("/predict", content=encode_clip("wav")).status_code == 200
        assert client.get("/ready").status_code == 200
        assert client.get("/health").json()["status"] == "ok"


def _speech_wav() -> bytes:
    from tests.server.speech_clips import three_utterances

    clip_ = three_utterances(lead_s=0.3, gap_s=0.8, tail_s=0.5)
    buffer = io.BytesIO()
    sf.write(buffer, clip_.samples, 16_000, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def test_many_segmented_files_never_hold_more_than_the_queue(make_client):
    """4 files x 3 utterances with segment=true, on a queue of 4 that fills for 300 ms:
    the request's utterances wait for its own slots instead of overflowing the queue."""
    with make_client(queue_size=4, max_batch_size=4, max_wait_ms=300, max_files=8) as client:
        batcher = client.app.state.server.batcher
        deepest = []
        original = batcher._report_depth

        def report():
            deepest.append(batcher.depth)
            original()

        batcher._report_depth = report
        data = _speech_wav()
        files = [("file", (f"{i}.wav", data)) for i in range(4)]
        response = client.post("/predict?segment=true", files=files)
        assert response.status_code == 200, response.text
        results = response.json()["results"]
        assert [len(r["segments"]) for r in results] == [3, 3, 3, 3]
        assert max(deepest) <= 4
