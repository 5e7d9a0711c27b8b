"""What the server allows a stream, and the session config a client gets by default."""

from __future__ import annotations

from dataclasses import dataclass

from server.settings import Settings
from server.stream.protocol import StreamConfig


@dataclass(frozen=True)
class Limits:
    """What the server allows a stream (from Settings; docs/streaming.md)."""

    max_frame_bytes: int = 512 * 1024
    max_text_bytes: int = 4096
    max_json_depth: int = 8
    max_session_s: float = 3600.0
    idle_timeout_s: float = 15.0
    intake_rate: float = 10.0
    intake_burst_s: float = 10.0
    max_pending: int = 4
    speculate: bool = True
    max_utterance_s: float = 30.0  # the most a client may ask for (max_seconds)

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            max_frame_bytes=settings.stream_max_frame_bytes,
            max_text_bytes=settings.stream_max_text_bytes,
            max_json_depth=settings.stream_max_json_depth,
            max_session_s=settings.stream_max_session_s,
            idle_timeout_s=settings.stream_idle_timeout_s,
            intake_rate=settings.stream_intake_rate,
            intake_burst_s=settings.stream_intake_burst_s,
            max_pending=settings.stream_max_pending,
            speculate=settings.stream_speculate,
            max_utterance_s=settings.max_seconds,
        )

    def describe(self) -> dict[str, float]:
        """The limits a session's `ready` event tells the client."""
        return {
            "max_frame_bytes": self.max_frame_bytes,
            "max_text_bytes": self.max_text_bytes,
            "max_session_s": self.max_session_s,
            "idle_timeout_s": self.idle_timeout_s,
            "intake_rate": self.intake_rate,
            "max_pending": self.max_pending,
        }


def stream_defaults(settings: Settings) -> StreamConfig:
    """The session config a client gets for the keys it does not set."""
    return StreamConfig(
        min_silence_ms=settings.stream_min_silence_ms,
        partial_interval_ms=settings.stream_partial_interval_ms,
        max_utterance_s=settings.stream_max_utterance_s,
        min_confidence=settings.min_confidence,
    )
