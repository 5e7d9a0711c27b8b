"""What routes take from the app, as FastAPI dependencies: its typed state (server/state.py)
and the settings, runtime, batcher, metrics and stream state in it.

`RuntimeDep` and `BatcherDep` are for routes that run only once the model is loaded (the
lifespan loads it before serving); the health routes take the `Optional` forms.

Every dependency is ``async def``: FastAPI runs a plain ``def`` dependency in a worker thread,
and these only read the app's state, so each thread round trip was pure overhead (five per
``POST /predict``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends
from starlette.requests import HTTPConnection

from server.api.metrics import Metrics
from server.inference.batcher import Batcher
from server.inference.runtime import Runtime
from server.settings import Settings
from server.state import AppState, app_state
from server.stream.state import StreamState


async def get_state(connection: HTTPConnection) -> AppState:
    return app_state(connection.app)


StateDep = Annotated[AppState, Depends(get_state)]


async def get_settings(state: StateDep) -> Settings:
    return state.settings


async def get_metrics(state: StateDep) -> Metrics:
    return state.metrics


async def get_runtime(state: StateDep) -> Runtime:
    assert state.runtime is not None, "the lifespan loads the model before serving"
    return state.runtime


async def get_batcher(state: StateDep) -> Batcher:
    assert state.batcher is not None, "the lifespan starts the batcher before serving"
    return state.batcher


async def loaded_runtime(state: StateDep) -> Runtime | None:
    return state.runtime


async def loaded_batcher(state: StateDep) -> Batcher | None:
    return state.batcher


async def is_ready(state: StateDep) -> bool:
    return state.ready


async def get_streams(state: StateDep) -> StreamState:
    return state.streams


@dataclass(frozen=True)
class Serving:
    """What answering ``POST /predict`` takes from the app, in one dependency: each
    dependency FastAPI solves costs tens of microseconds per request."""

    settings: Settings
    runtime: Runtime
    batcher: Batcher
    metrics: Metrics


async def get_serving(connection: HTTPConnection) -> Serving:
    state = app_state(connection.app)
    assert state.runtime is not None and state.batcher is not None, "loaded before serving"
    return Serving(state.settings, state.runtime, state.batcher, state.metrics)


SettingsDep = Annotated[Settings, Depends(get_settings)]
ServingDep = Annotated[Serving, Depends(get_serving)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
BatcherDep = Annotated[Batcher, Depends(get_batcher)]
OptionalRuntimeDep = Annotated[Runtime | None, Depends(loaded_runtime)]
OptionalBatcherDep = Annotated[Batcher | None, Depends(loaded_batcher)]
ReadyDep = Annotated[bool, Depends(is_ready)]
StreamStateDep = Annotated[StreamState, Depends(get_streams)]
