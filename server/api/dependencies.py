"""What routes take from the app, as FastAPI dependencies: settings, runtime, batcher, metrics
and the streams' shared state.

The lifespan (server/app.py) puts the runtime and the batcher in place once the model is
loaded; until then the `Optional` forms give None (the health routes answer without them).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from starlette.requests import HTTPConnection

from server.api.metrics import Metrics
from server.inference.batcher import Batcher
from server.inference.runtime import Runtime
from server.settings import Settings
from server.stream.state import StreamState


def get_settings(connection: HTTPConnection) -> Settings:
    return connection.app.state.settings


def get_metrics(connection: HTTPConnection) -> Metrics:
    return connection.app.state.metrics


def get_runtime(connection: HTTPConnection) -> Runtime:
    return connection.app.state.runtime


def get_batcher(connection: HTTPConnection) -> Batcher:
    return connection.app.state.batcher


def loaded_runtime(connection: HTTPConnection) -> Runtime | None:
    return getattr(connection.app.state, "runtime", None)


def loaded_batcher(connection: HTTPConnection) -> Batcher | None:
    return getattr(connection.app.state, "batcher", None)


def is_ready(connection: HTTPConnection) -> bool:
    """Loaded, warmed up and not shutting down (the lifespan's flag)."""
    return connection.app.state.ready


def get_streams(connection: HTTPConnection) -> StreamState:
    return connection.app.state.streams


SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
BatcherDep = Annotated[Batcher, Depends(get_batcher)]
OptionalRuntimeDep = Annotated[Runtime | None, Depends(loaded_runtime)]
OptionalBatcherDep = Annotated[Batcher | None, Depends(loaded_batcher)]
ReadyDep = Annotated[bool, Depends(is_ready)]
StreamStateDep = Annotated[StreamState, Depends(get_streams)]
