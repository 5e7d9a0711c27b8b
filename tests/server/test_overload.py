"""Overload: the batcher refuses at once what it could not answer within the request timeout
(a queue bounded in utterances is not bounded in time: 64 queued 30 s clips are minutes of
work), instead of accepting it and failing it with a 503 timeout later."""

from __future__ import annotations

import asyncio
import contextlib
import time

import numpy as np

from server.batcher import QueueFull, RequestTimeout
from server.metrics import Metrics
from tests.server.test_batcher import SR, FakeRuntime, clip, run, started


class SlowRuntime(FakeRuntime):
    """Inference takes ``seconds_per_audio_s`` per second of audio in the batch."""

    def __init__(self, seconds_per_audio_s: float):
        super().__init__()
        self.seconds_per_audio_s = seconds_per_audio_s

    def run(self, audio: np.ndarray, lengths: np.ndarray):
        time.sleep(self.seconds_per_audio_s * float(lengths.sum()) / SR)
        return super().run(audio, lengths)


def test_a_backlog_longer_than_the_timeout_is_refused_at_once_not_timed_out():
    metrics = Metrics()

    async def main():
        # 1 s of audio takes 0.1 s: 30 queued 1 s clips are 3 s of work against a 1 s timeout.
        batcher = await started(
            SlowRuntime(0.1), max_batch_size=1, max_wait_ms=0, timeout_s=1.0, observer=metrics
        )
        await batcher.infer(clip(1.0))  # the batcher learns how fast it serves

        async def one(index: int):
            began = time.monotonic()
            try:
                await batcher.infer(clip(1.0, seed=index))
                return "served", time.monotonic() - began
            except QueueFull as exc:
                assert exc.retry_after_s >= 1
                return "refused", time.monotonic() - began
            except RequestTimeout:
                return "timeout", time.monotonic() - began

        outcomes = await asyncio.gather(*(one(i) for i in range(30)))
        await batcher.close()
        return outcomes

    outcomes = run(main())
    kinds = [kind for kind, _ in outcomes]
    assert "timeout" not in kinds, kinds
    assert 5 <= kinds.count("served") <= 12, kinds
    assert max(s for kind, s in outcomes if kind == "refused") < 0.1
    assert max(s for kind, s in outcomes if kind == "served") <= 1.0
    assert metrics.dropped.labels(reason="backlog")._value.get() == kinds.count("refused")


def test_a_stream_final_that_may_wait_is_never_refused_for_the_backlog():
    async def main():
        batcher = await started(SlowRuntime(0.1), max_batch_size=1, max_wait_ms=0, timeout_s=1.0)
        await batcher.infer(clip(1.0))
        finals = [batcher.infer(clip(1.0, seed=i), wait=True) for i in range(20)]
        results = await asyncio.gather(*finals, return_exceptions=True)
        await batcher.close()
        return results

    results = run(main())
    assert not [r for r in results if isinstance(r, QueueFull)]


def test_one_slow_batch_does_not_refuse_everything_after_it():
    """With nothing queued ahead a request is admitted whatever the last speed was: its batch
    measures the speed afresh (a slow outlier must not lock the server into refusing)."""

    async def main():
        runtime = SlowRuntime(0.1)
        batcher = await started(runtime, max_batch_size=1, max_wait_ms=0, timeout_s=1.0)
        runtime.seconds_per_audio_s = 2.0  # one hiccup: 1 s of audio took 2 s
        with contextlib.suppress(RequestTimeout):
            await batcher.infer(clip(1.0))
        await asyncio.sleep(2.1)
        runtime.seconds_per_audio_s = 0.1
        answers = [await batcher.infer(clip(1.0, seed=i)) for i in range(3)]
        await batcher.close()
        return answers

    assert len(run(main())) == 3


def test_a_backed_up_server_refuses_before_reading_and_decoding_the_body(make_client, monkeypatch):
    """With the queue already past the backlog limit a request is refused before its body is
    decoded (and, with segment=true, split): under overload those are the CPU the refusal
    should not spend (refusals took 14-28 s on a starved machine)."""
    from server import predict
    from tests.fixtures import encode_clip

    decoded = []
    real_load = predict.load_audio
    monkeypatch.setattr(
        predict, "load_audio", lambda *a, **k: decoded.append(1) or real_load(*a, **k)
    )
    with make_client() as client:
        batcher = client.app.state.batcher
        monkeypatch.setattr(batcher, "_backlog_s", lambda samples: 100.0)  # minutes queued
        response = client.post("/predict", content=encode_clip("wav", seconds=1.0))
        assert response.status_code == 503 and response.json()["error"]["code"] == "queue_full"
        assert int(response.headers["Retry-After"]) >= 1
        assert decoded == []
        monkeypatch.setattr(batcher, "_backlog_s", lambda samples: 0.0)
        assert client.post("/predict", content=encode_clip("wav", seconds=1.0)).status_code == 200
        assert decoded == [1]
