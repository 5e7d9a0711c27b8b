"""The /v1/stream websocket route: origin, authentication and admission.

The protocol is in docs/streaming.md; a connection's life is `StreamSession`
(server/stream_session.py).
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, WebSocket
from fastapi.responses import JSONResponse

from server.auth import (
    QUERY_KEY,
    SUBPROTOCOL,
    key_accepted,
    offered_subprotocols,
    presented_key,
    subprotocol_key,
)
from server.errors import error_body
from server.settings import Settings
from server.stream_metrics import stream_metrics
from server.stream_protocol import CLOSE_POLICY, CLOSE_TRY_LATER, StreamError, error_event
from server.stream_session import StreamSession

router = APIRouter()
log = logging.getLogger("emodistill.stream")


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
            CLOSE_POLICY,
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
            CLOSE_POLICY,
        )
        return
    batcher = getattr(state, "batcher", None)
    if not getattr(state, "ready", False) or batcher is None or batcher.closing:
        await _refuse(
            websocket, 503, "not_ready", "the server is loading or shutting down", CLOSE_TRY_LATER
        )
        return
    active = getattr(state, "open_streams", 0)
    if active >= settings.stream_max_streams:
        await _refuse(
            websocket,
            503,
            "too_many_streams",
            f"this server takes at most {settings.stream_max_streams} concurrent streams; retry later",
            CLOSE_TRY_LATER,
        )
        return
    state.open_streams = active + 1
    metrics = stream_metrics(state)
    metrics.open.inc()
    try:
        subprotocol = SUBPROTOCOL if SUBPROTOCOL in offered else None
        await StreamSession(
            websocket, settings, batcher, state.runtime.labels, metrics, subprotocol=subprotocol
        ).run()
    finally:
        state.open_streams -= 1
        metrics.open.dec()


def origin_allowed(allowed: list[str], origin: str | None) -> bool:
    """With CORS origins configured, a browser's Origin must be one of them (or "*" be one).
    Clients that send no Origin (not browsers) are not held to it."""
    if not allowed or origin is None or "*" in allowed:
        return True
    return origin.rstrip("/") in {o.rstrip("/") for o in allowed}


async def _refuse(
    websocket: WebSocket, status: int, code: str, message: str, close_code: int
) -> None:
    """Refuse at the handshake: an HTTP answer with a JSON reason where the server supports it
    (uvicorn does), else accept, send the error event and close."""
    stream_metrics(websocket.app.state).refused.labels(reason=code).inc()
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        headers = {"Retry-After": "1"} if status == 503 else None
        await websocket.send_denial_response(
            JSONResponse(error_body(code, message), status, headers)
        )
        return
    await websocket.accept()
    await websocket.send_json(error_event(StreamError(code, message, close_code), 0))
    await websocket.close(close_code, code)
