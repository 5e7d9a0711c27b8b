"""The /v1/stream websocket route: origin, authentication, admission, and the drain at shutdown.

The protocol is in docs/streaming.md; a connection's life is `StreamSession`
(server/stream/session.py).
"""

from __future__ import annotations

import asyncio
import logging
import time

from fastapi import APIRouter, WebSocket
from fastapi.responses import JSONResponse

from emocore.audio import SAMPLE_RATE
from server.api.auth import (
    QUERY_KEY,
    SUBPROTOCOL,
    key_accepted,
    offered_subprotocols,
    presented_key,
    subprotocol_key,
)
from server.api.dependencies import (
    OptionalBatcherDep,
    OptionalRuntimeDep,
    ReadyDep,
    SettingsDep,
    StreamStateDep,
)
from server.api.errors import error_body
from server.inference.batcher import Batcher
from server.settings import Settings
from server.stream.metrics import demand_share
from server.stream.protocol import CLOSE_POLICY, CLOSE_TRY_LATER, StreamError, error_event
from server.stream.session import StreamSession
from server.stream.state import StreamState

router = APIRouter()
log = logging.getLogger("emodistill.stream")

CAPACITY_RETRY_S = 10  # Retry-After of a stream refused for capacity (streams last long)


@router.websocket("/v1/stream")
async def stream(
    websocket: WebSocket,
    settings: SettingsDep,
    streams: StreamStateDep,
    ready: ReadyDep,
    batcher: OptionalBatcherDep,
    runtime: OptionalRuntimeDep,
) -> None:
    origin = websocket.headers.get("origin")
    if not origin_allowed(settings.cors_origins, origin):
        await _refuse(
            websocket,
            streams,
            403,
            "forbidden_origin",
            "this page's origin may not open streams here; allowed: "
            + ", ".join(settings.cors_origins),
            close_code=CLOSE_POLICY,
        )
        return
    offered = offered_subprotocols(websocket.headers)
    api_key = presented_key(websocket.headers) or subprotocol_key(offered)
    if api_key is None and QUERY_KEY in websocket.query_params:
        api_key = websocket.query_params[QUERY_KEY]
        log.warning("a stream sent its API key in the URL (?%s=): deprecated", QUERY_KEY)
    if not key_accepted(settings.api_keys, api_key):
        await _refuse(
            websocket,
            streams,
            401,
            "unauthorized",
            "a valid API key is required: Authorization: Bearer <key>, X-API-Key: <key>, or "
            f"the subprotocols {SUBPROTOCOL}, emodistill.key.<base64url(key)>",
            close_code=CLOSE_POLICY,
        )
        return
    if not ready or batcher is None or runtime is None or batcher.closing or streams.draining:
        await _refuse(
            websocket,
            streams,
            503,
            "not_ready",
            "the server is loading or shutting down",
            close_code=CLOSE_TRY_LATER,
        )
        return
    client = websocket.client.host if websocket.client else "unknown"
    refusal = admission(streams, batcher, settings, api_key, client)
    if refusal is not None:
        await _refuse(websocket, streams, 503, *refusal, close_code=CLOSE_TRY_LATER)
        return
    metrics = streams.metrics
    subprotocol = SUBPROTOCOL if SUBPROTOCOL in offered else None
    session = StreamSession(
        websocket, settings, batcher, runtime.labels, metrics, subprotocol=subprotocol
    )
    streams.add(session, api_key, client)
    metrics.open.inc()
    try:
        await session.run()
    finally:
        streams.discard(session, api_key, client)
        metrics.open.dec()


def admission(
    streams: StreamState, batcher: Batcher, settings: Settings, api_key: str | None, client: str
) -> tuple | None:
    """Why a new stream is refused (code, message[, Retry-After seconds]), or None: the
    limits per process, per API key and per client address, and the batcher's backlog and
    capacity (docs/streaming.md): past `max_backlog_s` of queued work the server is over its
    capacity, and a new stream would only see its finals refused (`overloaded`) later."""
    if (full := batcher.backlog_full()) is not None:
        message = (
            f"the server is over its capacity (more than {settings.max_backlog_s:g} s of "
            f"work queued); retry in {full.retry_after_s} s"
        )
        return "overloaded", message, full.retry_after_s
    if (capacity := capacity_in_streams(streams, batcher, settings)) is not None:
        if streams.open + 1 > capacity:
            message = (
                f"the streams open already need the inference capacity this server has "
                f"(about {capacity:.1f} real-time streams); retry later"
            )
            return "overloaded", message, CAPACITY_RETRY_S
    if streams.open >= settings.stream_max_streams:
        limit = f"at most {settings.stream_max_streams} concurrent streams"
        return "too_many_streams", f"this server takes {limit}; retry later"
    if streams.per_client.get(client, 0) >= settings.stream_max_streams_per_client:
        limit = settings.stream_max_streams_per_client
        return "too_many_streams", f"at most {limit} concurrent streams per client address"
    if api_key is not None and streams.per_key.get(api_key, 0) >= (
        settings.stream_max_streams_per_key
    ):
        limit = settings.stream_max_streams_per_key
        return "too_many_streams", f"at most {limit} concurrent streams per API key"
    return None


def capacity_in_streams(streams: StreamState, batcher: Batcher, settings: Settings) -> float | None:
    """How many real-time streams `stream_capacity_share` of the batcher's capacity serves,
    at what streams have measured to need (the share of their audio sent to inference; all
    of it until enough was heard); None when the limit is off or no capacity is known."""
    speed = batcher.capacity
    if not settings.stream_capacity_share or not speed:
        return None
    need = demand_share(streams.metrics) * SAMPLE_RATE  # samples/s per stream
    return settings.stream_capacity_share * speed / max(need, 1e-9)


async def drain_streams(streams: StreamState, budget_s: float) -> None:
    """Shutdown: admit no more streams, ask each open one to finish (a `closing` event, the
    finals of what it has received, close 1001) and wait for them, at most `budget_s`."""
    streams.draining = True
    sessions = list(streams.sessions)
    if not sessions:
        return
    deadline = time.monotonic() + budget_s
    log.info("draining %d open streams (at most %.1f s)", len(sessions), budget_s)
    for session in sessions:
        session.shutdown(deadline)
    while streams.open > 0 and time.monotonic() < deadline + 1.0:
        await asyncio.sleep(0.02)


def origin_allowed(allowed: list[str], origin: str | None) -> bool:
    """With CORS origins configured, a browser's Origin must be one of them (or "*" be one).
    Clients that send no Origin (not browsers) are not held to it."""
    if not allowed or origin is None or "*" in allowed:
        return True
    return origin.rstrip("/") in {o.rstrip("/") for o in allowed}


async def _refuse(
    websocket: WebSocket,
    streams: StreamState,
    status: int,
    code: str,
    message: str,
    retry_after_s: int = 1,
    *,
    close_code: int,
) -> None:
    """Refuse at the handshake: an HTTP answer with a JSON reason where the server supports it
    (uvicorn does), else accept, send the error event and close."""
    streams.metrics.refused.labels(reason=code).inc()
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        headers = {"Retry-After": str(retry_after_s)} if status == 503 else None
        await websocket.send_denial_response(
            JSONResponse(error_body(code, message), status, headers)
        )
        return
    await websocket.accept()
    await websocket.send_json(error_event(StreamError(code, message, close_code), 0))
    await websocket.close(close_code, code)
