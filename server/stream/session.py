"""One /v1/stream connection: the driver of its `StreamMachine` (server/stream/machine.py).

The machine decides; this file only performs. Three kinds of task feed it: the reader (one
message at a time, only while the machine wants input, after the intake-rate delay), the
inference tasks on the shared batcher (their answers), and the session's own loop (timer ticks
at the machine's next deadline, the server's shutdown). Each input is one `_step`: under one
lock, hand it to the machine and perform the actions it returns, in order: send an event,
start or cancel an inference, close the socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from functools import partial
from typing import Any

import anyio
from fastapi import WebSocket

from emocore.audio import SAMPLE_RATE
from emocore.scoring import STREAM_SECONDS_DIGITS, seconds
from server.inference.requests import (
    BatcherClosed,
    Inference,
    InferenceFailed,
    Priority,
    QueueFull,
    RequestTimeout,
)
from server.settings import Settings
from server.stream.actions import Action, Cancel, Close, Infer, Promote, Send
from server.stream.machine import StreamMachine
from server.stream.metrics import StreamMetrics, count_audio
from server.stream.protocol import (
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL,
    CLOSE_TRY_LATER,
    StreamError,
    error_event,
    query_config,
)

log = logging.getLogger("emodistill.stream")

# Frames larger than this run through the machine (VAD, resampling) in a worker thread, so
# one large frame never stalls the event loop for every other client.
INLINE_BYTES = 8 * 512 * 2


class _ClientGone(Exception):
    """The peer disconnected or a send failed: end quietly, free everything."""


class StreamSession:
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
        self.subprotocol = subprotocol  # echoed at accept (server/api/auth.py: never the key)
        self.settings = settings
        self.batcher = batcher
        self.metrics = metrics
        self.machine = StreamMachine.from_settings(
            settings,
            min_samples=batcher.runtime.min_samples,
            labels=list(labels),
            session_id=uuid.uuid4().hex,
            now=time.monotonic(),
            dimensions=batcher.runtime.dimensions,
        )
        self._inputs: asyncio.Queue[tuple] = asyncio.Queue()  # ticks, shutdown, wake-ups
        self._lock = asyncio.Lock()
        self._may_read = asyncio.Event()
        self._failure: Exception | None = None
        self._tasks: dict[int, asyncio.Task] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._armed_for: float | None = None
        self._heard = 0  # samples of this stream's audio counted in the demand metrics

    def shutdown(self, deadline: float) -> None:
        """The server is stopping (server/stream/route.py drain_streams)."""
        self._inputs.put_nowait(("shutdown", deadline))

    async def run(self) -> None:
        machine = self.machine
        await self.websocket.accept(subprotocol=self.subprotocol)
        query = query_config(self.websocket.query_params)
        await self._step(lambda now: machine.open(query, now))
        reader = asyncio.create_task(self._read(), name=f"stream-{machine.session_id}")
        try:
            while machine.closed is None and self._failure is None:
                item = await self._inputs.get()
                if item[0] == "tick":
                    self._armed_for = None
                    await self._step(machine.tick)
                elif item[0] == "shutdown":
                    await self._step(lambda now, until=item[1]: machine.shutdown(now, until))
            if self._failure is not None:
                raise self._failure
        except _ClientGone as gone:
            machine.gone(f"disconnected {gone.args[0]}" if gone.args else "client gone")
        except Exception:
            log.exception("stream %s failed", machine.session_id)
            machine.gone("internal")
            failure = StreamError("internal", "internal error", CLOSE_INTERNAL)
            with contextlib.suppress(Exception):
                await self.websocket.send_text(json.dumps(error_event(failure, machine.position)))
                await self.websocket.close(CLOSE_INTERNAL, "internal")
        finally:
            if self._timer is not None:
                self._timer.cancel()
            tasks = [reader, *self._tasks.values()]
            for task in tasks:
                task.cancel()  # queued utterances leave the batcher before inference
            reason = machine.reason or "cancelled"
            log.info(
                "stream %s closed after %.1f s of audio, %d utterances (%s)",
                machine.session_id,
                seconds(machine.position, STREAM_SECONDS_DIGITS),
                machine.utterances,
                reason,
            )
            label = "client gone" if reason.startswith("disconnected") else reason
            self.metrics.closed.labels(reason=label).inc()
            # Shielded: a host that cancels through anyio (Starlette's test client does) would
            # cancel the gather again on every pass, and the extra cancellations escape.
            with anyio.CancelScope(shield=True):
                await asyncio.gather(*tasks, return_exceptions=True)

    async def _step(self, call, *, threaded: bool = False) -> None:
        """One input: `call(now)` asks the machine, then its actions are performed, both under
        the lock (the machine sees one input at a time, events leave in the machine's order).
        A large frame runs through the machine in a worker thread, under the same lock."""
        async with self._lock:
            if self.machine.closed is not None or self._failure is not None:
                return
            try:
                now = time.monotonic()
                actions = await asyncio.to_thread(call, now) if threaded else call(now)
                self._count_heard()
                await self._perform(actions)
            except Exception as failure:  # _ClientGone, or a bug (1011): the loop ends it
                self._failure = failure
            if self.machine.closed is not None or self._failure is not None:
                self._inputs.put_nowait(("wake",))
                return
            self._arm_timer()
            if self.machine.wants_input:
                self._may_read.set()

    def _count_heard(self) -> None:
        heard = self.machine.position - self._heard
        if heard > 0:
            self._heard = self.machine.position
            count_audio(self.metrics, "received", heard / SAMPLE_RATE)

    def _arm_timer(self) -> None:
        """A `tick` input at the machine's next deadline (idle, session, drain). A deadline
        that moved later (audio arrived) keeps the earlier timer: its tick finds nothing due
        and arms the next one, so frames do not each replace a timer."""
        deadline = self.machine.next_deadline()
        if self._armed_for is not None and self._armed_for <= deadline:
            return
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        when = loop.time() + deadline - time.monotonic()
        self._timer = loop.call_at(when, self._inputs.put_nowait, ("tick",))
        self._armed_for = deadline

    async def _read(self) -> None:
        machine = self.machine
        while True:
            await self._may_read.wait()
            if not machine.wants_input:
                self._may_read.clear()  # set again by the step that makes room
                continue
            delay = machine.read_delay(time.monotonic())
            if delay > 0:
                await asyncio.sleep(delay)  # the intake rate: TCP slows the client meanwhile
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect":
                # A server that closes websockets itself at shutdown (1012) lands here too.
                self._failure = self._failure or _ClientGone(message.get("code"))
                self._inputs.put_nowait(("wake",))
                return
            data = message.get("bytes")
            if data is not None:
                await self._step(partial(machine.audio, data), threaded=len(data) > INLINE_BYTES)
            else:
                await self._step(partial(machine.text, message.get("text") or ""))

    async def _perform(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Send):
                await self._send(action)
            elif isinstance(action, Infer):
                self._tasks[action.key] = asyncio.create_task(self._infer(action))
            elif isinstance(action, Cancel):
                task = self._tasks.pop(action.key, None)
                if task is not None:
                    task.cancel()
            elif isinstance(action, Promote):
                self.batcher.promote(self._tag(action.key))
            elif isinstance(action, Close):
                with contextlib.suppress(Exception):  # the peer may be gone already
                    await self.websocket.close(action.code, action.reason)

    async def _send(self, action: Send) -> None:
        try:
            await self.websocket.send_text(json.dumps(action.payload))
        except Exception as exc:
            # Every send failure means the same here: the client is gone (servers and
            # Starlette versions raise different types for it).
            raise _ClientGone() from exc
        if action.certain_at is not None:
            speculative = str(action.payload["timing"]["speculative"]).lower()
            self.metrics.finals.labels(speculative=speculative).inc()
            self.metrics.final_delay.observe(time.monotonic() - action.certain_at)

    async def _infer(self, action: Infer) -> None:
        """One inference on the shared batcher; its answer is the next step. A final
        waits for room in the queue; guesses and partials are refused while it is crowded."""
        final = action.priority == Priority.FINAL
        try:
            inference = await self.batcher.infer(
                action.audio, priority=action.priority, wait=final, tag=self._tag(action.key)
            )
        except (QueueFull, RequestTimeout):
            timeout = self.settings.request_timeout_s
            error = StreamError(
                "overloaded",
                f"no inference within {timeout:g} s: the server is overloaded",
                CLOSE_TRY_LATER,
            )
        except BatcherClosed:
            error = StreamError("shutting_down", "the server is shutting down", CLOSE_GOING_AWAY)
        except InferenceFailed as exc:
            error = StreamError("inference_failed", str(exc), CLOSE_INTERNAL)
        except Exception:
            log.exception("stream %s: inference raised", self.machine.session_id)
            error = StreamError("internal", "internal error", CLOSE_INTERNAL)
        else:
            count_audio(self.metrics, "inferred", action.audio.shape[0] / SAMPLE_RATE)
            await self._step(partial(self._answered, action.key, inference))
            return
        await self._step(partial(self._answered, action.key, error))

    def _tag(self, key: int) -> tuple[int, int]:
        """This stream's name for one of its requests in the shared batcher."""
        return (id(self), key)

    def _answered(self, key: int, answer: Inference | StreamError, now: float) -> list[Action]:
        self._tasks.pop(key, None)
        if isinstance(answer, StreamError):
            return self.machine.failed(key, answer, now)
        return self.machine.inferred(key, answer, now)
