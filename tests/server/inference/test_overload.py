"""Overload: the batcher refuses at once what it could not answer within its backlog limit
(a queue bounded in utterances is not bounded in time: 64 queued 30 s clips are minutes of
work), instead of accepting it and failing it with a 503 timeout later; an accepted request
has one deadline for all its files and segments; new streams are refused while backed up."""

from __future__ import annotations

import asyncio
import contextlib
import io
import time

import numpy as np
import pytest
import soundfile as sf
from starlette.testclient import WebSocketDenialResponse

from server.api.metrics import Metrics
from server.inference.requests import QueueFull, RequestTimeout
from tests.fixtures import encode_clip
from tests.server.inference.test_batcher import SR, FakeRuntime, clip, run, started
from tests.server.speech_clips import three_utterances
from tests.server.stream.test_route import collect, encode, finals, send_then_stop


class SlowRuntime(FakeRuntime):
    """Inference takes ``seconds_per_audio_s`` per second of audio in the batch."""

    def __init__(self, seconds_per_audio_s: float):
        super().__init__()
        self.seconds_per_audio_s = seconds_per_audio_s

    def run(self, audio: np.ndarray, lengths: np.ndarray):
        time.sleep(self.seconds_per_audio_s * float(lengths.sum()) / SR)
        return super().run(audio, lengths)


def test_a_backlog_longer_than_the_timeout_is_refused_at_once_not_timed_out():
    metrics = Metrics()

    async def main():
        # 1 s of audio takes 0.1 s: 30 queued 1 s clips are 3 s of work against a 1 s timeout.
        batcher = await started(
            SlowRuntime(0.1),
            max_batch_size=1,
            max_wait_ms=0,
            timeout_s=1.0,
            max_backlog_s=0.8,
            observer=metrics,
        )
        await batcher.infer(clip(1.0))  # the batcher learns how fast it serves

        async def one(index: int):
            began = time.monotonic()
            try:
                await batcher.infer(clip(1.0, seed=index))
                return "served", time.monotonic() - began
            except QueueFull as exc:
                assert exc.retry_after_s >= 1
                return "refused", time.monotonic() - began
            except RequestTimeout:
                return "timeout", time.monotonic() - began

        outcomes = await asyncio.gather(*(one(i) for i in range(30)))
        await batcher.close()
        return outcomes

    outcomes = run(main())
    kinds = [kind for kind, _ in outcomes]
    assert "timeout" not in kinds, kinds
    assert 5 <= kinds.count("served") <= 12, kinds
    assert max(s for kind, s in outcomes if kind == "refused") < 0.1
    assert max(s for kind, s in outcomes if kind == "served") <= 1.0
    assert metrics.dropped.labels(reason="backlog")._value.get() == kinds.count("refused")


def test_a_stream_final_that_may_wait_is_never_refused_for_the_backlog():
    async def main():
        batcher = await started(SlowRuntime(0.1), max_batch_size=1, max_wait_ms=0, timeout_s=1.0)
        await batcher.infer(clip(1.0))
        finals = [batcher.infer(clip(1.0, seed=i), wait=True) for i in range(20)]
        results = await asyncio.gather(*finals, return_exceptions=True)
        await batcher.close()
        return results

    results = run(main())
    assert not [r for r in results if isinstance(r, QueueFull)]


def test_one_slow_batch_does_not_refuse_everything_after_it():
    """With nothing queued ahead a request is admitted whatever the last speed was: its batch
    measures the speed afresh (a slow outlier must not lock the server into refusing)."""

    async def main():
        runtime = SlowRuntime(0.1)
        batcher = await started(runtime, max_batch_size=1, max_wait_ms=0, timeout_s=1.0)
        runtime.seconds_per_audio_s = 2.0  # one hiccup: 1 s of audio took 2 s
        with contextlib.suppress(RequestTimeout):
            await batcher.infer(clip(1.0))
        await asyncio.sleep(2.1)
        runtime.seconds_per_audio_s = 0.1
        answers = [await batcher.infer(clip(1.0, seed=i)) for i in range(3)]
        await batcher.close()
        return answers

    assert len(run(main())) == 3


def test_a_backed_up_server_refuses_before_reading_and_decoding_the_body(make_client, monkeypatch):
    """With the queue already past the backlog limit a request is refused before its body is
    decoded (and, with segment=true, split): under overload those are the CPU the refusal
    should not spend (refusals took 14-28 s on a starved machine)."""
    from server.api import predict

    decoded = []
    real_load = predict.load_audio
    monkeypatch.setattr(
        predict, "load_audio", lambda *a, **k: decoded.append(1) or real_load(*a, **k)
    )
    with make_client() as client:
        batcher = client.app.state.server.batcher
        monkeypatch.setattr(batcher, "_backlog_s", lambda samples: 100.0)  # minutes queued
        response = client.post("/predict", content=encode_clip("wav", seconds=1.0))
        assert response.status_code == 503 and response.json()["error"]["code"] == "queue_full"
        assert int(response.headers["Retry-After"]) >= 1
        assert decoded == []
        monkeypatch.setattr(batcher, "_backlog_s", lambda samples: 0.0)
        assert client.post("/predict", content=encode_clip("wav", seconds=1.0)).status_code == 200
        assert decoded == [1]


def test_a_deadline_shortens_the_timeout_and_a_past_one_queues_nothing():
    """The request's deadline, shared by its files and segments, ends each wait before the
    per-utterance timeout would; a deadline already past fails at once, inferring nothing."""
    runtime = SlowRuntime(0.5)

    async def main():
        batcher = await started(runtime, max_batch_size=1, max_wait_ms=0, timeout_s=10.0)
        began = time.monotonic()
        with pytest.raises(RequestTimeout):
            await batcher.infer(clip(1.0), deadline=began + 0.2)  # 1 s of audio takes 0.5 s
        waited = time.monotonic() - began
        await asyncio.sleep(0.5)  # its batch (already running) ends
        assert len(runtime.batches) == 1
        with pytest.raises(RequestTimeout):
            await batcher.infer(clip(1.0), deadline=time.monotonic() - 1)
        await asyncio.sleep(0.6)
        assert len(runtime.batches) == 1  # the late one never ran
        answer = await batcher.infer(clip(0.2), deadline=time.monotonic() + 5)
        await batcher.close()
        return waited, answer

    waited, answer = run(main())
    assert 0.15 <= waited < 0.45
    assert answer.batch_size == 1


def test_max_backlog_is_a_setting_and_cannot_exceed_the_request_timeout(make_settings):
    assert make_settings(request_timeout_s=4).max_backlog_s == 4  # the default follows it
    with pytest.raises(ValueError, match="MAX_BACKLOG_S=20 is over"):
        make_settings(request_timeout_s=4, max_backlog_s=20)


def test_a_requests_files_and_segments_share_one_deadline(make_client, monkeypatch):
    """Every utterance of one request waits against the same deadline: the moment its body
    was read plus request_timeout_s (plus the file's own inference time with segment=true),
    not a fresh timeout each, which let a many-segment file run far past the timeout."""
    clip3 = three_utterances()
    wav = encode_clip("wav", seconds=1.0)
    with make_client(request_timeout_s=7) as client:
        batcher = client.app.state.server.batcher
        real_infer = batcher.infer
        seen: list[tuple[float, float, bool]] = []

        async def spy(audio, **options):
            seen.append((time.monotonic(), options.get("deadline"), options.get("wait")))
            return await real_infer(audio, **options)

        monkeypatch.setattr(batcher, "infer", spy)
        files = [("file", (f"{i}.wav", wav, "audio/wav")) for i in range(3)]
        before = time.monotonic()
        assert client.post("/predict", files=files).status_code == 200
        assert len(seen) == 3 and len({deadline for _, deadline, _ in seen}) == 1
        assert before + 7 <= seen[0][1] <= time.monotonic() + 7
        assert not any(wait for _, _, wait in seen)

        seen.clear()
        body = io.BytesIO()
        sf.write(body, clip3.samples, 16000, format="WAV")
        before = time.monotonic()
        response = client.post("/predict?segment=true", content=body.getvalue())
        assert response.status_code == 200
        assert len(response.json()["results"][0]["segments"]) == len(seen) == 3
        deadlines = {deadline for _, deadline, _ in seen}
        assert len(deadlines) == 1
        own_work = batcher.work_s(sum(e - s for s, e in clip3.truth))
        # read time + timeout + the file's own work (a rough figure: spans carry padding)
        assert before + 7 <= deadlines.pop() <= time.monotonic() + 7 + 2 * own_work + 0.5
        assert all(wait for _, _, wait in seen)  # admitted: its segments wait for room


def test_a_backed_up_server_refuses_a_long_file_before_its_segments_queue(make_client, monkeypatch):
    with make_client() as client:
        batcher = client.app.state.server.batcher
        checks = iter([0.0, 100.0])  # room when the body arrives, backed up after the VAD
        monkeypatch.setattr(batcher, "_backlog_s", lambda samples: next(checks))
        queued = []
        monkeypatch.setattr(batcher, "infer", lambda *a, **k: queued.append(1))
        response = client.post("/predict?segment=true", content=encode_clip("wav", seconds=3))
        assert response.status_code == 503 and response.json()["error"]["code"] == "queue_full"
        assert queued == []


def test_new_streams_are_refused_while_the_server_is_backed_up(make_client, monkeypatch):
    """Past max_backlog_s of queued work a new stream is refused at the handshake (503
    overloaded + Retry-After) instead of being accepted to have its finals refused later."""
    url = "/v1/stream?sample_rate=16000"
    with make_client(max_backlog_s=5) as client:
        batcher = client.app.state.server.batcher
        monkeypatch.setattr(batcher, "_backlog_s", lambda samples: 12.0)
        with pytest.raises(WebSocketDenialResponse) as refused:
            with client.websocket_connect(url):
                pass
        assert refused.value.status_code == 503
        body = refused.value.json()["error"]
        assert body["code"] == "overloaded" and "more than 5 s of work queued" in body["message"]
        assert refused.value.headers["Retry-After"] == "7"
        monkeypatch.setattr(batcher, "_backlog_s", lambda samples: 0.0)
        with client.websocket_connect(url) as ws:
            assert ws.receive_json()["type"] == "ready"
            ws.send_text('{"type": "stop"}')
            assert collect(ws)[1] == 1000


def test_capacity_is_seeded_then_learnt_from_batches_at_least_half_full():
    """Small batches measure per-call overhead, not what the model serves: they leave the
    capacity alone (else an idle server would look slow and refuse streams). Both figures are
    moving averages that give the newest batch a weight of 0.3."""

    async def main():
        batcher = await started(SlowRuntime(0.1), max_batch_size=4, max_wait_ms=50)
        assert batcher.capacity is None and batcher.work_s(SR) is None
        batcher.seed_capacity(16000, 0.5)  # the warm-up: 1 s of audio in 0.5 s
        assert batcher.capacity == 32000
        small = await batcher.infer(clip(1.0))  # a batch of 1 out of 4: not counted
        after_small = batcher.capacity, batcher.work_s(SR)
        full = await asyncio.gather(*(batcher.infer(clip(1.0, seed=i)) for i in range(4)))
        after_full = batcher.capacity, batcher.work_s(SR)
        await batcher.close()
        return small, full, after_small, after_full

    small, full, after_small, after_full = run(main())
    assert [answer.batch_size for answer in full] == [4, 4, 4, 4]
    small_speed = SR / small.inference_s  # samples per second of inference
    full_speed = 4 * SR / full[0].inference_s
    # The first batch is the speed as measured; the capacity keeps its seed.
    assert after_small == (32000, pytest.approx(SR / small_speed, rel=1e-9))
    # A full batch moves both averages 0.3 of the way towards its speed.
    capacity, work_s = after_full
    assert capacity == pytest.approx(0.7 * 32000 + 0.3 * full_speed, rel=1e-9)
    assert work_s == pytest.approx(SR / (0.7 * small_speed + 0.3 * full_speed), rel=1e-9)


def test_streams_past_the_measured_capacity_are_refused_at_the_handshake(make_client):
    """Each real-time stream is assumed to need inference on all its audio until streams
    have sent 30 s; then on the share they were measured to need. Past stream_capacity_share
    of the batcher's capacity, a new stream is 503 overloaded (Retry-After); 0 disables."""
    url = "/v1/stream?sample_rate=16000"
    with make_client(stream_capacity_share=0.8) as client:
        state = client.app.state.server
        state.batcher.speed.capacity = 2.5 * 16000 / 0.8  # 2.5 streams of continuous speech
        with client.websocket_connect(url) as one, client.websocket_connect(url) as two:
            assert one.receive_json()["type"] == two.receive_json()["type"] == "ready"
            with pytest.raises(WebSocketDenialResponse) as refused:
                with client.websocket_connect(url):
                    pass
            assert refused.value.status_code == 503
            assert refused.value.headers["Retry-After"] == "10"
            error = refused.value.json()["error"]
            assert (
                error["code"] == "overloaded" and "about 2.5 real-time streams" in error["message"]
            )
            # measured: streams send a quarter of their audio to inference -> 10 streams fit
            state.streams.metrics.heard_s, state.streams.metrics.inferred_s = 100.0, 25.0
            with client.websocket_connect(url) as three:
                assert three.receive_json()["type"] == "ready"
                three.send_text('{"type": "stop"}')
                assert collect(three)[1] == 1000
            for ws in (one, two):
                ws.send_text('{"type": "stop"}')
                assert collect(ws)[1] == 1000
    with make_client(stream_capacity_share=0) as client:
        client.app.state.server.batcher.speed.capacity = (
            1.0  # hopelessly slow, but the limit is off
        )
        with client.websocket_connect(url) as ws:
            assert ws.receive_json()["type"] == "ready"
            ws.send_text('{"type": "stop"}')
            assert collect(ws)[1] == 1000


def test_streams_measure_the_audio_they_send_and_what_it_costs(make_client):
    speech = three_utterances()
    with make_client(stream_speculate=False) as client:
        with client.websocket_connect("/v1/stream?sample_rate=16000") as ws:
            events, code = send_then_stop(ws, encode(speech.samples, "pcm_s16le"))
        metrics = client.app.state.server.streams.metrics
    assert code == 1000 and len(finals(events)) == 3
    assert abs(metrics.heard_s - len(speech.samples) / 16000) < 0.05
    spoken = sum(f["end"] - f["start"] for f in finals(events))
    assert spoken <= metrics.inferred_s < metrics.heard_s
