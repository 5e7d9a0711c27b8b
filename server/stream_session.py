"""One /v1/stream connection: the driver of its `StreamMachine` (server/stream_machine.py).

The machine decides; this file only performs. A reader task reads one message at a time, and
only when the machine wants input (after the intake-rate delay); inference tasks run on the
shared batcher; their answers, the messages and the server's shutdown all arrive in one
queue, and one loop hands each to the machine in turn and performs the actions it returns:
send an event, start or cancel an inference, close the socket. A timer puts a tick in the
same queue at the machine's next deadline (idle, session, drain).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from typing import Any

import anyio
from fastapi import WebSocket

from server.batcher import BatcherClosed, InferenceFailed, Priority, QueueFull, RequestTimeout
from server.settings import Settings
from server.stream_machine import (
    Action,
    Cancel,
    Close,
    Infer,
    Limits,
    Send,
    StreamMachine,
    stream_defaults,
)
from server.stream_metrics import StreamMetrics
from server.stream_protocol import (
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL,
    CLOSE_TRY_LATER,
    StreamError,
    error_event,
    query_config,
    seconds,
)
from server.vad import segment_params

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
        self.subprotocol = subprotocol  # echoed at accept (server/auth.py: never the key)
        self.settings = settings
        self.batcher = batcher
        self.metrics = metrics
        self.machine = StreamMachine(
            Limits.from_settings(settings),
            stream_defaults(settings),
            segment_params(settings, min_samples=batcher.runtime.min_samples),
            labels=list(labels),
            session_id=uuid.uuid4().hex,
            now=time.monotonic(),
        )
        self._inputs: asyncio.Queue[tuple] = asyncio.Queue()
        self._permits: asyncio.Queue[float] = asyncio.Queue(maxsize=1)
        self._reading = False
        self._tasks: dict[int, asyncio.Task] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._armed_for: float | None = None

    def shutdown(self, deadline: float) -> None:
        """The server is stopping (server/stream.py drain_streams)."""
        self._inputs.put_nowait(("shutdown", deadline))

    async def run(self) -> None:
        machine = self.machine
        await self.websocket.accept(subprotocol=self.subprotocol)
        reader = asyncio.create_task(self._read(), name=f"stream-{machine.session_id}")
        try:
            query = query_config(self.websocket.query_params)
            await self._perform(machine.open(query, time.monotonic()))
            while machine.closed is None:
                if machine.wants_input and not self._reading:
                    self._reading = True
                    self._permits.put_nowait(machine.read_delay(time.monotonic()))
                self._arm_timer()
                await self._perform(await self._step(await self._inputs.get()))
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
                seconds(machine.position),
                machine.utterances,
                reason,
            )
            label = "client gone" if reason.startswith("disconnected") else reason
            self.metrics.closed.labels(reason=label).inc()
            # Shielded: a host that cancels through anyio (Starlette's test client does) would
            # cancel the gather again on every pass, and the extra cancellations escape.
            with anyio.CancelScope(shield=True):
                await asyncio.gather(*tasks, return_exceptions=True)

    def _arm_timer(self) -> None:
        """A `tick` input at the machine's next deadline (idle, session, drain)."""
        deadline = self.machine.next_deadline()
        if deadline == self._armed_for:
            return
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        when = loop.time() + deadline - time.monotonic()
        self._timer = loop.call_at(when, self._inputs.put_nowait, ("tick",))
        self._armed_for = deadline

    async def _step(self, item: tuple) -> list[Action]:
        machine, now = self.machine, time.monotonic()
        kind = item[0]
        if kind == "message":
            self._reading = False
            message = item[1]
            if message["type"] == "websocket.disconnect":
                # A server that closes websockets itself at shutdown (1012) lands here too.
                raise _ClientGone(message.get("code"))
            if message.get("bytes") is not None:
                data = message["bytes"]
                if len(data) > INLINE_BYTES:
                    return await asyncio.to_thread(machine.audio, data, now)
                return machine.audio(data, now)
            return machine.text(message.get("text") or "", now)
        if kind == "inferred":
            self._tasks.pop(item[1], None)
            return machine.inferred(item[1], item[2], now)
        if kind == "failed":
            self._tasks.pop(item[1], None)
            return machine.failed(item[1], item[2], now)
        if kind == "tick":
            self._armed_for = None
            return machine.tick(now)
        return machine.shutdown(now, item[1])

    async def _read(self) -> None:
        while True:
            delay = await self._permits.get()
            if delay > 0:
                await asyncio.sleep(delay)  # the intake rate: TCP slows the client meanwhile
            message = await self.websocket.receive()
            self._inputs.put_nowait(("message", message))
            if message["type"] == "websocket.disconnect":
                return

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
        """One inference on the shared batcher; its answer goes back to the loop. A final
        waits for room in the queue; guesses and partials are refused while it is crowded."""
        final = action.priority == Priority.FINAL
        try:
            inference = await self.batcher.infer(action.audio, priority=action.priority, wait=final)
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
            self._inputs.put_nowait(("inferred", action.key, inference))
            return
        self._inputs.put_nowait(("failed", action.key, error))
