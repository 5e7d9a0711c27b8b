"""The app's typed state: settings, metrics, the loaded model and its batcher, the streams.

Created by the app factory (server/app.py) as ``app.state.server``; the lifespan puts the
runtime and the batcher in place once the model is loaded and warm. Routes reach it through
the dependencies of server/api/dependencies.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import FastAPI

from server.api.metrics import Metrics
from server.inference.batcher import Batcher
from server.inference.runtime import Runtime
from server.settings import Settings
from server.stream.state import StreamState


@dataclass(eq=False)
class AppState:
    settings: Settings
    metrics: Metrics = field(default_factory=Metrics)
    ready: bool = False  # loaded, warmed up and not shutting down
    runtime: Runtime | None = None  # None until the lifespan has loaded the model
    batcher: Batcher | None = None
    streams: StreamState = field(init=False)

    def __post_init__(self) -> None:
        self.streams = StreamState(self.metrics.registry)


def app_state(app: FastAPI) -> AppState:
    return app.state.server
