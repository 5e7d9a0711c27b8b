"""segment=true: a long file split into utterances by the VAD, answered per segment + summary."""

from __future__ import annotations

import numpy as np
import pytest

from emocore.audio import SAMPLE_RATE
from tests.fixtures import encode_clip
from tests.server.conftest import softmax
from tests.server.speech_clips import three_utterances

LABELS = ["neutral", "happy", "angry", "sad"]
BOUNDARY_TOLERANCE_S = 0.3


def post_segmented(client, samples: np.ndarray, query: str = ""):
    data = encode_clip("wav", "FLOAT", data=samples)
    return client.post(f"/predict?segment=true{query}", content=data)


def test_three_utterances_give_three_segments(client, reference):
    clip = three_utterances()
    response = post_segmented(client, clip.samples, "&top_k=1")
    assert response.status_code == 200, response.text
    result = response.json()["results"][0]
    segments = result["segments"]
    assert len(segments) == 3
    for segment, (start, end) in zip(segments, clip.truth, strict=True):
        assert abs(segment["start_s"] - start / SAMPLE_RATE) < BOUNDARY_TOLERANCE_S
        assert abs(segment["end_s"] - end / SAMPLE_RATE) < BOUNDARY_TOLERANCE_S
        span = clip.samples[
            round(segment["start_s"] * SAMPLE_RATE) : round(segment["end_s"] * SAMPLE_RATE)
        ]
        expected = softmax(reference(span)[0])
        got = [segment["probabilities"][label] for label in LABELS]
        np.testing.assert_allclose(got, expected, atol=1e-5)
        assert segment["top_k"][0]["label"] == segment["label"]
    # the summary is the duration-weighted mean of the segments
    weights = np.array([s["end_s"] - s["start_s"] for s in segments])
    per_segment = np.array([[s["probabilities"][label] for label in LABELS] for s in segments])
    summary = (per_segment * weights[:, None]).sum(0) / weights.sum()
    np.testing.assert_allclose(
        [result["probabilities"][label] for label in LABELS], summary, atol=1e-5
    )
    assert result["label"] == LABELS[int(summary.argmax())]
    assert result["duration_s"] == pytest.approx(len(clip.samples) / SAMPLE_RATE, abs=1e-4)
    assert result["timings"]["vad_ms"] > 0


def test_long_utterances_are_cut_to_max_seconds(make_client):
    clip = three_utterances()
    with make_client(max_seconds=1.0) as client:
        whole = client.post("/predict", content=encode_clip("wav", "FLOAT", data=clip.samples))
        assert whole.status_code == 413  # without segment=true the file is over the limit
        segments = post_segmented(client, clip.samples).json()["results"][0]["segments"]
    assert len(segments) > 3
    assert all(s["end_s"] - s["start_s"] <= 1.0 + 1e-4 for s in segments)


def test_silence_has_no_segments(client):
    result = post_segmented(client, np.zeros(3 * SAMPLE_RATE, np.float32)).json()["results"][0]
    assert result["segments"] == [] and result["label"] is None and result["probabilities"] is None


def test_segmented_input_has_its_own_limit(make_client):
    with make_client(max_segmented_seconds=2.0) as client:
        response = post_segmented(client, np.zeros(3 * SAMPLE_RATE, np.float32))
    assert response.status_code == 413 and response.json()["error"]["code"] == "too_long"
