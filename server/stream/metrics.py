"""Prometheus metrics of /v1/stream, in the app's own registry (server/api/metrics.py)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from server.api.metrics import LATENCY_BUCKETS, PREFIX

# Until streams have sent this much audio, a real-time stream is assumed to need inference on
# all of it (continuous speech): the cautious guess for admitting the first streams.
DEMAND_PRIOR_SHARE = 1.0
DEMAND_MIN_HEARD_S = 30.0


class StreamMetrics:
    def __init__(self, registry) -> None:
        # What streams cost the batcher: audio received vs audio sent to inference (finals,
        # speculative and partial inference alike), in seconds, over the process's life.
        self.heard_s = 0.0
        self.inferred_s = 0.0
        self.audio = Counter(
            f"{PREFIX}_stream_audio_seconds",
            "audio received by streams, and sent to inference (kind)",
            ["kind"],
            registry=registry,
        )
        self.open = Gauge(f"{PREFIX}_streams_open", "open /v1/stream sessions", registry=registry)
        self.refused = Counter(
            f"{PREFIX}_streams_refused",
            "streams refused at the handshake, by reason",
            ["reason"],
            registry=registry,
        )
        self.closed = Counter(
            f"{PREFIX}_streams_closed",
            "streams ended, by reason (stop, client gone, an error code)",
            ["reason"],
            registry=registry,
        )
        self.finals = Counter(
            f"{PREFIX}_stream_finals",
            "final results sent, by whether a speculative inference answered them",
            ["speculative"],
            registry=registry,
        )
        self.final_delay = Histogram(
            f"{PREFIX}_stream_final_delay_seconds",
            "from the endpoint becoming certain to its final being sent",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )


def demand_share(metrics: StreamMetrics) -> float:
    """Seconds of inference per second of stream audio: the measured share once streams sent
    DEMAND_MIN_HEARD_S of audio, DEMAND_PRIOR_SHARE before."""
    if metrics.heard_s < DEMAND_MIN_HEARD_S:
        return DEMAND_PRIOR_SHARE
    return metrics.inferred_s / metrics.heard_s


def count_audio(metrics: StreamMetrics, kind: str, seconds: float) -> None:
    """``kind``: "received" or "inferred"."""
    if seconds <= 0:
        return
    if kind == "received":
        metrics.heard_s += seconds
    else:
        metrics.inferred_s += seconds
    metrics.audio.labels(kind=kind).inc(seconds)
