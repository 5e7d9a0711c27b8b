"""The app under a real uvicorn in a background thread of the test process, so tests can look
into the app's state (open streams, batcher queue) while websocket clients and a browser use it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import uvicorn
from fastapi import FastAPI
from starlette.types import ASGIApp

from server.app import create_app
from server.settings import Settings


@dataclass(frozen=True)
class LiveServer:
    url: str  # http://127.0.0.1:PORT
    app: FastAPI

    @property
    def ws_url(self) -> str:
        return "ws" + self.url.removeprefix("http") + "/v1/stream"


@contextmanager
def live_server(
    settings: Settings, wrap: Callable[[ASGIApp], ASGIApp] | None = None
) -> Iterator[LiveServer]:
    """Serve the app on 127.0.0.1 at a free port (``wrap``: an ASGI wrapper around it, e.g.
    the request profiler's time stamps)."""
    app = create_app(settings)
    served = wrap(app) if wrap else app
    config = uvicorn.Config(served, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield LiveServer(f"http://127.0.0.1:{port}", app)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
