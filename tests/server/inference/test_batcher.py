"""The dynamic batcher: batching, grouping, limits, cancellation, drain; exact answers."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from server.api.metrics import Metrics
from server.inference.batcher import Batcher
from server.inference.requests import (
    BatcherClosed,
    InferenceFailed,
    Priority,
    QueueFull,
    RequestTimeout,
)
from server.inference.runtime import Outputs, Runtime

SR = 16000


class FakeRuntime:
    """Answers from each row's valid samples only; records batches; can hold a batch."""

    def __init__(self, batch_invariant: bool = True, fail: bool = False):
        self.batch_invariant = batch_invariant
        self.model = SimpleNamespace(onnx_path=Path("model.int8.onnx"))
        self.batches: list[list[int]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.fail = fail

    def run(self, audio: np.ndarray, lengths: np.ndarray):
        self.batches.append(lengths.tolist())
        self.gate.wait(5)
        if self.fail:
            raise RuntimeError("boom")
        sums = np.array([audio[i, :n].sum() for i, n in enumerate(lengths)], np.float32)
        logits = np.stack([sums, lengths.astype(np.float32), -sums], 1)
        return Outputs(logits, logits[:, :2].copy())


def clip(seconds: float, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-0.5, 0.5, int(seconds * SR)).astype(np.float32)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


async def started(runtime, **options) -> Batcher:
    batcher = Batcher(runtime, **options)
    batcher.start()
    return batcher


@pytest.mark.parametrize("model", ["tiny_model_dir", "dims_model_dir"])
def test_concurrent_requests_share_a_batch_and_equal_unbatched(model, request):
    runtime = Runtime.load(request.getfixturevalue(model), device="cpu", threads=1)
    clips = [clip(s, i) for i, s in enumerate((1.0, 1.3, 0.7, 1.9, 0.026))]

    async def main():
        batcher = await started(runtime, max_batch_size=8, max_wait_ms=100, max_length_ratio=100)
        results = await asyncio.gather(*(batcher.infer(c) for c in clips))
        await batcher.close()
        return results

    results = run(main())
    assert [r.batch_size for r in results] == [len(clips)] * len(clips)
    for result, samples in zip(results, clips, strict=True):
        alone = runtime.run_clips([samples])
        np.testing.assert_allclose(result.logits, alone.logits[0], atol=1e-4)
        np.testing.assert_allclose(result.embedding, alone.embedding[0], atol=1e-4)
        assert result.probabilities.sum() == pytest.approx(1.0, abs=1e-5)
        if runtime.dimensions is None:
            assert result.dimensions is None and alone.dimensions is None
        else:  # the dimensions of a batched utterance are its own too
            assert result.dimensions.shape == (3,)
            np.testing.assert_allclose(result.dimensions, alone.dimensions[0], atol=1e-4)


def test_max_batch_size_is_respected():
    runtime = FakeRuntime()

    async def main():
        batcher = await started(runtime, max_batch_size=4, max_wait_ms=50)
        results = await asyncio.gather(*(batcher.infer(clip(1.0, i)) for i in range(10)))
        await batcher.close()
        return results

    results = run(main())
    assert [len(b) for b in runtime.batches] == [4, 4, 2]
    assert sorted(r.batch_size for r in results) == [2, 2] + [4] * 8


def test_similar_lengths_are_grouped():
    runtime = FakeRuntime()
    lengths_s = (1.0, 5.0, 1.1, 5.5, 0.9)

    async def main():
        batcher = await started(runtime, max_batch_size=8, max_wait_ms=50, max_length_ratio=2.0)
        await asyncio.gather(*(batcher.infer(clip(s)) for s in lengths_s))
        await batcher.close()

    run(main())
    assert [sorted(b) for b in runtime.batches] == [[14400, 16000, 17600], [80000, 88000]]


def test_answers_come_back_to_their_own_request():
    runtime = FakeRuntime()
    clips = [clip(1.0 + i / 10, i) for i in range(6)]

    async def main():
        batcher = await started(runtime, max_batch_size=3, max_wait_ms=20)
        results = await asyncio.gather(*(batcher.infer(c) for c in clips))
        await batcher.close()
        return results

    for result, samples in zip(run(main()), clips, strict=True):
        assert result.logits[0] == pytest.approx(samples.sum(), rel=1e-5)
        assert result.logits[1] == len(samples)


def test_a_lone_request_waits_at_most_max_wait():
    runtime = FakeRuntime()

    async def main():
        batcher = await started(runtime, max_batch_size=8, max_wait_ms=80)
        result = await batcher.infer(clip(0.5))
        await batcher.close()
        return result

    result = run(main())
    assert result.batch_size == 1
    assert 0.07 <= result.queue_wait_s < 0.5


def test_by_default_a_lone_request_runs_at_once_and_the_next_batch_fills_meanwhile():
    """max_wait_ms 0 (the default): an idle batcher runs a lone utterance without waiting for
    mates; what arrives while that batch runs forms the next batch, exactly as before."""
    from server.settings import Settings

    runtime = FakeRuntime()
    assert Settings().max_wait_ms == 0

    async def main():
        batcher = Batcher.from_settings(runtime, Settings())
        batcher.start()
        alone = await batcher.infer(clip(0.5))
        runtime.gate.clear()  # the next batch holds the worker
        first = asyncio.ensure_future(batcher.infer(clip(1.0, 1)))
        while not runtime.batches[1:]:
            await asyncio.sleep(0.001)
        queued = [asyncio.ensure_future(batcher.infer(clip(1.0, i))) for i in range(2, 7)]
        await asyncio.sleep(0.05)
        runtime.gate.set()
        results = await asyncio.gather(first, *queued)
        await batcher.close()
        return alone, results

    alone, results = run(main())
    assert alone.batch_size == 1 and alone.queue_wait_s < 0.05
    assert [r.batch_size for r in results] == [1] + [5] * 5
    assert [len(b) for b in runtime.batches] == [1, 1, 5]


def test_full_queue_raises_queue_full_and_counts_it():
    runtime = FakeRuntime()
    runtime.gate.clear()
    metrics = Metrics()

    async def main():
        batcher = await started(
            runtime, max_batch_size=1, max_wait_ms=0, queue_size=2, observer=metrics
        )
        first = asyncio.ensure_future(batcher.infer(clip(0.5)))
        while not runtime.batches:  # the first request is in flight, the worker is held
            await asyncio.sleep(0.01)
        queued = [asyncio.ensure_future(batcher.infer(clip(0.5))) for _ in range(2)]
        await asyncio.sleep(0.05)
        assert batcher.depth == 2
        with pytest.raises(QueueFull) as error:
            await batcher.infer(clip(0.5))
        assert error.value.retry_after_s >= 1
        runtime.gate.set()
        await asyncio.gather(first, *queued)
        await batcher.close()

    run(main())
    assert metrics.dropped.labels(reason="queue_full")._value.get() == 1


def test_request_timeout():
    runtime = FakeRuntime()
    runtime.gate.clear()
    metrics = Metrics()

    async def main():
        batcher = await started(
            runtime, max_batch_size=1, max_wait_ms=0, timeout_s=0.1, observer=metrics
        )
        first = asyncio.ensure_future(batcher.infer(clip(0.5)))
        while not runtime.batches:
            await asyncio.sleep(0.01)
        with pytest.raises(RequestTimeout):
            await batcher.infer(clip(0.7))  # queued behind the held batch
        assert batcher.depth == 0  # the timed-out request left the queue
        runtime.gate.set()
        with pytest.raises(RequestTimeout):
            await first  # timed out while its batch ran
        await batcher.close()

    run(main())
    assert runtime.batches == [[8000]]  # the queued one never reached inference
    # both timed out; only the queued one was dropped (once, not also as "cancelled")
    assert metrics.timeouts._value.get() == 2
    assert metrics.dropped.labels(reason="timeout")._value.get() == 1
    assert metrics.dropped.labels(reason="cancelled")._value.get() == 0


def test_cancelled_requests_are_dropped_before_inference():
    runtime = FakeRuntime()
    runtime.gate.clear()
    metrics = Metrics()

    async def main():
        batcher = await started(runtime, max_batch_size=4, max_wait_ms=0, observer=metrics)
        first = asyncio.ensure_future(batcher.infer(clip(0.5)))
        while not runtime.batches:
            await asyncio.sleep(0.01)
        gone = asyncio.ensure_future(batcher.infer(clip(0.6)))
        kept = asyncio.ensure_future(batcher.infer(clip(0.7)))
        await asyncio.sleep(0.02)
        gone.cancel()  # the client went away while queued
        await asyncio.sleep(0.02)
        runtime.gate.set()
        await asyncio.gather(first, kept)
        await batcher.close()

    run(main())
    assert runtime.batches == [[8000], [11200]]
    assert metrics.dropped.labels(reason="cancelled")._value.get() == 1


def test_non_batch_invariant_model_runs_one_at_a_time():
    runtime = FakeRuntime(batch_invariant=False)

    async def main():
        batcher = await started(runtime, max_batch_size=8, max_wait_ms=50)
        assert batcher.max_batch_size == 1
        await asyncio.gather(*(batcher.infer(clip(1.0, i)) for i in range(3)))
        await batcher.close()

    run(main())
    assert [len(b) for b in runtime.batches] == [1, 1, 1]


def test_close_finishes_the_queue_then_refuses():
    runtime = FakeRuntime()

    async def main():
        batcher = await started(runtime, max_batch_size=2, max_wait_ms=1000)
        pending = [asyncio.ensure_future(batcher.infer(clip(1.0, i))) for i in range(5)]
        await asyncio.sleep(0.01)
        await batcher.close()  # does not wait the 1 s max_wait: drains at once
        assert sum(len(b) for b in runtime.batches) == 5
        assert len(await asyncio.gather(*pending)) == 5
        with pytest.raises(BatcherClosed):
            await batcher.infer(clip(1.0))

    run(main())


def test_inference_failure_fails_the_batch_not_the_batcher():
    runtime = FakeRuntime(fail=True)

    async def main():
        batcher = await started(runtime, max_batch_size=2, max_wait_ms=10)
        with pytest.raises(InferenceFailed):
            await batcher.infer(clip(1.0))
        runtime.fail = False
        result = await batcher.infer(clip(1.0))
        await batcher.close()
        return result

    assert run(main()).batch_size == 1


def test_only_mono_utterances_are_queued():
    async def main():
        batcher = await started(FakeRuntime())
        for bad in (np.zeros(0, np.float32), np.zeros((2, 800), np.float32)):
            with pytest.raises(ValueError):
                await batcher.infer(bad)
        await batcher.close()

    run(main())


def test_first_failure_cancels_the_other_utterances_of_a_request():
    from server.api.predict import all_or_nothing

    runtime = FakeRuntime()
    runtime.gate.clear()

    async def fails_soon():
        await asyncio.sleep(0.05)
        raise ValueError("bad file")

    async def main():
        batcher = await started(runtime, max_batch_size=1, max_wait_ms=0)
        blocker = asyncio.ensure_future(batcher.infer(clip(0.5)))
        while not runtime.batches:
            await asyncio.sleep(0.01)
        with pytest.raises(ValueError):
            await all_or_nothing([batcher.infer(clip(0.6)), fails_soon()])
        await asyncio.sleep(0.01)
        assert batcher.depth == 0  # the sibling left the queue
        runtime.gate.set()
        await blocker
        await batcher.close()

    run(main())
    assert runtime.batches == [[8000]]


async def busy(batcher: Batcher, runtime: FakeRuntime) -> asyncio.Future:
    """A first request in flight with the worker held (runtime.gate cleared)."""
    first = asyncio.ensure_future(batcher.infer(clip(0.1)))
    while not runtime.batches:
        await asyncio.sleep(0.01)
    return first


def test_finals_go_before_speculation_before_partials():
    """With the worker held, one request of each priority queues (partials first); the next
    batches take them most urgent first."""
    runtime = FakeRuntime()
    runtime.gate.clear()

    async def main():
        batcher = await started(
            runtime, max_batch_size=4, max_wait_ms=0, queue_size=8, max_length_ratio=1.0
        )
        first = await busy(batcher, runtime)
        lengths = {Priority.PARTIAL: 0.3, Priority.SPECULATIVE: 0.4, Priority.FINAL: 0.5}
        queued = []
        for priority, seconds in lengths.items():
            queued.append(asyncio.ensure_future(batcher.infer(clip(seconds), priority=priority)))
            await asyncio.sleep(0.01)
        runtime.gate.set()
        await asyncio.gather(first, *queued)
        await batcher.close()

    run(main())
    assert [batch[0] for batch in runtime.batches[1:]] == [
        int(0.5 * SR),
        int(0.4 * SR),
        int(0.3 * SR),
    ]


def test_a_promoted_guess_goes_before_later_finals():
    """A stream's guess that became its final (``promote``) is served at final priority: it
    goes before a final queued after it, not after every final."""
    runtime = FakeRuntime()
    runtime.gate.clear()

    async def main():
        batcher = await started(
            runtime, max_batch_size=1, max_wait_ms=0, queue_size=8, max_length_ratio=1.0
        )
        first = await busy(batcher, runtime)
        guess = asyncio.ensure_future(
            batcher.infer(clip(0.4), priority=Priority.SPECULATIVE, tag=("s", 1))
        )
        await asyncio.sleep(0.01)
        final = asyncio.ensure_future(batcher.infer(clip(0.5)))
        await asyncio.sleep(0.01)
        assert batcher.promote(("s", 1)) and not batcher.promote(("s", 2))
        runtime.gate.set()
        await asyncio.gather(first, guess, final)
        assert not batcher.promote(("s", 1))  # answered: nothing to promote
        await batcher.close()

    run(main())
    assert [batch[0] for batch in runtime.batches[1:]] == [int(0.4 * SR), int(0.5 * SR)]


def test_guesses_and_partials_are_refused_while_a_full_batch_waits():
    runtime = FakeRuntime()
    runtime.gate.clear()

    async def main():
        batcher = await started(runtime, max_batch_size=2, max_wait_ms=0, queue_size=8)
        first = await busy(batcher, runtime)
        queued = [asyncio.ensure_future(batcher.infer(clip(0.2))) for _ in range(2)]
        await asyncio.sleep(0.01)
        for priority in (Priority.SPECULATIVE, Priority.PARTIAL):
            with pytest.raises(QueueFull):
                await batcher.infer(clip(0.2), priority=priority)
        runtime.gate.set()
        await asyncio.gather(first, *queued)
        await batcher.close()

    run(main())


def test_a_final_waits_for_room_where_http_gets_queue_full():
    runtime = FakeRuntime()
    runtime.gate.clear()

    async def main():
        batcher = await started(runtime, max_batch_size=1, max_wait_ms=0, queue_size=1)
        first = await busy(batcher, runtime)
        queued = asyncio.ensure_future(batcher.infer(clip(0.2)))
        await asyncio.sleep(0.01)
        with pytest.raises(QueueFull):
            await batcher.infer(clip(0.3))  # HTTP: 503 + Retry-After
        waiting = asyncio.ensure_future(batcher.infer(clip(0.3), wait=True))
        await asyncio.sleep(0.05)
        assert not waiting.done() and batcher.depth == 1
        runtime.gate.set()
        results = await asyncio.gather(first, queued, waiting)
        await batcher.close()
        return results

    assert len(run(main())) == 3


def test_waiting_for_room_counts_in_the_timeout():
    runtime = FakeRuntime()
    runtime.gate.clear()

    async def main():
        batcher = await started(
            runtime, max_batch_size=1, max_wait_ms=0, queue_size=1, timeout_s=0.2
        )
        first = await busy(batcher, runtime)
        queued = asyncio.ensure_future(batcher.infer(clip(0.2)))
        await asyncio.sleep(0.01)
        with pytest.raises(RequestTimeout):
            await batcher.infer(clip(0.3), wait=True)
        runtime.gate.set()
        await asyncio.gather(first, queued, return_exceptions=True)
        await batcher.close()

    run(main())
