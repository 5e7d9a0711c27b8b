"""The FastAPI application: lifespan (load, validate, warm up, drain) and its routes."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse

from server.api import predict, status
from server.api.auth import install_log_redaction
from server.api.errors import install_error_handlers
from server.api.middleware import BodyLimitMiddleware, MetricsMiddleware
from server.inference.batcher import Batcher
from server.inference.runtime import Runtime
from server.settings import Settings
from server.state import AppState, app_state

log = logging.getLogger("emodistill.app")
STATIC_DIR = Path(__file__).parent / "static"
VERSION = "0.1.0"


def create_app(settings: Settings | None = None, *, runtime: Runtime | None = None) -> FastAPI:
    """The service. ``runtime`` (already loaded) skips loading in the lifespan: ``python -m
    server`` loads it before uvicorn starts, so a bad model directory is one clear message."""
    settings = settings or Settings()
    install_log_redaction()
    state = AppState(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loaded = runtime or Runtime.from_settings(settings)
        loaded.check_settings(settings)
        batcher = Batcher.from_settings(loaded, settings, observer=state.metrics)
        batcher.seed_capacity(*loaded.warm_up(batcher.max_batch_size))
        state.runtime = loaded
        state.batcher = batcher
        batcher.start()
        state.ready = True
        log.info("ready: %s on %s", settings.model_dir, loaded.provider)
        try:
            yield
        finally:
            # uvicorn has stopped accepting and let in-flight requests finish; streams still
            # open (hosts other than `python -m server`, which drains them first) get their
            # finals; then the queue is finished.
            state.ready = False
            await drain_open_streams(app, settings.stream_drain_budget_s)
            await batcher.close()
            log.info("stopped")

    app = FastAPI(
        title="EmoDistill",
        version=VERSION,
        description="Speech emotion recognition: batched utterance-level predictions from ONNX.",
        lifespan=lifespan,
    )
    app.state.server = state
    install_error_handlers(app)
    app.include_router(predict.router)
    app.include_router(status.router)
    _include_streaming(app)
    # Added innermost first: metrics see every answer, including 413s from the body limit.
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_body_bytes)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type"],
        )
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)
    return app


def _include_streaming(app: FastAPI) -> None:
    """The websocket route and its web page (server/stream/route.py, server/static/)."""
    try:
        from server.stream.route import router as stream_router
    except ModuleNotFoundError as exc:
        if exc.name != "server.stream.route":
            raise
        return
    app.include_router(stream_router)
    # One GET route per file rather than a catch-all mount at "/": API paths keep their own
    # 404/405 answers (a mount would answer GET /predict with 404).
    for path in sorted(STATIC_DIR.glob("*")):
        if path.is_file():
            route = "/" if path.name == "index.html" else f"/{path.name}"
            app.add_api_route(route, _static_file(path), methods=["GET"], include_in_schema=False)


async def drain_open_streams(app: FastAPI, budget_s: float) -> None:
    """Shutdown, first step: open streams finish (server/stream/route.py drain_streams)."""
    try:
        from server.stream.route import drain_streams
    except ModuleNotFoundError as exc:
        if exc.name != "server.stream.route":
            raise
        return
    await drain_streams(app_state(app).streams, budget_s)


def _static_file(path: Path):
    async def serve() -> FileResponse:
        return FileResponse(path)

    return serve
