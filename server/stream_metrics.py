"""Prometheus metrics of /v1/stream, in the app's own registry (server/metrics.py)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram
from starlette.datastructures import State

from server.metrics import LATENCY_BUCKETS, PREFIX


class StreamMetrics:
    def __init__(self, registry) -> None:
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


def stream_metrics(state: State) -> StreamMetrics:
    """The app's stream metrics, registered on first use."""
    if getattr(state, "stream_metrics", None) is None:
        state.stream_metrics = StreamMetrics(state.metrics.registry)
    return state.stream_metrics
