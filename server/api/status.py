"""Operational routes: liveness, readiness, Prometheus metrics and the served model."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse

from server.api.auth import require_api_key
from server.api.dependencies import (
    BatcherDep,
    MetricsDep,
    OptionalBatcherDep,
    OptionalRuntimeDep,
    ReadyDep,
    RuntimeDep,
)
from server.api.errors import ApiError

router = APIRouter()


@router.get("/health", summary="Liveness: the process answers and its batcher runs")
async def health(runtime: OptionalRuntimeDep, batcher: OptionalBatcherDep) -> JSONResponse:
    """200 ``ok``, or 503 ``unhealthy`` with the reason once the batcher is down for good
    (restart the process); ``degraded`` (200) while inference keeps failing."""
    body = {"status": "ok", "provider": runtime.provider if runtime else None}
    reason = batcher.unready_reason if batcher is not None else None
    if batcher is not None and batcher.fault is not None:
        return JSONResponse(body | {"status": "unhealthy", "reason": reason}, 503)
    if reason is not None:
        body |= {"status": "degraded", "reason": reason}
    return JSONResponse(body)


@router.get("/ready", summary="Readiness: model loaded, warmed up, not shutting down")
async def ready(ready: ReadyDep, runtime: OptionalRuntimeDep, batcher: OptionalBatcherDep) -> dict:
    if not ready or runtime is None or batcher is None or batcher.closing:
        raise ApiError(
            503, "not_ready", "the model is not loaded and warmed up yet, or the server is stopping"
        )
    if batcher.unready_reason is not None:
        raise ApiError(503, "not_ready", batcher.unready_reason)
    return {
        "status": "ready",
        "provider": runtime.provider,
        "queue_depth": batcher.depth,
    }


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(registry: MetricsDep) -> Response:
    return Response(registry.render(), media_type=registry.content_type)


@router.get("/v1/model", summary="The served model", dependencies=[Depends(require_api_key)])
async def model(runtime: RuntimeDep, batcher: BatcherDep) -> dict:
    return {
        "labels": runtime.labels,
        "provider": runtime.provider,
        "max_batch_size": batcher.max_batch_size,
        "model": runtime.model.summary(),
    }
