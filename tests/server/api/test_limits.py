"""Bad input and limits: every client mistake is the 4xx and error code docs/api.md gives it,
with a JSON error, never a 5xx."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import soundfile as sf

from tests.fixtures import encode_clip


def assert_error(response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    assert body["error"]["message"]
    return body["error"]["message"]


def float_wav(samples: np.ndarray, sr: int = 16000) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, sr, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


def test_undecodable_audio_is_415_naming_the_formats(client):
    message = assert_error(
        client.post("/predict", content=b"not audio at all" * 100), 415, "undecodable"
    )
    for name in ("WAV", "FLAC", "Opus", "MP3"):
        assert name in message


def test_truncated_file_is_415_undecodable(client):
    data = encode_clip("flac", seconds=1.0, kind="noise")
    message = assert_error(
        client.post("/predict", content=data[: len(data) // 3]), 415, "undecodable"
    )
    assert "accepted formats" in message


def test_empty_body_is_422(client):
    assert_error(client.post("/predict", content=b""), 422, "empty")


def test_too_short_is_422(client, tiny_model_dir):
    message = assert_error(
        client.post("/predict", content=float_wav(np.full(399, 0.1, np.float32))), 422, "too_short"
    )
    assert "0.025" in message  # min_samples 400 from model.json, in seconds
    # exactly min_samples is enough
    assert (
        client.post(
            "/predict", content=float_wav(np.random.default_rng(0).uniform(-1, 1, 400))
        ).status_code
        == 200
    )


def test_too_short_follows_the_models_min_samples(make_client, mel_model_dir):
    """The log-mel model needs 720 samples (45 ms): the server reads that from model.json."""
    noise = np.random.default_rng(0).uniform(-1, 1, 720).astype(np.float32)
    with make_client(model_dir=mel_model_dir) as client:
        message = assert_error(
            client.post("/predict", content=float_wav(noise[:719])), 422, "too_short"
        )
        assert "0.045" in message
        assert client.post("/predict", content=float_wav(noise)).status_code == 200


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples_are_422(client, bad):
    samples = np.random.default_rng(0).uniform(-0.5, 0.5, 16000).astype(np.float32)
    samples[100] = bad
    assert_error(client.post("/predict", content=float_wav(samples)), 422, "non_finite")


def test_too_long_is_413_naming_segment(make_client):
    with make_client(max_seconds=2.0) as client:
        message = assert_error(
            client.post("/predict", content=encode_clip("wav", seconds=2.5)), 413, "too_long"
        )
        assert "segment=true" in message
        assert client.post("/predict", content=encode_clip("wav", seconds=1.9)).status_code == 200


def test_declared_body_over_limit_is_413_before_reading(make_client):
    with make_client(max_body_mb=0.05) as client:  # ~52 KB
        data = encode_clip("wav", seconds=2.0)  # 64 KB
        assert_error(client.post("/predict", content=data), 413, "body_too_large")
        assert client.post("/predict", content=encode_clip("wav", seconds=1.0)).status_code == 200


def test_chunked_body_over_limit_is_413_while_streaming(make_client):
    """Drive the ASGI app with a chunked body (TestClient would buffer it all first)."""
    chunk, offered, limit_mb = 16384, 100, 0.1
    pulled = []
    sent = []

    async def receive():
        pulled.append(chunk)
        return {"type": "http.request", "body": b"\0" * chunk, "more_body": len(pulled) < offered}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/predict",
        "raw_path": b"/predict",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"test"), (b"transfer-encoding", b"chunked")],
        "client": ("127.0.0.1", 1),
        "server": ("test", 80),
    }
    with make_client(max_body_mb=limit_mb) as client:
        client.portal.call(client.app, scope, receive, send)
        metrics = client.get("/metrics").text
    assert sent[0]["status"] == 413
    assert json.loads(sent[1]["body"])["error"]["code"] == "body_too_large"
    assert sum(pulled) <= limit_mb * 2**20 + chunk  # stopped reading at the limit
    assert 'route="/predict",status="413"' in metrics


def test_multipart_error_names_the_file(client):
    files = [("file", ("good.wav", encode_clip("wav"))), ("file", ("bad.wav", b"junk" * 50))]
    message = assert_error(client.post("/predict", files=files), 415, "undecodable")
    assert "file 2 (bad.wav)" in message


def test_multipart_without_file_part_is_422(client):
    assert_error(
        client.post("/predict", files=[("other", ("a.wav", encode_clip("wav")))]), 422, "no_audio"
    )
    assert_error(
        client.post("/predict", data={"file": "a string"}, files=[("x", ("x", b"x"))]),
        422,
        "no_audio",
    )


def test_too_many_files_is_400_bad_request(make_client):
    with make_client(max_files=2) as client:
        files = [("file", (f"{i}.wav", encode_clip("wav"))) for i in range(3)]
        assert_error(client.post("/predict", files=files), 400, "bad_request")
        assert client.post("/predict", files=files[:2]).status_code == 200


def test_malformed_multipart_is_400_bad_request(client):
    headers = {"content-type": "multipart/form-data"}  # no boundary
    assert_error(
        client.post("/predict", content=b"--x\r\n\r\n", headers=headers), 400, "bad_request"
    )


@pytest.mark.parametrize("query", ["top_k=0", "top_k=5", "top_k=two", "segment=maybe"])
def test_invalid_options_are_422(client, query):
    assert_error(
        client.post(f"/predict?{query}", content=encode_clip("wav")), 422, "invalid_request"
    )


def test_unknown_route_and_method_are_json(client):
    assert_error(client.get("/nope"), 404, "not_found")
    assert_error(client.get("/predict"), 405, "method_not_allowed")


def test_no_client_input_reads_a_server_path(client, tiny_model_dir):
    path = str(tiny_model_dir / "model.json").encode()
    for data in (path, b"/etc/passwd", b"file:///etc/passwd"):
        response = client.post("/predict", content=data)
        assert response.status_code == 415
        assert "passwd" not in response.text and str(tiny_model_dir) not in response.text
    files = [("file", ("/etc/passwd", encode_clip("wav")))]
    assert client.post("/predict", files=files).status_code == 200  # a file name is only a label


def test_api_keys(make_client):
    data = encode_clip("wav")
    with make_client(api_keys=["s3cret", "other"]) as client:
        assert_error(client.post("/predict", content=data), 401, "unauthorized")
        assert_error(
            client.post("/predict", content=data, headers={"X-API-Key": "wrong"}),
            401,
            "unauthorized",
        )
        assert_error(
            client.post("/predict", content=data, headers={"Authorization": "Basic s3cret"}),
            401,
            "unauthorized",
        )
        assert (
            client.post(
                "/predict", content=data, headers={"Authorization": "Bearer s3cret"}
            ).status_code
            == 200
        )
        assert (
            client.post("/predict", content=data, headers={"X-API-Key": "other"}).status_code == 200
        )
        assert_error(client.get("/v1/model"), 401, "unauthorized")
        # probes stay open for orchestrators
        assert client.get("/health").status_code == 200
        assert client.get("/ready").status_code == 200
