"""ASGI middleware: the request body limit (enforced while streaming) and request metrics."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.api.errors import ApiError
from server.api.metrics import Metrics


def body_too_large(limit: int) -> ApiError:
    # Connection: close makes uvicorn drop the connection instead of reading (and
    # discarding) the rest of an oversized upload.
    return ApiError(
        413,
        "body_too_large",
        f"the request body exceeds the {limit / 2**20:g} MiB limit",
        {"Connection": "close"},
    )


class BodyLimitMiddleware:
    """Refuse bodies over ``limit`` bytes without ever holding them.

    The route's first read raises if the declared Content-Length is over the limit; a chunked
    body is counted as it streams in and the read that crosses the limit raises. The error
    handler turns the raise into a 413 JSON answer, counted under the route in the metrics.
    """

    def __init__(self, app: ASGIApp, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        declared_too_large = declared.isdigit() and int(declared) > self.limit
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            if declared_too_large:
                raise body_too_large(self.limit)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise body_too_large(self.limit)
            return message

        await self.app(scope, limited_receive, send)


class MetricsMiddleware:
    """Count requests by route template (never the raw path: bounded label values) and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.observe_request(
                route, scope["method"], status, time.perf_counter() - started
            )
