"""The /v1/stream wire protocol, free of I/O: session config, PCM decoding, errors, event JSON.

docs/streaming.md is the user-facing description of the same protocol.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from emocore.audio import MAX_RATE, MIN_RATE, SAMPLE_RATE
from emocore.scoring import STREAM_SECONDS_DIGITS, dimension_fields, seconds, verdict

Encoding = Literal["pcm_s16le", "f32le"]
ENCODINGS: tuple[str, ...] = ("pcm_s16le", "f32le")
BYTES_PER_SAMPLE = {"pcm_s16le": 2, "f32le": 4}
SCORE_DIGITS = 6  # results' floats (confidence, probabilities, dimensions) are rounded to this
# Query-string keys that make the session start at once (no start message needed).
CONFIG_KEYS = (
    "sample_rate",
    "encoding",
    "interim",
    "partial_interval_ms",
    "min_silence_ms",
    "max_utterance_s",
    "min_confidence",
)

# Websocket close codes (RFC 6455 section 7.4.1).
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001  # the server shuts down
CLOSE_UNSUPPORTED = 1003  # audio the server cannot take: encoding, byte count, NaN
CLOSE_POLICY = 1008  # protocol misuse: bad JSON or config, binary before config, limits
CLOSE_TOO_BIG = 1009  # a frame over the size limit
CLOSE_INTERNAL = 1011
CLOSE_TRY_LATER = 1013  # overloaded: too many streams, inference queue full


class StreamError(Exception):
    """Ends a session: an `error` event with `code` and `message`, then a close with `close_code`."""

    def __init__(self, code: str, message: str, close_code: int, utterance: int | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.close_code = close_code
        self.utterance = utterance


class StreamConfig(BaseModel):
    """What a client may choose per session; defaults and upper bounds come from Settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sample_rate: int = Field(SAMPLE_RATE, ge=MIN_RATE, le=MAX_RATE)
    encoding: str = "pcm_s16le"
    interim: bool = False
    partial_interval_ms: float = Field(500.0, ge=100, le=10_000)
    min_silence_ms: float = Field(300.0, ge=100, le=5_000)
    max_utterance_s: float = Field(15.0, gt=0.5)
    min_confidence: float = Field(0.0, ge=0.0, le=1.0)

    @property
    def bytes_per_sample(self) -> int:
        return BYTES_PER_SAMPLE[self.encoding]


def parse_config(
    values: Mapping[str, Any], defaults: StreamConfig, *, max_utterance_s: float
) -> StreamConfig:
    """Validate client values over the server defaults; raise StreamError on anything wrong."""
    merged = {**defaults.model_dump(), **values}
    encoding = merged.get("encoding")
    if encoding not in ENCODINGS:
        raise StreamError(
            "unsupported_encoding",
            f"encoding {encoding!r} is not supported; use one of: {', '.join(ENCODINGS)}",
            CLOSE_UNSUPPORTED,
        )
    try:
        config = StreamConfig.model_validate(merged)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}" for e in exc.errors()
        )
        raise StreamError("invalid_config", problems, CLOSE_POLICY) from None
    if config.max_utterance_s > max_utterance_s:
        raise StreamError(
            "invalid_config",
            f"max_utterance_s: at most {max_utterance_s:g} s on this server",
            CLOSE_POLICY,
        )
    return config


def query_config(params: Mapping[str, str]) -> dict[str, str] | None:
    """The config keys present in a query string, or None when it names none."""
    chosen = {key: params[key] for key in CONFIG_KEYS if key in params}
    return chosen or None


def json_depth(text: str) -> int:
    """How deeply objects and arrays nest in a JSON text (brackets inside strings ignored);
    measured before parsing, so a hostile nesting never reaches the recursive parser."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def parse_message(text: str, *, max_bytes: int = 4096, max_depth: int = 8) -> dict[str, Any]:
    """A client text message: a JSON object with a string `type`, within the size and nesting
    limits."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise StreamError(
            "message_too_large",
            f"a text message holds at most {max_bytes} bytes; got {size}",
            CLOSE_TOO_BIG,
        )
    if json_depth(text) > max_depth:
        raise StreamError(
            "malformed_json",
            f"text message nests deeper than {max_depth} levels",
            CLOSE_POLICY,
        )
    try:
        message = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise StreamError(
            "malformed_json", f"text message is not JSON: {exc}", CLOSE_POLICY
        ) from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise StreamError(
            "malformed_message", 'a text message must be a JSON object with a "type"', CLOSE_POLICY
        )
    return message


def decode_pcm(data: bytes, config: StreamConfig) -> np.ndarray:
    """A binary frame -> float32 samples at the client's rate; whole samples only."""
    if len(data) % config.bytes_per_sample:
        raise StreamError(
            "odd_byte_count",
            f"a {config.encoding} frame must hold whole {config.bytes_per_sample}-byte samples; "
            f"got {len(data)} bytes",
            CLOSE_UNSUPPORTED,
        )
    if config.encoding == "pcm_s16le":
        return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
    samples = np.frombuffer(data, dtype="<f4").astype(np.float32)
    if not np.isfinite(samples).all():
        raise StreamError(
            "non_finite", "f32le audio contains NaN or infinite samples", CLOSE_UNSUPPORTED
        )
    return samples


def event(kind: str, *, time: int, utterance: int | None, **fields: Any) -> dict[str, Any]:
    """Every server event: its type, the stream time (s) and the utterance index (or None)."""
    return {
        "type": kind,
        "time": seconds(time, STREAM_SECONDS_DIGITS),
        "utterance": utterance,
        **fields,
    }


def closing_event(time: int, left_s: float) -> dict[str, Any]:
    """The server shuts down: the finals of what was received follow within ``left_s``."""
    return event(
        "closing",
        time=time,
        utterance=None,
        reason="shutting_down",
        message="the server is shutting down: send no more audio; the finals of what "
        "was received follow, then the stream closes 1001",
        deadline_s=round(max(0.0, left_s), 3),
    )


def error_event(error: StreamError, time: int) -> dict[str, Any]:
    return event(
        "error", time=time, utterance=error.utterance, code=error.code, message=error.message
    )


def result_event(
    kind: str,
    *,
    time: int,
    utterance: int,
    span: tuple[int, int],
    labels: Sequence[str],
    min_confidence: float,
    probabilities: np.ndarray,
    dimension_names: Sequence[str] | None,
    dimensions: np.ndarray | None,
) -> dict[str, Any]:
    """A `partial` or `final` event: the verdict on one utterance span (samples), its floats
    rounded to SCORE_DIGITS."""
    return event(
        kind,
        time=time,
        utterance=utterance,
        start=seconds(span[0], STREAM_SECONDS_DIGITS),
        end=seconds(span[1], STREAM_SECONDS_DIGITS),
        **verdict(labels, probabilities, min_confidence, digits=SCORE_DIGITS),
        **dimension_fields(dimension_names, dimensions, SCORE_DIGITS),
    )
