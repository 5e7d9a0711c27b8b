"""``POST /predict``: uploaded audio -> decoded utterances -> the shared batcher -> scores.

A request is followed from here: read the body (multipart files or raw bytes), decode each
file with emocore/audio.py (a small WAV on the event loop, anything else in a worker thread),
optionally split it into utterances with the VAD,
queue every utterance on the batcher, and build the answer with emocore/scoring.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Annotated, TypeVar

import numpy as np
from fastapi import APIRouter, Depends, Query, Request
from starlette.datastructures import UploadFile
from starlette.requests import ClientDisconnect

from emocore import scoring
from emocore.audio import ACCEPTED_FORMATS, SAMPLE_RATE, AudioError, load_audio
from server.api.auth import require_api_key
from server.api.dependencies import Serving, ServingDep
from server.api.errors import ApiError
from server.api.schemas import ErrorResponse, Prediction, PredictResponse
from server.inference.batcher import Batcher
from server.inference.requests import (
    BatcherClosed,
    BatcherUnavailable,
    Inference,
    InferenceFailed,
    QueueFull,
    RequestTimeout,
)
from server.inference.vad import segment_params, utterance_spans

router = APIRouter()
T = TypeVar("T")

# A small WAV decodes in a fraction of a millisecond (a 3 s clip: ~0.3 ms), about what a round
# trip to a worker thread costs, so it is decoded on the event loop; compressed formats and
# longer files (whose decoding takes longer: it would hold up every other request) in a thread.
INLINE_DECODE_BYTES = 256 * 1024

# AudioError code -> HTTP status. Everything here is the client's input, so never a 5xx.
AUDIO_STATUS = {"undecodable": 415, "unsupported_format": 415, "too_long": 413}
AUDIO_STATUS_DEFAULT = 422
CLIENT_CLOSED = 499  # nginx's convention for "the client went away before the answer"

_ERRORS = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in {
        400: "malformed multipart body, or more files than max_files",
        401: "missing or wrong API key",
        413: "body over the size limit, or audio over max_seconds without segment=true",
        415: f"audio that cannot be decoded; accepted: {', '.join(ACCEPTED_FORMATS)}",
        422: "empty, too short, NaN/Inf audio, or invalid options",
        503: "queue full or request timeout (Retry-After), or shutting down",
    }.items()
}
_BODY_DOC = {
    "requestBody": {
        "description": "audio as the raw body, or multipart/form-data with one or more `file` parts",
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "file": {"type": "array", "items": {"type": "string", "format": "binary"}}
                    },
                    "required": ["file"],
                }
            },
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


@dataclass(frozen=True)
class Upload:
    filename: str | None
    data: bytes


@router.post(
    "/predict",
    response_model=PredictResponse,
    responses=_ERRORS,
    openapi_extra=_BODY_DOC,
    dependencies=[Depends(require_api_key)],
    summary="Emotion of each uploaded utterance (or of each utterance in a long file)",
)
async def predict(
    request: Request,
    serving: ServingDep,
    top_k: Annotated[
        int | None, Query(ge=1, description="also list the k most probable labels")
    ] = None,
    return_embedding: Annotated[bool, Query(description="include the utterance embedding")] = False,
    segment: Annotated[
        bool, Query(description="split long audio into utterances (VAD); answer per segment")
    ] = False,
    min_confidence: Annotated[
        float | None,
        Query(
            ge=0.0,
            le=1.0,
            description="answers below this confidence say uncertain: true "
            "(default: the server's EMODISTILL_MIN_CONFIDENCE)",
        ),
    ] = None,
) -> PredictResponse:
    settings, runtime, batcher = serving.settings, serving.runtime, serving.batcher
    labels = runtime.labels
    if top_k is not None and top_k > len(labels):
        raise ApiError(422, "invalid_request", f"top_k must be between 1 and {len(labels)}")
    if (full := batcher.backlog_full()) is not None:
        raise queue_full(full)  # before reading and decoding what would be refused anyway
    uploads = await read_uploads(request, settings.max_files)
    options = dict(
        top_k=top_k,
        return_embedding=return_embedding,
        min_confidence=settings.min_confidence if min_confidence is None else min_confidence,
        # One deadline for the whole request (decoding, every file and segment), counted
        # from the moment its body is read: an accepted request is answered within
        # request_timeout_s (or 503 timeout), however many utterances it holds.
        deadline=time.monotonic() + settings.request_timeout_s,
    )
    # A request's files and segments share its slots: it never holds more of the queue than
    # one batch, however many files and segments it brings.
    slots = asyncio.Semaphore(max(1, min(batcher.max_batch_size, batcher.queue_size)))
    work = [
        _predict_one(serving, upload, index, len(uploads), segment, options, slots)
        for index, upload in enumerate(uploads)
    ]
    results = await until_disconnected(request, all_or_nothing(work))
    return PredictResponse(results=results)


async def read_uploads(request: Request, max_files: int) -> list[Upload]:
    """The multipart ``file`` parts in order, or the raw body as one upload; a client that
    aborts its upload is 499 (nobody reads it), not a server fault."""
    try:
        return await _read_uploads(request, max_files)
    except ClientDisconnect:
        raise client_closed() from None


async def _read_uploads(request: Request, max_files: int) -> list[Upload]:
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        form = await request.form(max_files=max_files)
        parts = form.getlist("file")
        if not parts:
            raise ApiError(422, "no_audio", "the multipart body has no `file` part")
        uploads = []
        for part in parts:
            if not isinstance(part, UploadFile):
                raise ApiError(422, "no_audio", "the multipart `file` field must be a file upload")
            uploads.append(Upload(part.filename, await part.read()))
        return uploads
    # Anything else is the audio itself, whatever it is labelled (curl's --data-binary sends
    # application/x-www-form-urlencoded): the decoder decides and names the accepted formats.
    return [Upload(None, await request.body())]


async def _predict_one(
    serving: Serving,
    upload: Upload,
    index: int,
    count: int,
    segment: bool,
    options: dict,
    slots: asyncio.Semaphore,
) -> Prediction:
    settings, runtime, batcher = serving.settings, serving.runtime, serving.batcher
    started = time.perf_counter()
    limit = settings.max_segmented_seconds if segment else settings.max_seconds
    decode = partial(
        load_audio, upload.data, min_seconds=runtime.min_samples / SAMPLE_RATE, max_seconds=limit
    )
    try:
        audio = decode() if decodes_inline(upload.data) else await in_thread(decode)
    except AudioError as exc:
        raise audio_error(exc, upload, index, count, segment) from None
    decoded = time.perf_counter()
    serving.metrics.audio_seconds.inc(len(audio) / SAMPLE_RATE)
    common = dict(filename=upload.filename, duration_s=scoring.seconds(len(audio)))
    labels = runtime.labels
    names = runtime.dimension_names
    if not segment:
        async with slots:
            inference = await infer(batcher, audio, options["deadline"])
        timings = _timings(
            inference,
            decode_ms=scoring.ms(decoded - started),
            total_ms=scoring.ms(time.perf_counter() - started),
        )
        return Prediction(
            **common,
            **_scores(labels, names, inference, options),
            batch_size=inference.batch_size,
            timings=timings,
        )
    max_samples = int(settings.max_seconds * SAMPLE_RATE)
    params = segment_params(settings, min_samples=runtime.min_samples)
    spans = await in_thread(
        partial(utterance_spans, audio, max_samples, runtime.min_samples, params)
    )
    found = time.perf_counter()
    # Admission for the whole file at once (the work queued ahead of it, as before its
    # body was read): refused now, never halfway through its segments. Admitted, it has the
    # request's deadline plus its own inference time (an hour of audio is minutes of work).
    if (full := batcher.backlog_full()) is not None:
        raise queue_full(full)
    deadline = options["deadline"] + (batcher.work_s(sum(e - s for s, e in spans)) or math.inf)
    inferences = await _infer_spans(batcher, audio, spans, slots, deadline)
    segments = [
        dict(
            start_s=scoring.seconds(s),
            end_s=scoring.seconds(e),
            **_scores(labels, names, inference, options),
            batch_size=inference.batch_size,
            timings=_timings(inference),
        )
        for (s, e), inference in zip(spans, inferences, strict=True)
    ]
    summary = scoring.summary(
        labels,
        names,
        spans,
        [i.probabilities for i in inferences],
        [i.dimensions for i in inferences],
        top_k=options["top_k"],
        min_confidence=options["min_confidence"],
    )
    return Prediction(
        **common,
        **summary,
        segments=segments,
        timings=dict(
            decode_ms=scoring.ms(decoded - started),
            vad_ms=scoring.ms(found - decoded),
            queue_wait_ms=scoring.ms(sum(i.queue_wait_s for i in inferences)),
            inference_ms=scoring.ms(sum(i.inference_s for i in inferences)),
            total_ms=scoring.ms(time.perf_counter() - started),
        ),
    )


def decodes_inline(data: bytes) -> bool:
    """A WAV of at most INLINE_DECODE_BYTES (by its RIFF/WAVE header; anything else decodes in
    a thread)."""
    return len(data) <= INLINE_DECODE_BYTES and data[:4] == b"RIFF" and data[8:12] == b"WAVE"


async def in_thread(work: Callable[[], T]) -> T:
    """``work()`` in the loop's default executor: one round trip to a worker thread (anyio's
    run_in_threadpool, which FastAPI uses, cost several times as much)."""
    return await asyncio.get_running_loop().run_in_executor(None, work)


def _scores(
    labels: list[str], names: tuple[str, ...] | None, inference: Inference, options: dict
) -> dict:
    embedding = inference.embedding if options["return_embedding"] else None
    return scoring.scores(
        labels,
        inference.probabilities,
        top_k=options["top_k"],
        embedding=embedding,
        min_confidence=options["min_confidence"],
    ) | scoring.dimension_fields(names, inference.dimensions)


def _timings(inference: Inference, **extra: float) -> dict:
    return dict(
        queue_wait_ms=scoring.ms(inference.queue_wait_s),
        inference_ms=scoring.ms(inference.inference_s),
        **extra,
    )


async def _infer_spans(
    batcher: Batcher,
    audio: np.ndarray,
    spans: list[tuple[int, int]],
    slots: asyncio.Semaphore,
    deadline: float,
) -> list[Inference]:
    """Queue a long file's utterances (admitted together) through the request's slots, so
    that one request (one file or many) cannot fill the queue."""

    async def one(start: int, end: int) -> Inference:
        async with slots:
            return await infer(batcher, audio[start:end], deadline, wait=True)

    return await all_or_nothing([one(s, e) for s, e in spans])


async def all_or_nothing(work: list[Awaitable[T]]) -> list[T]:
    """Results in order; the first failure cancels the rest (their queued utterances leave
    the batcher instead of being inferred for an answer nobody will get)."""
    if len(work) == 1:  # nothing to cancel beside it: no task of its own (one loop turn less)
        return [await work[0]]
    tasks = [asyncio.ensure_future(item) for item in work]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        raise


async def infer(
    batcher: Batcher, audio: np.ndarray, deadline: float, *, wait: bool = False
) -> Inference:
    """Batcher errors -> HTTP errors (overload and shutdown are 503 with Retry-After). With
    ``wait`` (the segments of an admitted file), a full queue is waited out, not refused."""
    try:
        return await batcher.infer(audio, deadline=deadline, wait=wait)
    except QueueFull as exc:
        raise queue_full(exc) from None
    except RequestTimeout as exc:
        raise ApiError(503, "timeout", str(exc), {"Retry-After": "1"}) from None
    except BatcherUnavailable as exc:
        raise ApiError(503, "unavailable", str(exc), {"Retry-After": "30"}) from None
    except BatcherClosed as exc:
        raise ApiError(503, "shutting_down", str(exc), {"Retry-After": "5"}) from None
    except InferenceFailed as exc:
        raise ApiError(500, "inference_failed", str(exc)) from None


def queue_full(exc: QueueFull) -> ApiError:
    return ApiError(503, "queue_full", str(exc), {"Retry-After": str(exc.retry_after_s)})


def audio_error(exc: AudioError, upload: Upload, index: int, count: int, segment: bool) -> ApiError:
    message = exc.message
    if exc.code == "too_long" and not segment:
        message += "; send segment=true to split long audio into utterances"
    if count > 1:
        message = f"file {index + 1} ({shown_name(upload.filename)}): {message}"
    return ApiError(AUDIO_STATUS.get(exc.code, AUDIO_STATUS_DEFAULT), exc.code, message)


def shown_name(filename: str | None, limit: int = 80) -> str:
    """A client's file name as it may appear in a message: printable, at most ``limit`` chars."""
    name = "".join(c if c.isprintable() else "?" for c in (filename or ""))
    return name if len(name) <= limit else name[: limit - 3] + "..."


async def until_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await ``work`` unless the client disconnects first; then cancel it (its queued
    utterances leave the batcher before inference) and answer 499 to nobody."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, ApiError):
        await task
    raise client_closed()


def client_closed() -> ApiError:
    return ApiError(CLIENT_CLOSED, "client_closed", "the client closed the connection")


async def _disconnected(request: Request) -> None:
    # Once the body is read, the server's next message is http.disconnect (client gone, or
    # sent by the test client after the response).
    while (await request.receive())["type"] != "http.disconnect":
        pass
