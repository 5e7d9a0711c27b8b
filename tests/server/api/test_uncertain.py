"""min_confidence: answers below it say uncertain: true and keep their label and probabilities,
over HTTP (server default and per request), the stream (per session) and the CLI."""

from __future__ import annotations

import io
import json

import pytest
import soundfile as sf

from server.score import main
from tests.fixtures import encode_clip, write_clip
from tests.server.speech_clips import three_utterances
from tests.server.stream.test_route import collect, stream_file

# The tiny random model answers with confidences near 1/4: above 0.01, below 0.99.
LOW, HIGH = 0.01, 0.99


def predict(client, data: bytes, **params) -> dict:
    response = client.post("/predict", content=data, params=params)
    assert response.status_code == 200, response.text
    return response.json()["results"][0]


def test_per_request_threshold_marks_and_keeps_the_answer(client):
    data = encode_clip(seconds=1.0, kind="noise")
    plain = predict(client, data)
    assert plain["uncertain"] is False  # default 0: never uncertain
    doubtful = predict(client, data, min_confidence=HIGH)
    assert doubtful["uncertain"] is True
    for key in ("label", "confidence", "probabilities"):
        assert doubtful[key] == plain[key]
    assert predict(client, data, min_confidence=LOW)["uncertain"] is False


def test_server_default_applies_and_a_request_can_lower_it(make_client):
    data = encode_clip(seconds=1.0, kind="noise")
    with make_client(min_confidence=HIGH) as client:
        assert predict(client, data)["uncertain"] is True
        assert predict(client, data, min_confidence=0)["uncertain"] is False


def test_segments_and_summary_carry_it(client):
    buffer = io.BytesIO()
    sf.write(buffer, three_utterances().samples, 16_000, format="WAV")
    result = predict(client, buffer.getvalue(), segment="true", min_confidence=HIGH)
    assert result["uncertain"] is True and len(result["segments"]) == 3
    assert all(s["uncertain"] is True for s in result["segments"])


@pytest.mark.parametrize("value", ["-0.1", "1.5", "high"])
def test_out_of_range_threshold_is_a_422(client, value):
    data = encode_clip(seconds=1.0, kind="noise")
    response = client.post("/predict", content=data, params={"min_confidence": value})
    assert response.status_code == 422
    assert "min_confidence" in response.text


def test_stream_finals_carry_confidence_and_uncertain(client):
    clip = three_utterances()
    ready, events, code = stream_file(
        client, clip.samples, rate=16_000, encoding="pcm_s16le", query=f"&min_confidence={HIGH}"
    )
    assert ready["min_confidence"] == HIGH
    assert code == 1000
    finals = [e for e in events if e["type"] == "final"]
    assert len(finals) == 3
    for final in finals:
        assert final["uncertain"] is True
        assert final["confidence"] == pytest.approx(max(final["probabilities"].values()), abs=1e-5)
    with client.websocket_connect("/v1/stream?sample_rate=16000&min_confidence=2") as ws:
        error = collect(ws)[0][-1]
    assert error["type"] == "error" and error["code"] == "invalid_config"


def test_cli_min_confidence(tiny_model_dir, tmp_path):
    write_clip(tmp_path / "a.wav", seconds=1.0, kind="noise")
    out = tmp_path / "rows.jsonl"
    args = ["predict", str(tmp_path / "a.wav"), "--model-dir", str(tiny_model_dir)]
    assert main([*args, "--out", str(out), "--no-progress", "--min-confidence", str(HIGH)]) == 0
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert row["uncertain"] is True and row["label"] in row["probabilities"]
    csv_out = tmp_path / "rows.csv"
    assert main([*args, "--out", str(csv_out), "--no-progress"]) == 0
    header, line = csv_out.read_text().splitlines()[:2]
    assert "uncertain" in header.split(",")
    assert line.split(",")[header.split(",").index("uncertain")] == "False"
