"""Every server setting in one place, read from ``EMODISTILL_*`` environment variables."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

Device = Literal["auto", "cuda", "cpu"]


class Settings(BaseSettings):
    """Server configuration; ``EMODISTILL_MAX_BATCH_SIZE=16`` sets ``max_batch_size`` and so on.

    Lists (``api_keys``, ``cors_origins``) are comma-separated in the environment.
    """

    model_config = SettingsConfigDict(env_prefix="EMODISTILL_", extra="ignore")

    # Model and execution
    model_dir: Path = Field(Path("models/demo"), description="model directory (model.json + ONNX)")
    device: Device = Field("auto", description="auto: CUDA if onnxruntime-gpu can use it, else CPU")
    int8: Literal["auto"] | bool = Field(
        "auto",
        description="serve model.int8.onnx instead of model.onnx; auto: when the export wrote "
        "it and its accuracy gate passed on held-out clips",
    )
    threads: int = Field(0, ge=0, description="ONNX Runtime intra-op threads on CPU; 0 = all cores")
    ort_spinning: bool = Field(
        True,
        description="ONNX Runtime's worker threads spin-wait for work within a run and stop at "
        "its end; false: they never spin (slower runs, no busy-waiting at all)",
    )

    # HTTP. Loopback unless told otherwise (as Ollama, Jupyter and uvicorn itself): a service
    # with no API keys is reachable from other machines only when someone chose so (the
    # Docker image sets 0.0.0.0, where the container's port mapping decides).
    host: str = Field("127.0.0.1", description="listen address; 0.0.0.0 = every interface")
    port: int = Field(8000, ge=1, le=65535)
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="accepted API keys; empty = no authentication"
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    shutdown_grace_s: float = Field(
        30.0, gt=0, description="on SIGTERM, time to finish queued and in-flight requests"
    )

    # Dynamic batching
    max_batch_size: int = Field(8, ge=1, description="utterances per ONNX Runtime call")
    # 0: a batch runs as soon as the worker is free, and the next one fills while it runs (on
    # a CPU, waiting for mates cost a lone request the wait and bought ~1.1x at batch 8).
    max_wait_ms: float = Field(
        0.0, ge=0, description="how long the first queued utterance waits for batch mates"
    )
    queue_size: int = Field(64, ge=1, description="queued utterances before 503 + Retry-After")
    request_timeout_s: float = Field(
        30.0,
        gt=0,
        description="decoding + queue wait + inference per request before 503 (code timeout); "
        "a segment=true file gets this plus its own inference time",
    )
    max_backlog_s: float = Field(
        10.0,
        gt=0,
        description="queued work (audio at the measured inference speed) past which new "
        "requests and streams are refused at once (503 + Retry-After)",
    )
    # Padding cost bound: utterances share a batch only if the longest is at most this many
    # times the shortest, so a 1 s clip never pays for a 30 s batch mate.
    max_length_ratio: float = Field(2.0, ge=1.0)

    # Answers
    min_confidence: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="below this top-class probability an answer says uncertain: true (0 = never)",
    )

    # Input limits
    max_body_mb: float = Field(
        50.0, gt=0, description="request body limit, enforced while streaming"
    )
    max_seconds: float = Field(30.0, gt=0, description="longest clip without segment=true")
    max_segmented_seconds: float = Field(
        1800.0, gt=0, description="longest clip with segment=true (split into utterances)"
    )
    max_files: int = Field(16, ge=1, description="files per multipart request")

    # Streaming websocket /v1/stream (docs/streaming.md); stream_* defaults a client may override
    # per session are min_silence_ms, partial_interval_ms and max_utterance_s.
    stream_max_streams: int = Field(32, ge=1, description="open streams; more are refused (503)")
    stream_max_streams_per_key: int = Field(
        16, ge=1, description="open streams per API key (with api_keys set); more are refused"
    )
    stream_max_streams_per_client: int = Field(
        16, ge=1, description="open streams per client address; more are refused (503)"
    )
    stream_capacity_share: float = Field(
        0.8,
        ge=0,
        description="share of the measured inference capacity open streams may need; a new "
        "stream past it is refused (503 overloaded); 0 turns this limit off",
    )
    stream_max_frame_bytes: int = Field(512 * 1024, ge=1024, description="largest binary frame")
    stream_max_text_bytes: int = Field(
        4096, ge=256, description="largest text (JSON) message; more closes 1009"
    )
    stream_max_json_depth: int = Field(
        8, ge=2, description="deepest nesting of a JSON message (objects and arrays)"
    )
    stream_max_session_s: float = Field(3600.0, gt=0, description="wall-clock session limit")
    stream_idle_timeout_s: float = Field(
        15.0, gt=0, description="close after no *audio* this long (keepalives do not count)"
    )
    stream_intake_rate: float = Field(
        10.0, ge=1, description="audio read per wall second, a multiple of real time"
    )
    stream_intake_burst_s: float = Field(
        10.0, ge=0, description="audio a stream may send ahead of the intake rate"
    )
    stream_max_pending: int = Field(
        4, ge=1, description="utterances awaiting inference per stream before reading pauses"
    )
    stream_drain_s: float = Field(
        10.0, gt=0, description="on SIGTERM, time open streams get to receive their finals"
    )
    # The segmentation rule (server/inference/vad.py segment_params) of streams *and* segment=true and
    # the CLI: the VAD threshold, min speech, padding, and the default min silence.
    # The same ranges a client may choose per session (server/stream/protocol.py StreamConfig).
    stream_min_silence_ms: float = Field(
        300.0, ge=100, le=5000, description="silence that ends an utterance"
    )
    stream_partial_interval_ms: float = Field(
        500.0, ge=100, le=10_000, description="interim result spacing"
    )
    stream_max_utterance_s: float = Field(
        15.0, gt=0.5, description="a stream's utterance is cut here, from its first trigger"
    )
    stream_vad_threshold: float = Field(0.5, gt=0, lt=1, description="Silero speech probability")
    stream_min_speech_ms: float = Field(250.0, ge=0, description="shorter speech is ignored")
    stream_pad_ms: float = Field(30.0, ge=0, description="context kept around each utterance")
    stream_speculate: bool = Field(
        True, description="start an utterance's inference in the pause that may end it"
    )

    @field_validator("api_keys", "cors_origins", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        """Limits that contradict each other stop the server at start-up (one line, exit 2),
        not the first request or stream that meets them. A limit left at its default follows
        a lower one that was set (max_seconds=10 makes stream_max_utterance_s 10)."""
        problems: list[str] = []
        self._not_over("max_seconds", "max_segmented_seconds", problems)
        self._not_over(
            "stream_max_utterance_s", "max_seconds", problems, "a stream's utterance is a clip"
        )
        if self.stream_min_speech_ms >= 1000 * self.stream_max_utterance_s:
            problems.append(
                f"EMODISTILL_STREAM_MIN_SPEECH_MS={self.stream_min_speech_ms:g} is not under "
                f"EMODISTILL_STREAM_MAX_UTTERANCE_S={self.stream_max_utterance_s:g} s"
            )
        self._not_over(
            "max_backlog_s", "request_timeout_s", problems, "what it admits would time out"
        )
        if self.queue_size < self.max_batch_size:
            problems.append(
                f"EMODISTILL_QUEUE_SIZE={self.queue_size} is under "
                f"EMODISTILL_MAX_BATCH_SIZE={self.max_batch_size} (no batch could fill)"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _not_over(self, name: str, limit: str, problems: list[str], why: str = "") -> None:
        """``name`` may not exceed ``limit``: left at its default, it follows a lower limit;
        set explicitly, it is a problem (only explicit values contradict)."""
        value, bound = getattr(self, name), getattr(self, limit)
        if value <= bound:
            return
        if name not in self.model_fields_set:
            setattr(self, name, bound)
            return
        problems.append(
            f"EMODISTILL_{name.upper()}={value:g} is over EMODISTILL_{limit.upper()}={bound:g}"
            + (f" ({why})" if why else "")
        )

    @property
    def int8_choice(self) -> bool | None:
        """``int8`` for the model loader: None = auto (emocore.model_dir.int8_accepted)."""
        return None if self.int8 == "auto" else bool(self.int8)

    @property
    def loopback_only(self) -> bool:
        """Whether ``host`` reaches this machine only (127.0.0.0/8, ::1, localhost)."""
        if self.host.lower() == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:  # a host name: it may resolve to any interface
            return False

    @property
    def exposure_warning(self) -> str | None:
        """The start-up warning of a service open to other machines with no API key."""
        if self.loopback_only or self.api_keys:
            return None
        return (
            f"listening on {self.host}, beyond loopback, with no API key: anyone who can reach "
            f"port {self.port} can use the model. Set EMODISTILL_API_KEYS, or "
            "EMODISTILL_HOST=127.0.0.1 to serve this machine only"
        )

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)

    @property
    def ws_max_size(self) -> int:
        """uvicorn's websocket message limit (it closes 1009 itself, no event): twice the
        largest legal frame, so a frame a little too large still gets our error event."""
        return 2 * max(self.stream_max_frame_bytes, self.stream_max_text_bytes)

    @property
    def stream_drain_budget_s(self) -> float:
        """Drain time of streams on SIGTERM: at most half the grace period, so that HTTP
        requests in flight and the batcher's queue still get the rest."""
        return min(self.stream_drain_s, self.shutdown_grace_s / 2)


def settings_problem(exc: ValidationError) -> str:
    """A settings error as one line naming the environment variables."""
    parts = []
    for error in exc.errors():
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        names = [str(p) for p in error.get("loc", ()) if isinstance(p, str)]
        parts.append(f"EMODISTILL_{names[0].upper()}: {message}" if names else message)
    return "invalid settings: " + "; ".join(parts)
