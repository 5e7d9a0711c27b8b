"""/v1/stream over Starlette's TestClient: endpointing accuracy, rates, encodings, every error path."""

from __future__ import annotations

import asyncio
import io
import json
import time

import numpy as np
import pytest
import soundfile as sf
import soxr
from starlette.testclient import WebSocketDenialResponse
from starlette.websockets import WebSocketDisconnect

from emocore.audio import SAMPLE_RATE
from server.inference.requests import BatcherClosed, InferenceFailed, QueueFull
from tests.server.speech_clips import three_utterances

TOLERANCE_S = 0.150


def encode(samples: np.ndarray, encoding: str) -> bytes:
    if encoding == "pcm_s16le":
        return (np.clip(samples, -1, 1) * 32767).round().astype("<i2").tobytes()
    return samples.astype("<f4").tobytes()


def random_frames(data: bytes, sample_bytes: int, rate: int, seed: int):
    """Frames from one sample (2 bytes at pcm_s16le) up to one second, in random sizes."""
    rng = np.random.default_rng(seed)
    position = 0
    while position < len(data):
        # Mostly small frames, some up to a second (log-uniform sizes).
        count = int(np.exp(rng.uniform(0, np.log(rate))))
        yield data[position : position + count * sample_bytes]
        position += count * sample_bytes


def collect(ws) -> tuple[list[dict], int]:
    """Every event until the server closes; returns (events, close code)."""
    events = []
    while True:
        try:
            events.append(ws.receive_json())
        except WebSocketDisconnect as closed:
            return events, closed.code


def stream_file(client, samples: np.ndarray, *, rate: int, encoding: str, seed: int = 0, query=""):
    data = encode(samples, encoding)
    sample_bytes = 2 if encoding == "pcm_s16le" else 4
    url = f"/v1/stream?sample_rate={rate}&encoding={encoding}{query}"
    with client.websocket_connect(url) as ws:
        ready = ws.receive_json()
        for frame in random_frames(data, sample_bytes, rate, seed):
            ws.send_bytes(frame)
        ws.send_text(json.dumps({"type": "stop"}))
        events, code = collect(ws)
    return ready, events, code


def finals(events: list[dict]) -> list[dict]:
    return [e for e in events if e["type"] == "final"]


def assert_near_truth(found: list[dict], truth: list[tuple[int, int]]) -> None:
    assert len(found) == len(truth), [(f["start"], f["end"]) for f in found]
    for final, (start, end) in zip(found, truth, strict=True):
        assert abs(final["start"] - start / SAMPLE_RATE) <= TOLERANCE_S
        assert abs(final["end"] - end / SAMPLE_RATE) <= TOLERANCE_S


def predict_span(client, samples: np.ndarray, rate: int, start_s: float, end_s: float) -> dict:
    span = samples[int(round(start_s * rate)) : int(round(end_s * rate))]
    wav = io.BytesIO()
    sf.write(wav, span, rate, subtype="PCM_16", format="WAV")
    response = client.post("/predict", content=wav.getvalue())
    assert response.status_code == 200, response.text
    return response.json()["results"][0]


@pytest.mark.parametrize("seed", [0, 1])
def test_three_utterances_in_random_chunks_match_truth_and_predict(client, seed):
    clip = three_utterances()
    ready, events, code = stream_file(
        client, clip.samples, rate=SAMPLE_RATE, encoding="pcm_s16le", seed=seed
    )
    assert ready["type"] == "ready" and ready["sample_rate"] == SAMPLE_RATE
    assert code == 1000
    found = finals(events)
    assert_near_truth(found, clip.truth)
    assert [f["utterance"] for f in found] == [0, 1, 2]
    # The same spans through POST /predict give the same answer: 16-bit samples are exact.
    pcm = np.frombuffer(encode(clip.samples, "pcm_s16le"), "<i2").astype(np.float32) / 32768
    for final in found:
        expected = predict_span(client, pcm, SAMPLE_RATE, final["start"], final["end"])
        assert final["label"] == expected["label"]
        for label, p in expected["probabilities"].items():
            assert final["probabilities"][label] == pytest.approx(p, abs=1e-4)


@pytest.mark.parametrize(
    ("rate", "encoding"), [(8000, "pcm_s16le"), (48000, "f32le"), (8000, "f32le")]
)
def test_other_rates_and_encodings(client, rate, encoding):
    clip = three_utterances()
    samples = soxr.resample(clip.samples, SAMPLE_RATE, rate).astype(np.float32)
    _, events, code = stream_file(client, samples, rate=rate, encoding=encoding, seed=rate)
    assert code == 1000
    found = finals(events)
    assert_near_truth(found, clip.truth)
    for final in found:
        expected = predict_span(client, samples, rate, final["start"], final["end"])
        for label, p in expected["probabilities"].items():
            assert final["probabilities"][label] == pytest.approx(p, abs=2e-3)


def test_start_message_config_and_event_order(client):
    clip = three_utterances()
    with client.websocket_connect("/v1/stream") as ws:
        ws.send_text(json.dumps({"type": "start", "encoding": "f32le", "interim": True}))
        ready = ws.receive_json()
        assert ready["encoding"] == "f32le" and ready["interim"] is True
        assert ready["labels"] == ["neutral", "happy", "angry", "sad"]
        data = encode(clip.samples, "f32le")
        step = SAMPLE_RATE // 10 * 4  # 100 ms frames at a little over real time
        for position in range(0, len(data), step):
            ws.send_bytes(data[position : position + step])
            time.sleep(0.03)
        ws.send_text(json.dumps({"type": "stop"}))
        events, code = collect(ws)
    assert code == 1000
    assert [e["type"] for e in events].count("partial") >= 2
    for utterance in range(3):
        kinds = [e["type"] for e in events if e["utterance"] == utterance]
        assert kinds[0] == "speech_start" and kinds[-1] == "final"
        assert set(kinds[1:-1]) <= {"partial"}
    for e in events:
        if e["type"] == "partial":
            assert set(e["probabilities"]) == set(ready["labels"])
            assert e["end"] > e["start"]


def test_flush_forces_a_final_and_keepalive_is_silent(client):
    clip = three_utterances()
    cut = clip.truth[0][0] + SAMPLE_RATE  # a second into the first utterance
    with client.websocket_connect("/v1/stream?sample_rate=16000") as ws:
        ws.receive_json()
        ws.send_bytes(encode(clip.samples[:cut], "pcm_s16le"))
        ws.send_text(json.dumps({"type": "keepalive"}))
        ws.send_text(json.dumps({"type": "flush"}))
        started = ws.receive_json()
        final = ws.receive_json()
        assert started["type"] == "speech_start"
        assert final["type"] == "final" and final["utterance"] == 0
        assert final["end"] == pytest.approx(cut / SAMPLE_RATE, abs=0.033)
        ws.send_text(json.dumps({"type": "stop"}))
        assert collect(ws) == ([], 1000)


def expect_error(ws, code: str, close_code: int) -> dict:
    events, closed = collect(ws)
    assert closed == close_code
    assert events[-1]["type"] == "error" and events[-1]["code"] == code, events
    assert events[-1]["message"]
    return events[-1]


@pytest.mark.parametrize(
    ("url", "messages", "code", "close_code"),
    [
        ("/v1/stream", [b"\x00\x00"], "binary_before_config", 1008),
        ("/v1/stream", ["{not json"], "malformed_json", 1008),
        ("/v1/stream", ['["start"]'], "malformed_message", 1008),
        ("/v1/stream", ['{"type": "rewind"}'], "unknown_message_type", 1008),
        ("/v1/stream", ["[" * 3000], "malformed_json", 1008),  # was RecursionError -> 1011
        (
            "/v1/stream",
            ['{"type": "keepalive", "x": "' + "a" * 5000 + '"}'],
            "message_too_large",
            1009,
        ),
        ("/v1/stream", ['{"type": "start", "encoding": "mulaw"}'], "unsupported_encoding", 1003),
        ("/v1/stream", ['{"type": "start", "sample_rate": 100}'], "invalid_config", 1008),
        ("/v1/stream", ['{"type": "start", "colour": "red"}'], "invalid_config", 1008),
        ("/v1/stream?encoding=opus", [], "unsupported_encoding", 1003),
        ("/v1/stream?max_utterance_s=600", [], "invalid_config", 1008),
        ("/v1/stream?sample_rate=16000", [b"\x00\x00\x00"], "odd_byte_count", 1003),
        ("/v1/stream?encoding=f32le", [b"\x00" * 6], "odd_byte_count", 1003),
        ("/v1/stream?encoding=f32le", [np.array([np.nan], "<f4").tobytes()], "non_finite", 1003),
        ("/v1/stream?sample_rate=16000", ['{"type": "start"}'], "already_started", 1008),
        ("/v1/stream?sample_rate=16000", [b"\x00" * (64 * 1024 + 2)], "frame_too_large", 1009),
    ],
)
def test_protocol_errors_send_an_error_then_close(make_client, url, messages, code, close_code):
    with (
        make_client(stream_max_frame_bytes=64 * 1024) as client,
        client.websocket_connect(url) as ws,
    ):
        for message in messages:
            if isinstance(message, bytes):
                ws.send_bytes(message)
            else:
                ws.send_text(message)
        expect_error(ws, code, close_code)


def test_idle_and_session_limits(make_client):
    with make_client(stream_idle_timeout_s=0.3) as client:
        with client.websocket_connect("/v1/stream?sample_rate=16000") as ws:
            ws.receive_json()
            expect_error(ws, "idle_timeout", 1008)
    # Keepalives do not hold off the idle timeout: only audio does.
    with make_client(stream_idle_timeout_s=0.5) as client:
        with client.websocket_connect("/v1/stream?sample_rate=16000") as ws:
            ws.receive_json()
            for _ in range(10):
                ws.send_text('{"type": "keepalive"}')
                time.sleep(0.1)
            error = expect_error(ws, "idle_timeout", 1008)
            assert "keepalive" in error["message"]
    # Idle limit well above the audio spacing: a loaded machine's sleeps run long.
    with make_client(stream_idle_timeout_s=0.8, stream_max_session_s=1.2) as client:
        with client.websocket_connect("/v1/stream?sample_rate=16000") as ws:
            ws.receive_json()
            for _ in range(8):  # audio holds off the idle timeout, not the session limit
                ws.send_bytes(b"\x00\x00" * 160)
                time.sleep(0.2)
            expect_error(ws, "session_too_long", 1008)


def test_too_many_streams_are_refused_at_the_handshake(make_client):
    with make_client(stream_max_streams=1) as client:
        with client.websocket_connect("/v1/stream?sample_rate=16000") as first:
            first.receive_json()
            with pytest.raises(WebSocketDenialResponse) as refused:
                with client.websocket_connect("/v1/stream?sample_rate=16000"):
                    pass
            assert refused.value.status_code == 503
            assert refused.value.json()["error"]["code"] == "too_many_streams"
            # End the first stream the way a client does and wait for its close, so that the
            # test client does not cancel the session while it is still cleaning up.
            first.send_text('{"type": "stop"}')
            assert collect(first)[1] == 1000
        # The slot is free again once the first stream ends.
        with client.websocket_connect("/v1/stream?sample_rate=16000") as again:
            assert again.receive_json()["type"] == "ready"


def test_streams_are_limited_per_client_address_and_per_key(make_client):
    url = "/v1/stream?sample_rate=16000"
    with make_client(stream_max_streams_per_client=1) as client:
        with client.websocket_connect(url) as first:
            first.receive_json()
            with pytest.raises(WebSocketDenialResponse) as refused:
                with client.websocket_connect(url):
                    pass
            assert refused.value.status_code == 503
            assert "client address" in refused.value.json()["error"]["message"]
            first.send_text('{"type": "stop"}')
            assert collect(first)[1] == 1000
    keys = {"a": {"X-API-Key": "a"}, "b": {"X-API-Key": "b"}}
    with make_client(api_keys=list(keys), stream_max_streams_per_key=1) as client:
        with client.websocket_connect(url, headers=keys["a"]) as first:
            first.receive_json()
            with pytest.raises(WebSocketDenialResponse) as refused:
                with client.websocket_connect(url, headers=keys["a"]):
                    pass
            assert "per API key" in refused.value.json()["error"]["message"]
            with client.websocket_connect(url, headers=keys["b"]) as other:
                assert other.receive_json()["type"] == "ready"
                other.send_text('{"type": "stop"}')
                assert collect(other)[1] == 1000
            first.send_text('{"type": "stop"}')
            assert collect(first)[1] == 1000


def test_api_key_is_required_when_configured(make_client):
    with make_client(api_keys=["s3cret"]) as client:
        with pytest.raises(WebSocketDenialResponse) as refused:
            with client.websocket_connect("/v1/stream?sample_rate=16000"):
                pass
        assert refused.value.status_code == 401
        with client.websocket_connect("/v1/stream?sample_rate=16000&api_key=s3cret") as ws:
            assert ws.receive_json()["type"] == "ready"


class SlowModel:
    """Stands in for batcher.infer: the real answer after a delay; counts calls and the
    most inferences in flight at once."""

    def __init__(self, batcher, delay_s: float):
        self.original = batcher.infer
        self.delay_s = delay_s
        self.calls = self.in_flight = self.peak = 0

    async def __call__(self, audio, **options):
        self.calls += 1
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(self.delay_s)
            return await self.original(audio, **options)
        finally:
            self.in_flight -= 1


def send_then_stop(ws, data: bytes, frame_bytes: int = 3200) -> tuple[list[dict], int]:
    ws.receive_json()
    for position in range(0, len(data), frame_bytes):
        ws.send_bytes(data[position : position + frame_bytes])
    ws.send_text('{"type": "stop"}')
    return collect(ws)


def test_finals_wait_in_a_bounded_queue_when_inference_is_slow(make_client, monkeypatch):
    """A client far faster than real time fills at most stream_max_pending utterances."""
    clip = three_utterances()
    data = encode(np.concatenate([clip.samples] * 3), "pcm_s16le")
    with make_client(stream_max_pending=1, stream_speculate=False) as client:
        model = SlowModel(client.app.state.server.batcher, 0.3)
        monkeypatch.setattr(client.app.state.server.batcher, "infer", model)
        with client.websocket_connect("/v1/stream?sample_rate=16000") as ws:
            events, code = send_then_stop(ws, data)
    assert code == 1000
    assert [f["utterance"] for f in finals(events)] == list(range(9))
    assert model.peak <= 2  # the pending one plus the one that made the reader wait


@pytest.mark.parametrize(
    ("raised", "code", "close_code"),
    [
        (QueueFull(1), "overloaded", 1013),
        (BatcherClosed("closing"), "shutting_down", 1001),
        (InferenceFailed("boom"), "inference_failed", 1011),
        (RuntimeError("a bug"), "internal", 1011),
    ],
)
def test_inference_failures_end_the_stream_with_the_fitting_code(
    make_client, monkeypatch, raised, code, close_code
):
    clip = three_utterances()
    with make_client(request_timeout_s=0.3) as client:

        async def failing(audio, **options):
            raise raised

        monkeypatch.setattr(client.app.state.server.batcher, "infer", failing)
        with client.websocket_connect("/v1/stream?sample_rate=16000") as ws:
            ws.receive_json()
            ws.send_bytes(encode(clip.samples, "pcm_s16le"))
            ws.send_text('{"type": "stop"}')
            error = expect_error(ws, code, close_code)
            assert error["utterance"] == 0


@pytest.mark.parametrize("speculate", [True, False])
def test_speculative_inference_gives_the_same_finals(make_client, monkeypatch, speculate):
    """With a slow model, finals start in the pause that ends them; answers are unchanged."""
    clip = three_utterances()
    with make_client(stream_speculate=speculate) as client:
        model = SlowModel(client.app.state.server.batcher, 0.1)
        monkeypatch.setattr(client.app.state.server.batcher, "infer", model)
        with client.websocket_connect("/v1/stream?sample_rate=16000") as ws:
            events, code = send_then_stop(ws, encode(clip.samples, "pcm_s16le"))
        found = finals(events)
        assert code == 1000 and len(found) == 3
        speculative = [f["timing"]["speculative"] for f in found]
        assert speculative[1:] == [speculate, speculate]  # once the model time is known
        assert model.calls <= 3 + 3 * speculate  # a wrong guess costs one inference at most
        for final in found:
            expected = predict_span(client, clip.samples, SAMPLE_RATE, final["start"], final["end"])
            for label, p in expected["probabilities"].items():
                assert final["probabilities"][label] == pytest.approx(p, abs=1e-4)


def metric_value(text: str, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    raise KeyError(f"{name} {labels} not in /metrics")


def test_metrics_count_streams_finals_and_refusals(make_client):
    clip = three_utterances()
    with make_client(stream_max_streams=1) as client:
        with client.websocket_connect("/v1/stream?sample_rate=16000") as ws:
            with pytest.raises(WebSocketDenialResponse):
                with client.websocket_connect("/v1/stream"):
                    pass
            assert metric_value(client.get("/metrics").text, "emodistill_streams_open") == 1
            events, code = send_then_stop(ws, encode(clip.samples, "pcm_s16le"))
        assert code == 1000
        text = client.get("/metrics").text
    assert metric_value(text, "emodistill_streams_open") == 0
    assert metric_value(text, "emodistill_streams_refused_total", reason="too_many_streams") == 1
    assert metric_value(text, "emodistill_streams_closed_total", reason="stop") == 1
    sent = sum(
        metric_value(text, "emodistill_stream_finals_total", speculative=flag)
        for flag in ("true", "false")
        if f'speculative="{flag}"' in text
    )
    assert sent == len(finals(events)) == 3
    assert metric_value(text, "emodistill_stream_final_delay_seconds_count") == 3
