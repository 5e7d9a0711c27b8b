"""One /v1/stream connection, from accept to close: read, endpoint, infer, answer.

The reader decodes and resamples each frame and feeds the endpointer; utterances go to the
shared batcher as tasks, so reading never waits for the model, and finals are sent in
utterance order. At most `stream_max_pending` utterances per stream await inference: beyond
that reading pauses, which slows a client that sends faster than real time through TCP flow
control, and bounds the memory a stream can hold.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
import uuid
from collections import deque
from typing import Any

import anyio
import numpy as np
import soxr
from fastapi import WebSocket

from server.audio import SAMPLE_RATE
from server.batcher import BatcherClosed, Inference, InferenceFailed, QueueFull, RequestTimeout
from server.endpointer import (
    Endpoint,
    Endpointer,
    EndpointLikely,
    PartialDue,
    SpeechStarted,
    StreamEvent,
)
from server.settings import Settings
from server.stream_metrics import StreamMetrics
from server.stream_protocol import (
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL,
    CLOSE_NORMAL,
    CLOSE_POLICY,
    CLOSE_TOO_BIG,
    CLOSE_TRY_LATER,
    StreamConfig,
    StreamError,
    decode_pcm,
    error_event,
    event,
    parse_config,
    parse_message,
    query_config,
    result_fields,
    seconds,
)
from server.vad import WINDOW, SegmentParams, ms_to_samples

log = logging.getLogger("emodistill.stream")

# Frames longer than this many VAD windows run the VAD in a worker thread, so one large
# frame never stalls the event loop (~0.08 ms per window) for every other client.
INLINE_WINDOWS = 8
# A final whose inference queue is full is retried with this backoff (s) until the request
# timeout; an interim result is simply skipped.
RETRY_BACKOFF = (0.02, 0.05, 0.1, 0.2, 0.5)
# Speculation starts when the pause left to wait is this many times the recent model time
# (queue + inference), so the answer is ready about when the endpoint becomes certain; before
# any measurement, halfway through min_silence_ms.
SPECULATION_LEAD = 1.5
MODEL_TIME_SMOOTHING = 0.3  # weight of the newest measurement in the running average


class _ClientGone(Exception):
    """The peer disconnected or a send failed: end quietly, free everything."""


class _Stop(Exception):
    """The client sent stop: send the remaining finals, then close normally."""


def stream_defaults(settings: Settings) -> StreamConfig:
    return StreamConfig(
        min_silence_ms=settings.stream_min_silence_ms,
        partial_interval_ms=settings.stream_partial_interval_ms,
        max_utterance_s=settings.stream_max_utterance_s,
    )


class StreamSession:
    """One websocket connection, from accept to close."""

    def __init__(
        self,
        websocket: WebSocket,
        settings: Settings,
        batcher: Any,
        labels: list[str],
        metrics: StreamMetrics,
        *,
        subprotocol: str | None = None,
    ):
        self.websocket = websocket
        self.subprotocol = subprotocol  # echoed at accept (server/auth.py: never the key)
        self.settings = settings
        self.batcher = batcher
        self.labels = labels
        self.metrics = metrics
        self.session_id = uuid.uuid4().hex
        self.config: StreamConfig | None = None
        self.endpointer: Endpointer | None = None
        self.resampler: soxr.ResampleStream | None = None
        self._send_lock = asyncio.Lock()
        self._finals: deque[asyncio.Task] = deque()  # in utterance order
        self._partial: asyncio.Task | None = None
        self._last_partial_at = 0.0
        self._finalized = -1  # highest utterance index handed to a final task
        self._failure: StreamError | BaseException | None = None
        self._abort = asyncio.Event()
        # An inference started in a pause that may end the utterance: (utterance, start, end).
        self._speculation: tuple[tuple[int, int, int], asyncio.Task] | None = None
        self._model_s: float | None = None  # running average of queue + inference time

    @property
    def position(self) -> int:
        return self.endpointer.position if self.endpointer else 0

    async def run(self) -> None:
        await self.websocket.accept(subprotocol=self.subprotocol)
        reader = asyncio.create_task(self._read(), name=f"stream-{self.session_id}")
        aborted = asyncio.create_task(self._abort.wait())
        try:
            await asyncio.wait({reader, aborted}, return_when=asyncio.FIRST_COMPLETED)
            if reader.done():
                self._failure = self._failure or reader.exception()
            if self._failure is None or isinstance(self._failure, _Stop):
                await self._finish()
            await self._close()
        finally:
            # Cancelling drops queued utterances from the batcher; wait so that all is freed
            # before the stream's slot is (even when this task itself is being cancelled).
            speculation = self._speculation[1] if self._speculation else None
            tasks = [reader, aborted, self._partial, speculation, *self._finals]
            tasks = [task for task in tasks if task is not None]
            for task in tasks:
                task.cancel()
            log.info(
                "stream %s closed after %.1f s of audio, %d utterances (%s)",
                self.session_id,
                seconds(self.position),
                self._finalized + 1,
                self._reason(),
            )
            self.metrics.closed.labels(reason=self._reason(label=True)).inc()
            # Shielded: a host that cancels through anyio (Starlette's test client does) would
            # otherwise cancel the gather again on every loop pass while the tasks wind down,
            # and the extra cancellations escape the host's cancel scope.
            with anyio.CancelScope(shield=True):
                await asyncio.gather(*tasks, return_exceptions=True)

    def _reason(self, *, label: bool = False) -> str:
        """Why the session ended: for the log, or a bounded metric label."""
        failure = self._failure
        if isinstance(failure, StreamError):
            return failure.code
        if isinstance(failure, _ClientGone):
            if label or not failure.args:
                return "client gone"
            return f"disconnected {failure.args[0]}"
        return {_Stop: "stop", type(None): "cancelled"}.get(type(failure), "internal error")

    async def _finish(self) -> None:
        """Wait for the queued finals (they send themselves, in order); a failure aborts."""
        if self._finals:
            done = asyncio.gather(*self._finals, return_exceptions=True)
            aborted = asyncio.create_task(self._abort.wait())
            await asyncio.wait({done, aborted}, return_when=asyncio.FIRST_COMPLETED)
            aborted.cancel()

    async def _close(self) -> None:
        failure = self._failure
        if isinstance(failure, _ClientGone):
            return
        if failure is None or isinstance(failure, _Stop):
            code, reason = CLOSE_NORMAL, "stop"
        elif isinstance(failure, StreamError):
            with contextlib.suppress(_ClientGone):
                await self._send(error_event(failure, self.position))
            code, reason = failure.close_code, failure.code
        else:
            log.error("stream %s failed", self.session_id, exc_info=failure)
            with contextlib.suppress(_ClientGone):
                await self._send(
                    error_event(
                        StreamError("internal", "internal error", CLOSE_INTERNAL), self.position
                    )
                )
            code, reason = CLOSE_INTERNAL, "internal"
        # The peer may be gone already; there is nobody left to tell.
        with contextlib.suppress(Exception):
            await self.websocket.close(code, reason)

    def _fail(self, failure: BaseException) -> None:
        # A failure while the finals after a stop drain replaces the stop.
        if self._failure is None or isinstance(self._failure, _Stop):
            self._failure = failure
        self._abort.set()

    # Reading -----------------------------------------------------------------------------

    async def _read(self) -> None:
        settings = self.settings
        from_query = query_config(self.websocket.query_params)
        if from_query is not None:
            await self._start(from_query)
        session_ends = time.monotonic() + settings.stream_max_session_s
        while True:
            left = session_ends - time.monotonic()
            try:
                message = await asyncio.wait_for(
                    self.websocket.receive(), min(settings.stream_idle_timeout_s, max(left, 0))
                )
            except asyncio.TimeoutError:
                if time.monotonic() >= session_ends:
                    raise StreamError(
                        "session_too_long",
                        f"sessions last at most {settings.stream_max_session_s:g} s",
                        CLOSE_POLICY,
                    ) from None
                raise StreamError(
                    "idle_timeout",
                    f"no message for {settings.stream_idle_timeout_s:g} s (send keepalive)",
                    CLOSE_POLICY,
                ) from None
            if message["type"] == "websocket.disconnect":
                # uvicorn closes open websockets with 1012 when the server shuts down.
                raise _ClientGone(message.get("code"))
            if message.get("bytes") is not None:
                await self._audio(message["bytes"])
            elif message.get("text") is not None:
                await self._control(parse_message(message["text"]))

    async def _start(self, values: dict[str, Any]) -> None:
        settings = self.settings
        config = parse_config(
            values, stream_defaults(settings), max_utterance_s=settings.max_seconds
        )
        params = SegmentParams(
            threshold=settings.stream_vad_threshold,
            min_silence_ms=config.min_silence_ms,
            # Never shorter than the model's shortest legal input (model.json min_samples).
            min_speech_ms=max(
                settings.stream_min_speech_ms,
                1000 * self.batcher.runtime.min_samples / SAMPLE_RATE,
            ),
            pad_ms=settings.stream_pad_ms,
            max_speech_s=config.max_utterance_s,
        )
        partials = config.partial_interval_ms if config.interim else None
        self.endpointer = Endpointer(params, partial_interval_ms=partials)
        if settings.stream_speculate:
            self.endpointer.speculate_after = ms_to_samples(config.min_silence_ms / 2)
        if config.sample_rate != SAMPLE_RATE:
            self.resampler = soxr.ResampleStream(
                config.sample_rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ"
            )
        self.config = config
        await self._send(
            {
                "type": "ready",
                "session_id": self.session_id,
                **config.model_dump(),
                "labels": list(self.labels),
                "limits": {
                    "max_frame_bytes": settings.stream_max_frame_bytes,
                    "max_session_s": settings.stream_max_session_s,
                    "idle_timeout_s": settings.stream_idle_timeout_s,
                },
            }
        )
        log.info("stream %s started: %s", self.session_id, config.model_dump())

    async def _control(self, message: dict[str, Any]) -> None:
        kind = message.pop("type")
        if kind == "keepalive":
            return
        if kind == "start":
            if self.config is not None:
                raise StreamError(
                    "already_started", "the session is already configured", CLOSE_POLICY
                )
            await self._start(message)
        elif kind == "flush":
            if self.endpointer is not None:
                await self._handle(self.endpointer.flush())
        elif kind == "stop":
            if self.endpointer is not None:
                if self.resampler is not None:
                    tail = self.resampler.resample_chunk(np.zeros(0, np.float32), last=True)
                    await self._handle(self.endpointer.feed(tail))
                await self._handle(self.endpointer.flush())
            raise _Stop()
        else:
            raise StreamError(
                "unknown_message_type",
                f"unknown message type {kind!r}; expected start, flush, stop or keepalive",
                CLOSE_POLICY,
            )

    async def _audio(self, data: bytes) -> None:
        if self.config is None or self.endpointer is None:
            raise StreamError(
                "binary_before_config",
                "audio arrived before the session was configured: put the config in the query "
                'string or send {"type": "start", ...} first',
                CLOSE_POLICY,
            )
        if len(data) > self.settings.stream_max_frame_bytes:
            raise StreamError(
                "frame_too_large",
                f"a frame holds at most {self.settings.stream_max_frame_bytes} bytes; got {len(data)}",
                CLOSE_TOO_BIG,
            )
        samples = decode_pcm(data, self.config)
        if self.resampler is not None:
            samples = self.resampler.resample_chunk(samples)
        if samples.shape[0] > INLINE_WINDOWS * WINDOW:
            events = await asyncio.to_thread(self.endpointer.feed, samples)
        else:
            events = self.endpointer.feed(samples)
        await self._handle(events)

    async def _handle(self, events: list[StreamEvent]) -> None:
        for item in events:
            if isinstance(item, SpeechStarted):
                await self._send(
                    event(
                        "speech_start",
                        time=self.position,
                        utterance=item.utterance,
                        start=seconds(item.start),
                    )
                )
            elif isinstance(item, PartialDue):
                self._maybe_partial(item)
            elif isinstance(item, EndpointLikely):
                self._speculate(item)
            elif isinstance(item, Endpoint):
                await self._queue_final(item)
        if self._speculation and self._speculation[0][1:] != self.endpointer.likely_span:
            # Speech came back: that pause did not end the utterance.
            self._speculation[1].cancel()
            self._speculation = None

    # Inference ---------------------------------------------------------------------------

    def _speculate(self, likely: EndpointLikely) -> None:
        if self._speculation:
            self._speculation[1].cancel()
            self._speculation = None
        if self.batcher.depth >= self.batcher.max_batch_size:
            return  # a guess must not make certain work wait
        task = asyncio.create_task(self.batcher.infer(likely.audio))
        task.add_done_callback(_retrieve)
        self._speculation = ((likely.utterance, likely.start, likely.end), task)

    async def _queue_final(self, endpoint: Endpoint) -> None:
        self._finalized = endpoint.utterance
        speculated = None
        if self._speculation:
            key, speculated = self._speculation
            self._speculation = None
            if key != (endpoint.utterance, endpoint.start, endpoint.end):
                speculated.cancel()
                speculated = None
        previous = self._finals[-1] if self._finals else None
        task = asyncio.create_task(
            self._final(endpoint, self.position, previous, speculated, time.monotonic())
        )
        self._finals.append(task)
        task.add_done_callback(self._final_done)
        # The per-connection bound: stop reading until an utterance leaves the queue.
        while len(self._finals) > self.settings.stream_max_pending:
            await asyncio.wait(list(self._finals), return_when=asyncio.FIRST_COMPLETED)

    def _final_done(self, task: asyncio.Task) -> None:
        with contextlib.suppress(ValueError):
            self._finals.remove(task)

    async def _final(
        self,
        endpoint: Endpoint,
        detected_at: int,
        previous: asyncio.Task | None,
        speculated: asyncio.Task | None,
        certain_at: float,
    ) -> None:
        try:
            inference = await self._speculated(speculated) or await self._infer_final(endpoint)
            self._observe(inference)
            if previous is not None:
                await asyncio.wait({previous})  # finals leave in utterance order
            timing = _timing(inference) | {"speculative": speculated is not None}
            await self._send(self._result("final", endpoint, detected_at, inference, timing=timing))
            self.metrics.finals.labels(speculative=str(speculated is not None).lower()).inc()
            self.metrics.final_delay.observe(time.monotonic() - certain_at)
        except Exception as failure:  # StreamError, _ClientGone, or a bug (closed with 1011)
            self._fail(failure)

    @staticmethod
    async def _speculated(task: asyncio.Task | None) -> Inference | None:
        """The speculative inference of exactly this span, if it worked; else None, and the
        final takes the ordinary path (which reports any lasting failure)."""
        if task is None:
            return None
        try:
            return await task
        except (QueueFull, RequestTimeout, BatcherClosed, InferenceFailed):
            return None

    def _observe(self, inference: Inference) -> None:
        """Track the model time and start speculating that long before an endpoint."""
        took = inference.queue_wait_s + inference.inference_s
        previous = self._model_s if self._model_s is not None else took
        self._model_s = (1 - MODEL_TIME_SMOOTHING) * previous + MODEL_TIME_SMOOTHING * took
        if self.endpointer is not None and self.endpointer.speculate_after is not None:
            assert self.config is not None
            lead_ms = SPECULATION_LEAD * self._model_s * 1000
            self.endpointer.speculate_after = ms_to_samples(
                max(0.0, self.config.min_silence_ms - lead_ms)
            )

    async def _infer_final(self, endpoint: Endpoint) -> Inference:
        deadline = time.monotonic() + self.settings.request_timeout_s
        for attempt in itertools.count():
            try:
                return await self.batcher.infer(endpoint.audio)
            except QueueFull:
                delay = RETRY_BACKOFF[min(attempt, len(RETRY_BACKOFF) - 1)]
                if time.monotonic() + delay > deadline:
                    raise self._overloaded(endpoint.utterance) from None
                await asyncio.sleep(delay)
            except RequestTimeout:
                raise self._overloaded(endpoint.utterance) from None
            except BatcherClosed:
                raise StreamError(
                    "shutting_down",
                    "the server is shutting down",
                    CLOSE_GOING_AWAY,
                    endpoint.utterance,
                ) from None
            except InferenceFailed as exc:
                raise StreamError(
                    "inference_failed", str(exc), CLOSE_INTERNAL, endpoint.utterance
                ) from None
        raise AssertionError("itertools.count() does not end")

    def _overloaded(self, utterance: int) -> StreamError:
        return StreamError(
            "overloaded",
            f"no inference within {self.settings.request_timeout_s:g} s: the server is overloaded",
            CLOSE_TRY_LATER,
            utterance,
        )

    def _maybe_partial(self, due: PartialDue) -> None:
        """At most one interim inference in flight, and at most one per interval of wall time
        too (a client sending faster than real time gets no more partials per second)."""
        assert self.config is not None
        now = time.monotonic()
        busy = self._partial is not None and not self._partial.done()
        # Interim results never make finals wait: none while a full batch is already queued.
        crowded = self.batcher.depth >= self.batcher.max_batch_size
        if busy or crowded or now - self._last_partial_at < self.config.partial_interval_ms / 1000:
            return
        self._last_partial_at = now
        self._partial = asyncio.create_task(self._send_partial(due, self.position))

    async def _send_partial(self, due: PartialDue, detected_at: int) -> None:
        try:
            try:
                inference = await self.batcher.infer(due.audio)
            except (QueueFull, RequestTimeout, BatcherClosed, InferenceFailed):
                return  # interim results are best effort; the final is what counts
            if due.utterance <= self._finalized:
                return  # its final is on the way: a late partial would contradict it
            await self._send(self._result("partial", due, detected_at, inference))
        except Exception as failure:  # _ClientGone, or a bug (closed with 1011)
            self._fail(failure)

    def _result(
        self,
        kind: str,
        span: Endpoint | PartialDue,
        detected_at: int,
        inference: Inference,
        **extra: Any,
    ) -> dict[str, Any]:
        return event(
            kind,
            time=detected_at,
            utterance=span.utterance,
            start=seconds(span.start),
            end=seconds(span.end),
            **result_fields(self.labels, inference.probabilities),
            **extra,
        )

    async def _send(self, payload: dict[str, Any]) -> None:
        if isinstance(self._failure, _ClientGone):
            raise _ClientGone()
        try:
            async with self._send_lock:
                await self.websocket.send_text(json.dumps(payload))
        except Exception as exc:
            # Every send failure means the same here: the client is gone (the servers and
            # Starlette versions raise different types for it).
            raise _ClientGone() from exc


def _retrieve(task: asyncio.Task) -> None:
    """Done-callback of a speculation nobody may await: mark its exception as seen."""
    if not task.cancelled():
        task.exception()


def _timing(inference: Inference) -> dict[str, float | int]:
    return {
        "queue_s": round(inference.queue_wait_s, 4),
        "inference_s": round(inference.inference_s, 4),
        "batch_size": inference.batch_size,
    }
