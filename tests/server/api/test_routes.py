"""Health, readiness, metrics, model info, OpenAPI, and HTTP-level batching and overload."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from emocore.audio import load_audio
from tests.fixtures import encode_clip
from tests.server.conftest import direct_run, softmax

LABELS = ["neutral", "happy", "angry", "sad"]


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of a Prometheus sample over the label sets that match ``labels`` (0 if absent)."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


def test_health_ready_model_docs(client):
    assert client.get("/health").json() == {"status": "ok", "provider": "CPUExecutionProvider"}
    ready = client.get("/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    info = client.get("/v1/model").json()
    assert info["labels"] == LABELS and info["provider"] == "CPUExecutionProvider"
    assert info["model"]["format_version"] == 1 and info["model"]["variant"] == "fp32"
    assert "parity" in info["model"] and "files" not in info["model"]
    schema = client.get("/openapi.json").json()
    assert {"/predict", "/health", "/ready", "/metrics", "/v1/model"} <= set(schema["paths"])
    assert "multipart/form-data" in schema["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert client.get("/docs").status_code == 200


def test_not_ready_before_startup(make_settings):
    from fastapi.testclient import TestClient

    from server.app import create_app

    client = TestClient(create_app(make_settings()))  # no `with`: the lifespan has not run
    response = client.get("/ready")
    assert response.status_code == 503 and response.json()["error"]["code"] == "not_ready"


def test_metrics_count_requests_by_route_and_status(client):
    client.post("/predict", content=encode_clip("wav"))
    client.post("/predict", content=b"junk")
    text = client.get("/metrics").text
    assert metric(text, "emodistill_requests_total", route="/predict", status="200") == 1
    assert metric(text, "emodistill_requests_total", route="/predict", status="415") == 1
    assert (
        metric(text, "emodistill_requests_total", route="/metrics") == 0
    )  # counted after answering
    for name in (
        "emodistill_request_seconds_count",
        "emodistill_queue_wait_seconds_count",
        "emodistill_inference_seconds_count",
        "emodistill_batch_size_count",
    ):
        assert metric(text, name) >= 1, name
    assert metric(text, "emodistill_queue_depth") == 0
    assert metric(text, "emodistill_audio_seconds_total") == pytest.approx(1.0, abs=0.01)


@pytest.mark.parametrize("model", ["tiny_model_dir", "dims_model_dir"])
def test_concurrent_requests_are_batched_and_equal_unbatched(make_client, model, request):
    model_dir = request.getfixturevalue(model)
    reference = direct_run(model_dir, ["logits", "dimensions"] if "dims" in model else ["logits"])
    clips = [encode_clip("wav", seconds=1.0 + i / 20, kind="noise", seed=i) for i in range(6)]
    with make_client(max_batch_size=8, max_wait_ms=300, model_dir=model_dir) as client:
        with ThreadPoolExecutor(len(clips)) as pool:
            responses = list(pool.map(lambda c: client.post("/predict", content=c), clips))
        text = client.get("/metrics").text
    assert (
        metric(text, "emodistill_batch_size_sum") / metric(text, "emodistill_batch_size_count") > 1
    )
    sizes = [r.json()["results"][0]["batch_size"] for r in responses]
    assert max(sizes) > 1
    for response, clip in zip(responses, clips, strict=True):
        result = response.json()["results"][0]
        expected = reference(load_audio(clip))
        got = [result["probabilities"][label] for label in LABELS]
        np.testing.assert_allclose(got, softmax(expected[0]), atol=1e-5)
        if len(expected) == 1:
            assert "dimensions" not in result  # a model without them: answers unchanged
        else:
            got = [result["dimensions"][name] for name in ("arousal", "valence", "dominance")]
            np.testing.assert_allclose(got, expected[1], atol=1e-4)


@pytest.fixture
def held_worker():
    """Patch a started app's runtime so that batches wait until released."""
    gate = threading.Event()
    entered = threading.Event()

    def hold(client):
        runtime = client.app.state.server.runtime
        run = runtime.run

        def held(audio, lengths):
            entered.set()
            gate.wait(10)
            return run(audio, lengths)

        runtime.run = held

    yield hold, gate, entered
    gate.set()


def test_full_queue_is_503_with_retry_after(make_client, held_worker):
    hold, gate, entered = held_worker
    data = encode_clip("wav")
    with (
        make_client(max_batch_size=1, max_wait_ms=0, queue_size=1) as client,
        ThreadPoolExecutor(2) as pool,
    ):
        hold(client)
        in_flight = pool.submit(client.post, "/predict", content=data)
        assert entered.wait(5)
        queued = pool.submit(client.post, "/predict", content=data)
        while client.get("/ready").json()["queue_depth"] < 1:
            pass
        response = client.post("/predict", content=data)
        assert response.status_code == 503 and response.json()["error"]["code"] == "queue_full"
        assert int(response.headers["Retry-After"]) >= 1
        gate.set()
        assert in_flight.result().status_code == 200 and queued.result().status_code == 200


def test_request_timeout_is_503(make_client, held_worker):
    hold, gate, entered = held_worker
    with make_client(request_timeout_s=0.2) as client:
        hold(client)
        response = client.post("/predict", content=encode_clip("wav"))
        gate.set()
        assert response.status_code == 503 and response.json()["error"]["code"] == "timeout"
        assert "Retry-After" in response.headers
        assert client.post("/predict", content=encode_clip("wav")).status_code == 200
