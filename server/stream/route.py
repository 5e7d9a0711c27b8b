"""The /v1/stream websocket route: origin, authentication and admission.

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
from server.api.errors import error_body
from server.settings import Settings
from server.stream.metrics import demand_share, stream_metrics
from server.stream.protocol import CLOSE_POLICY, CLOSE_TRY_LATER, StreamError, error_event
from server.stream.session import StreamSession

router = APIRouter()
log = logging.getLogger("emodistill.stream")

CAPACITY_RETRY_S = 10  # Retry-After of a stream refused for capacity (streams last long)


@router.websocket("/v1/stream")
async def stream(websocket: WebSocket) -> None:
    state = websocket.app.state
    settings: Settings = state.settings
    origin = websocket.headers.get("origin")
    if not origin_allowed(settings.cors_origins, origin):
        await _refuse(
            websocket,
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
            401,
            "unauthorized",
            "a valid API key is required: Authorization: Bearer <key>, X-API-Key: <key>, or "
            f"the subprotocols {SUBPROTOCOL}, emodistill.key.<base64url(key)>",
            close_code=CLOSE_POLICY,
        )
        return
    batcher = getattr(state, "batcher", None)
    draining = getattr(state, "streams_draining", False)
    if not getattr(state, "ready", False) or batcher is None or batcher.closing or draining:
        await _refuse(
            websocket,
            503,
            "not_ready",
            "the server is loading or shutting down",
            close_code=CLOSE_TRY_LATER,
        )
        return
    client = websocket.client.host if websocket.client else "unknown"
    refusal = admission(state, settings, api_key, client)
    if refusal is not None:
        await _refuse(websocket, 503, *refusal, close_code=CLOSE_TRY_LATER)
        return
    metrics = stream_metrics(state)
    subprotocol = SUBPROTOCOL if SUBPROTOCOL in offered else None
    session = StreamSession(
        websocket, settings, batcher, state.runtime.labels, metrics, subprotocol=subprotocol
    )
    holders = _holders(state, api_key, client)
    for counts, holder in holders:
        counts[holder] = counts.get(holder, 0) + 1
    state.open_streams = getattr(state, "open_streams", 0) + 1
    state.stream_sessions.add(session)
    metrics.open.inc()
    try:
        await session.run()
    finally:
        for counts, holder in holders:
            counts[holder] -= 1
            if not counts[holder]:
                del counts[holder]
        state.open_streams -= 1
        state.stream_sessions.discard(session)
        metrics.open.dec()


def _holders(state, api_key: str | None, client: str) -> list[tuple[dict, str]]:
    """The per-key and per-address counters a stream counts in (a key only when set)."""
    if getattr(state, "stream_sessions", None) is None:
        state.stream_sessions, state.streams_per_key, state.streams_per_client = set(), {}, {}
    holders = [(state.streams_per_client, client)]
    if api_key is not None:
        holders.append((state.streams_per_key, api_key))
    return holders


def admission(state, settings: Settings, api_key: str | None, client: str) -> tuple | None:
    """Why a new stream is refused (code, message[, Retry-After seconds]), or None: the
    limits per process, per API key and per client address, and the batcher's backlog and
    capacity (docs/streaming.md): past `max_backlog_s` of queued work the server is over its
    capacity, and a new stream would only see its finals refused (`overloaded`) later."""
    _holders(state, api_key, client)  # the counters exist from the first stream on
    if (full := state.batcher.backlog_full()) is not None:
        message = (
            f"the server is over its capacity (more than {settings.max_backlog_s:g} s of "
            f"work queued); retry in {full.retry_after_s} s"
        )
        return "overloaded", message, full.retry_after_s
    if (streams := capacity_in_streams(state, settings)) is not None:
        if getattr(state, "open_streams", 0) + 1 > streams:
            message = (
                f"the streams open already need the inference capacity this server has "
                f"(about {streams:.1f} real-time streams); retry later"
            )
            return "overloaded", message, CAPACITY_RETRY_S
    if getattr(state, "open_streams", 0) >= settings.stream_max_streams:
        limit = f"at most {settings.stream_max_streams} concurrent streams"
        return "too_many_streams", f"this server takes {limit}; retry later"
    if state.streams_per_client.get(client, 0) >= settings.stream_max_streams_per_client:
        limit = settings.stream_max_streams_per_client
        return "too_many_streams", f"at most {limit} concurrent streams per client address"
    if api_key is not None and state.streams_per_key.get(api_key, 0) >= (
        settings.stream_max_streams_per_key
    ):
        limit = settings.stream_max_streams_per_key
        return "too_many_streams", f"at most {limit} concurrent streams per API key"
    return None


def capacity_in_streams(state, settings: Settings) -> float | None:
    """How many real-time streams `stream_capacity_share` of the batcher's capacity serves,
    at what streams have measured to need (the share of their audio sent to inference; all
    of it until enough was heard); None when the limit is off or no capacity is known."""
    speed = state.batcher.capacity
    if not settings.stream_capacity_share or not speed:
        return None
    need = demand_share(stream_metrics(state)) * SAMPLE_RATE  # samples/s per stream
    return settings.stream_capacity_share * speed / max(need, 1e-9)


async def drain_streams(state, budget_s: float) -> None:
    """Shutdown: admit no more streams, ask each open one to finish (a `closing` event, the
    finals of what it has received, close 1001) and wait for them, at most `budget_s`."""
    state.streams_draining = True
    sessions = list(getattr(state, "stream_sessions", None) or ())
    if not sessions:
        return
    deadline = time.monotonic() + budget_s
    log.info("draining %d open streams (at most %.1f s)", len(sessions), budget_s)
    for session in sessions:
        session.shutdown(deadline)
    while getattr(state, "open_streams", 0) > 0 and time.monotonic() < deadline + 1.0:
        await asyncio.sleep(0.02)


def origin_allowed(allowed: list[str], origin: str | None) -> bool:
    """With CORS origins configured, a browser's Origin must be one of them (or "*" be one).
    Clients that send no Origin (not browsers) are not held to it."""
    if not allowed or origin is None or "*" in allowed:
        return True
    return origin.rstrip("/") in {o.rstrip("/") for o in allowed}


async def _refuse(
    websocket: WebSocket,
    status: int,
    code: str,
    message: str,
    retry_after_s: int = 1,
    *,
    close_code: int,
) -> None:
    """Refuse at the handshake: an HTTP answer with a JSON reason where the server supports it
    (uvicorn does), else accept, send the error event and close."""
    stream_metrics(websocket.app.state).refused.labels(reason=code).inc()
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        headers = {"Retry-After": str(retry_after_s)} if status == 503 else None
        await websocket.send_denial_response(
            JSONResponse(error_body(code, message), status, headers)
        )
        return
    await websocket.accept()
    await websocket.send_json(error_event(StreamError(code, message, close_code), 0))
    await websocket.close(close_code, code)
