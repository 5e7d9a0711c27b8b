"""Prometheus metrics of requests, the queue and batches, in one registry per app (so several
apps in one process never collide); the stream metrics join it (server/stream/metrics.py)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)
PREFIX = "emodistill"


class Metrics:
    """Request, queue and batch metrics; the batcher reports through the BatchObserver methods."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            f"{PREFIX}_requests",
            "HTTP requests by route and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            f"{PREFIX}_request_seconds",
            "HTTP request latency",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            f"{PREFIX}_queue_wait_seconds",
            "time an utterance waited for its batch",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inference = Histogram(
            f"{PREFIX}_inference_seconds",
            "ONNX Runtime time per batch",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            f"{PREFIX}_batch_size",
            "utterances per ONNX Runtime call",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            f"{PREFIX}_queue_depth", "utterances waiting for a batch", registry=r
        )
        self.dropped = Counter(
            f"{PREFIX}_dropped", "utterances never inferred, by reason", ["reason"], registry=r
        )
        self.timeouts = Counter(
            f"{PREFIX}_timeouts",
            "utterances whose answer took longer than the request timeout",
            registry=r,
        )
        self.failed = Counter(
            f"{PREFIX}_inference_failures",
            "ONNX Runtime calls that raised, by what was lost",
            ["unit"],
            registry=r,
        )
        self.audio_seconds = Counter(
            f"{PREFIX}_audio_seconds", "seconds of audio accepted for inference", registry=r
        )

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route=route, method=method, status=str(status)).inc()
        self.latency.labels(route=route).observe(seconds)

    def observe_batch(self, size: int, inference_s: float) -> None:
        self.batch_size.observe(size)
        self.inference.observe(inference_s)

    def observe_queue_wait(self, seconds: float) -> None:
        self.queue_wait.observe(seconds)

    def set_queue_depth(self, depth: int) -> None:
        self.queue_depth.set(depth)

    def count_dropped(self, reason: str) -> None:
        self.dropped.labels(reason=reason).inc()

    def count_timeout(self) -> None:
        self.timeouts.inc()

    def count_failed_batch(self, size: int) -> None:
        self.failed.labels(unit="batches").inc()
        self.failed.labels(unit="utterances").inc(size)

    def render(self) -> bytes:
        return generate_latest(self.registry)
