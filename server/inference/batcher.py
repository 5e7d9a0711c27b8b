"""The dynamic batcher every request shares (HTTP and websocket).

Requests queue one utterance each. A collector task waits until ``max_batch_size`` utterances
are queued or ``max_wait_ms`` has passed since the oldest arrived (by default 0: no wait, a
lone request runs at once), picks the oldest plus the queued utterances closest to it in length
(bounded padding), and runs ONNX Runtime on them in one worker thread, so the event loop never
blocks. While that batch runs, new requests queue up and form the next batch. The model's batching is exact, so a batched answer equals the
unbatched one. Cancelled requests (client gone, timed out) leave the queue before inference.

Overload: an HTTP request is refused at once (QueueFull, 503 + Retry-After) when the audio
already queued, at the measured inference speed, would keep it waiting past ``max_backlog_s``:
a queue bounded in utterances is not bounded in time (64 queued 30 s clips are minutes of
work), a refusal now beats a timeout later, and a short backlog is what lets the server
recover within seconds once the load drops. New streams are refused by the same rule.

Priorities (streams): a batch is formed around the most urgent queued request, finals (and
HTTP requests) before speculative inference before partials; speculative and partial requests
are refused at once while a full batch already waits, and never wait for room. A final may
wait for room (``wait=True``) instead of getting QueueFull; HTTP requests do not (503 +
Retry-After is their contract).

The collector is supervised: if it raises outside its per-batch ``try`` it is logged once and
restarted, at most ``MAX_RESTARTS`` times; after that the batcher is unhealthy (``/ready``
and ``/health`` answer 503 with the reason) and everything queued fails at once instead of
waiting for its timeout. ``FAILURES_UNREADY`` failed batches in a row make it unready until a
batch succeeds again.

Over 400 lines as one class: the queue, the collector, its supervision and admission all read
and change the same queue; what requests carry and raise is server/inference/requests.py, the
speed figures server/inference/speed.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import time
from collections.abc import Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from emocore.model_dir import pad_batch
from emocore.scoring import softmax
from server.inference.requests import (
    BatcherClosed,
    BatcherUnavailable,
    Inference,
    InferenceFailed,
    Priority,
    QueueFull,
    RequestTimeout,
)
from server.inference.runtime import Runtime
from server.inference.speed import InferenceSpeed
from server.settings import Settings

log = logging.getLogger("emodistill.batcher")

MAX_RESTARTS = 3  # collector crashes survived per batcher; one more and it stays down
FAILURES_UNREADY = 3  # consecutive failed batches that turn /ready false


class BatchObserver(Protocol):
    def observe_batch(self, size: int, inference_s: float) -> None: ...
    def observe_queue_wait(self, seconds: float) -> None: ...
    def set_queue_depth(self, depth: int) -> None: ...
    def count_dropped(self, reason: str) -> None: ...
    def count_timeout(self) -> None: ...
    def count_failed_batch(self, size: int) -> None: ...


class _Expired(Exception):
    """A queued request's deadline passed before its answer (becomes RequestTimeout)."""


def _expire(future: asyncio.Future) -> None:
    if not future.done():
        future.set_exception(_Expired())


@dataclass(eq=False)
class _Request:
    audio: np.ndarray
    future: asyncio.Future
    enqueued: float = field(default_factory=time.monotonic)
    priority: Priority = Priority.FINAL
    tag: Hashable = None  # the caller's name for it (``promote``)


class Batcher:
    def __init__(
        self,
        runtime: Runtime,
        *,
        max_batch_size: int = 8,
        max_wait_ms: float = 0.0,
        queue_size: int = 64,
        timeout_s: float = 30.0,
        max_backlog_s: float = 10.0,
        max_length_ratio: float = 2.0,
        observer: BatchObserver | None = None,
    ):
        self.runtime = runtime
        # int8 models whose padded batches drift run one utterance at a time (exact answers).
        self.max_batch_size = max_batch_size if runtime.batch_invariant else 1
        if self.max_batch_size < max_batch_size:
            log.warning("%s is not batch-invariant: batch size 1", runtime.model.onnx_path.name)
        self.max_wait_s = max_wait_ms / 1000
        self.queue_size = queue_size
        self.timeout_s = timeout_s
        self.max_backlog_s = min(max_backlog_s, timeout_s)
        self.max_length_ratio = max_length_ratio
        self.observer = observer
        self._queue: list[_Request] = []
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="onnxruntime")
        self._task: asyncio.Task | None = None
        self._closing = False
        self._last_batch_s = 0.0
        self.restarts = 0
        self.consecutive_failures = 0
        self.fault: str | None = None  # why the collector is down for good (None: it is not)
        self._last_failure = ""
        self._in_batch: list[_Request] = []  # taken from the queue, not yet answered
        self._batches = itertools.count(1)  # batch ids: a failure's answer and log line match
        self.speed = InferenceSpeed()
        self._waiting: list[tuple[Priority, float, asyncio.Future]] = []  # for room, wait=True

    @classmethod
    def from_settings(
        cls, runtime: Runtime, settings: Settings, *, observer: BatchObserver | None = None
    ) -> Batcher:
        return cls(
            runtime,
            max_batch_size=settings.max_batch_size,
            max_wait_ms=settings.max_wait_ms,
            queue_size=settings.queue_size,
            timeout_s=settings.request_timeout_s,
            max_backlog_s=settings.max_backlog_s,
            max_length_ratio=settings.max_length_ratio,
            observer=observer,
        )

    @property
    def depth(self) -> int:
        """Utterances queued and not yet in a batch."""
        return len(self._queue)

    @property
    def closing(self) -> bool:
        return self._closing

    @property
    def unready_reason(self) -> str | None:
        """Why /ready should say no (None: the batcher is fine)."""
        if self.fault is not None:
            return self.fault
        if self.consecutive_failures >= FAILURES_UNREADY:
            return (
                f"the last {self.consecutive_failures} batches failed in inference "
                f"({self._last_failure})"
            )
        return None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._collect(), name="batcher")
        self._task.add_done_callback(self._collector_done)

    def _collector_done(self, task: asyncio.Task) -> None:
        """Supervision: a collector that ended other than by close() is logged and restarted."""
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        what = f"{type(exc).__name__}: {exc}"
        lost, self._in_batch = self._in_batch, []
        for request in lost:  # taken for a batch that never ran: fail now, not at the timeout
            if not request.future.done():
                request.future.set_exception(InferenceFailed(f"the batcher crashed: {what}"))
        if self.restarts < MAX_RESTARTS and not self._closing:
            self.restarts += 1
            log.error(
                "the batcher's collector crashed (%s); restart %d of %d",
                what,
                self.restarts,
                MAX_RESTARTS,
                exc_info=exc,
            )
            self.start()
            return
        self.fault = f"the batcher's collector crashed {self.restarts + 1} times (last: {what})"
        log.critical("%s; no more inference until the server restarts", self.fault, exc_info=exc)
        queued, self._queue = self._queue, []
        self._report_depth()
        for request in queued:
            if not request.future.done():
                request.future.set_exception(BatcherUnavailable(self.fault))
        for _, _, waiter in self._waiting:  # waiting for room: told now, not at their timeout
            if not waiter.done():
                waiter.set_exception(BatcherUnavailable(self.fault))

    async def infer(
        self,
        audio: np.ndarray,
        *,
        priority: Priority = Priority.FINAL,
        wait: bool = False,
        tag: Hashable = None,
        deadline: float | None = None,
    ) -> Inference:
        """Queue one mono 16 kHz utterance and wait for its answer.

        Raises QueueFull, RequestTimeout, BatcherClosed or InferenceFailed. Cancelling the
        awaiting task drops the utterance if it has not reached a batch yet. With ``wait``, a
        full queue is waited out (most urgent first; the wait counts in the timeout) instead
        of raising QueueFull. Below FINAL priority, a full batch already waiting is QueueFull.
        ``tag`` names the request for a later ``promote``. ``deadline`` (``time.monotonic``)
        ends the wait earlier than the timeout: the deadline of a whole HTTP request, shared
        by its files and segments, so that many utterances cannot each take a full timeout.
        """
        started = time.monotonic()
        if deadline is not None:  # the timeout counts from `started`: move it back
            started -= max(0.0, self.timeout_s - (deadline - started))
            if deadline <= time.monotonic():
                if self.observer:
                    self.observer.count_timeout()
                raise RequestTimeout(self._timed_out())
        if audio.ndim != 1 or audio.shape[0] == 0:
            raise ValueError(f"one mono utterance expected, got shape {audio.shape}")
        if self.fault is not None:
            raise BatcherUnavailable(self.fault)
        if self._closing or self._task is None:
            raise BatcherClosed("the server is shutting down")
        crowded = priority > Priority.FINAL and len(self._queue) >= self.max_batch_size
        if crowded or (len(self._queue) >= self.queue_size and not wait):
            if self.observer:
                self.observer.count_dropped("crowded" if crowded else "queue_full")
            raise QueueFull(self._retry_after())
        if not wait and (full := self.backlog_full(audio.shape[0])) is not None:
            raise full
        while len(self._queue) >= self.queue_size:
            await self._wait_for_room(priority, started)
        if self._closing:
            raise BatcherClosed("the server is shutting down")
        request = _Request(
            np.asarray(audio, dtype=np.float32),
            asyncio.get_running_loop().create_future(),
            priority=priority,
            tag=tag,
        )
        self._queue.append(request)
        self._report_depth()
        self._wakeup.set()
        # The answer is awaited directly, with a timer that fails it at the deadline:
        # asyncio.wait_for (before Python 3.12) wakes the caller one loop turn later.
        expiry = asyncio.get_running_loop().call_later(
            self.timeout_s - (request.enqueued - started), _expire, request.future
        )
        try:
            return await request.future
        except _Expired:
            if self.observer:
                self.observer.count_timeout()
            self._withdraw(request, "timeout")
            raise RequestTimeout(self._timed_out()) from None
        except asyncio.CancelledError:
            self._withdraw(request, "cancelled")
            raise
        finally:
            expiry.cancel()

    def _timed_out(self) -> str:
        return f"no answer within the {self.timeout_s:g} s request timeout (server busy)"

    def promote(self, tag: Hashable, priority: Priority = Priority.FINAL) -> bool:
        """Raise a queued request's priority (a stream's guess that became its final); False
        when it is no longer queued (in a batch, answered or withdrawn)."""
        for request in self._queue:
            if tag is not None and request.tag == tag:
                request.priority = min(request.priority, priority)
                return True
        return False

    async def _wait_for_room(self, priority: Priority, started: float) -> None:
        """Until the queue has room for this request (RequestTimeout past the timeout)."""
        waiter = asyncio.get_running_loop().create_future()
        entry = (priority, time.monotonic(), waiter)
        self._waiting.append(entry)
        try:
            await asyncio.wait_for(waiter, self.timeout_s - (time.monotonic() - started))
        except asyncio.TimeoutError:
            if self.observer:
                self.observer.count_timeout()
            raise RequestTimeout(
                f"no room in the queue within the {self.timeout_s:g} s request timeout"
            ) from None
        finally:
            with contextlib.suppress(ValueError):
                self._waiting.remove(entry)

    def _room_freed(self) -> None:
        """Wake as many waiting requests as there is room for, most urgent first."""
        room = self.queue_size - len(self._queue)
        for _, _, waiter in sorted(self._waiting, key=lambda entry: entry[:2])[: max(room, 0)]:
            if not waiter.done():
                waiter.set_result(None)

    @property
    def last_batch_s(self) -> float:
        """How long the last successful batch ran."""
        return self._last_batch_s

    def refuse_queued(self) -> int:
        """Shutdown out of time: stop taking work and fail every queued utterance now with
        BatcherClosed (503 shutting_down + Retry-After) instead of letting the server's grace
        deadline cancel it (a 500); a batch already running still finishes. How many."""
        self._closing = True
        queued, self._queue = self._queue, []
        self._report_depth()
        for request in queued:
            if self.observer:
                self.observer.count_dropped("shutdown")
            if not request.future.done():
                request.future.set_exception(
                    BatcherClosed("the server is shutting down: no time left for queued work")
                )
        for _, _, waiter in self._waiting:  # they raise BatcherClosed
            if not waiter.done():
                waiter.set_result(None)
        self._wakeup.set()
        return len(queued)

    async def close(self) -> None:
        """Stop taking work, finish everything already queued, stop the worker."""
        self._closing = True
        self._wakeup.set()
        for _, _, waiter in self._waiting:  # they raise BatcherClosed
            if not waiter.done():
                waiter.set_result(None)
        if self._task is not None:
            with contextlib.suppress(Exception):  # a crash is logged by _collector_done
                await self._task
        self._executor.shutdown(wait=True)

    def backlog_full(self, samples: int = 0) -> QueueFull | None:
        """QueueFull (counted as dropped for the backlog) when ``samples`` more audio would be
        answered past ``max_backlog_s``; None when there is time. With ``samples`` 0: whether
        the work already queued alone is past it (an HTTP request is then refused before its
        body is decoded, a long file before its segments queue, a new stream at once)."""
        backlog_s = self._backlog_s(samples)
        if backlog_s <= self.max_backlog_s:
            return None
        if self.observer:
            self.observer.count_dropped("backlog")
        return QueueFull(max(1, math.ceil(backlog_s - self.max_backlog_s)))

    @property
    def capacity(self) -> float | None:
        """What the model serves at full batches, in audio samples per second (None before
        the warm-up and any batch at least half full; server/inference/speed.py)."""
        return self.speed.capacity

    def seed_capacity(self, samples: int, seconds: float) -> None:
        """The warm-up's full batch: the first figure of the capacity."""
        self.speed.seed(samples, seconds)

    def work_s(self, samples: int) -> float | None:
        """Seconds of inference ``samples`` of audio take at the measured speed (None before
        the first batch)."""
        return self.speed.work_s(samples)

    def _backlog_s(self, samples: int) -> float:
        """Seconds until an utterance of ``samples`` queued now would be answered: the queued
        and running audio plus its own at the measured speed. 0 before any batch has run, and
        with nothing ahead (it runs next, and its batch measures the speed afresh: one slow
        batch must not refuse everything from then on)."""
        ahead = sum(len(r.audio) for r in self._queue) + sum(len(r.audio) for r in self._in_batch)
        if not self.speed.samples_per_s or not ahead:
            return 0.0
        return (ahead + samples) / self.speed.samples_per_s

    def _retry_after(self) -> int:
        batches_ahead = math.ceil(len(self._queue) / self.max_batch_size)
        return max(1, math.ceil(batches_ahead * self._last_batch_s))

    def _withdraw(self, request: _Request, reason: str) -> None:
        """A timed-out or cancelled request leaves the queue at once (room for others); it
        counts as dropped only if it had not reached a batch (then it was inferred anyway)."""
        try:
            self._queue.remove(request)
        except ValueError:
            return
        if self.observer:
            self.observer.count_dropped(reason)
        self._report_depth()
        self._room_freed()

    def _report_depth(self) -> None:
        if self.observer:
            self.observer.set_queue_depth(len(self._queue))

    async def _collect(self) -> None:
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            deadline = self._queue[0].enqueued + self.max_wait_s
            while (
                self._queue
                and len(self._queue) < self.max_batch_size
                and not self._closing
                and (remaining := deadline - time.monotonic()) > 0
            ):
                self._wakeup.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
            self._in_batch = batch = self._take_batch()
            if batch:
                await self._execute(batch)
            self._in_batch = []

    def _take_batch(self) -> list[_Request]:
        """The oldest of the most urgent requests plus the queued ones nearest to it in length
        (padding bounded), more urgent ones first."""
        if not self._queue:
            return []
        oldest = min(self._queue, key=lambda r: (r.priority, r.enqueued))
        anchor = len(oldest.audio)
        others = sorted(
            (r for r in self._queue if r is not oldest),
            key=lambda r: (r.priority, abs(math.log(len(r.audio) / anchor))),
        )
        batch, shortest, longest = [oldest], anchor, anchor
        for request in others:
            if len(batch) == self.max_batch_size:
                break
            lo, hi = min(shortest, len(request.audio)), max(longest, len(request.audio))
            if hi <= self.max_length_ratio * lo:
                batch.append(request)
                shortest, longest = lo, hi
        chosen = set(map(id, batch))
        self._queue = [r for r in self._queue if id(r) not in chosen]
        self._report_depth()
        self._room_freed()
        return batch

    async def _execute(self, batch: list[_Request]) -> None:
        started, batch_id = time.monotonic(), next(self._batches)
        audio, lengths = pad_batch([request.audio for request in batch])
        loop = asyncio.get_running_loop()
        try:
            outputs = await loop.run_in_executor(self._executor, self.runtime.run, audio, lengths)
        except Exception as exc:
            log.exception("inference failed in batch %d (%d utterances)", batch_id, len(batch))
            self.consecutive_failures += 1
            self._last_failure = type(exc).__name__
            if self.observer:
                self.observer.count_failed_batch(len(batch))
            for request in batch:
                if not request.future.done():
                    request.future.set_exception(
                        InferenceFailed(
                            f"inference failed in batch {batch_id}: {type(exc).__name__}"
                        )
                    )
            return
        inference_s = time.monotonic() - started
        self.consecutive_failures = 0
        self._last_batch_s = inference_s
        self.speed.observe(
            float(lengths.sum()), inference_s, half_full=2 * len(batch) >= self.max_batch_size
        )
        probabilities = softmax(outputs.logits)
        if self.observer:
            self.observer.observe_batch(len(batch), inference_s)
        for row, request in enumerate(batch):
            queue_wait_s = started - request.enqueued
            if self.observer:
                self.observer.observe_queue_wait(queue_wait_s)
            if not request.future.done():  # a request may time out while its batch runs
                request.future.set_result(
                    Inference(
                        logits=outputs.logits[row].copy(),
                        probabilities=probabilities[row].copy(),
                        embedding=outputs.embedding[row].copy(),
                        queue_wait_s=queue_wait_s,
                        inference_s=inference_s,
                        batch_size=len(batch),
                        dimensions=None
                        if outputs.dimensions is None
                        else outputs.dimensions[row].copy(),
                    )
                )
