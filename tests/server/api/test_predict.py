"""POST /predict: formats, rates, channels, real speech, options; answers equal direct ORT."""

from __future__ import annotations

import numpy as np
import pytest

from emocore.audio import load_audio
from tests.fixtures import OPUS_RATES, WAV_SUBTYPES, encode_clip, real_speech_files
from tests.server.conftest import softmax

LABELS = ["neutral", "happy", "angry", "sad"]


def assert_matches_reference(result: dict, samples: np.ndarray, reference) -> None:
    logits, _ = reference(samples)
    expected = softmax(logits)
    got = np.array([result["probabilities"][label] for label in LABELS])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert result["label"] == LABELS[int(np.argmax(expected))]
    assert result["confidence"] == pytest.approx(float(expected.max()), abs=1e-5)
    assert result["duration_s"] == pytest.approx(len(samples) / 16000, abs=1e-3)


@pytest.mark.parametrize(
    ("fmt", "subtype", "sr", "channels"),
    [("wav", subtype, 16000, 1) for subtype in WAV_SUBTYPES]
    + [
        ("wav", "PCM_16", 8000, 1),
        ("wav", "PCM_16", 44100, 2),
        ("wav", "FLOAT", 48000, 6),
        ("flac", None, 22050, 2),
        ("ogg", None, 32000, 1),
        ("opus", None, OPUS_RATES[-1], 2),
        ("mp3", None, 44100, 2),
    ],
)
def test_formats_rates_and_channels_equal_direct_onnx(
    client, reference, fmt, subtype, sr, channels
):
    data = encode_clip(fmt, subtype, sr=sr, channels=channels, seconds=1.2, kind="noise")
    response = client.post("/predict", content=data)
    assert response.status_code == 200, response.text
    (result,) = response.json()["results"]
    assert_matches_reference(result, load_audio(data), reference)
    assert result["timings"]["inference_ms"] > 0
    assert result["batch_size"] >= 1


@pytest.mark.parametrize("package", ["alsa-utils", "asterisk-core-sounds-en-wav"])
def test_real_human_speech(client, reference, package):
    files = real_speech_files(package, limit=3)
    response = client.post("/predict", files=[("file", (f.name, f.read_bytes())) for f in files])
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["filename"] for r in results] == [f.name for f in files]  # answered in order
    for result, path in zip(results, files, strict=True):
        assert_matches_reference(result, load_audio(path), reference)


def test_stereo_is_the_channel_mean(client):
    rng = np.random.default_rng(1)
    left, right = rng.uniform(-0.5, 0.5, (2, 16000)).astype(np.float32)
    stereo = client.post(
        "/predict", content=encode_clip("wav", "FLOAT", data=np.stack([left, right], 1))
    )
    mono = client.post("/predict", content=encode_clip("wav", "FLOAT", data=(left + right) / 2))
    assert stereo.json()["results"][0]["probabilities"] == pytest.approx(
        mono.json()["results"][0]["probabilities"], abs=1e-6
    )


def test_top_k_and_embedding(client, reference):
    data = encode_clip("wav", seconds=1.0, kind="noise")
    result = client.post("/predict?top_k=2&return_embedding=true", content=data).json()["results"][
        0
    ]
    probabilities = result["probabilities"]
    ranked = sorted(probabilities, key=probabilities.get, reverse=True)
    assert [item["label"] for item in result["top_k"]] == ranked[:2]
    _, embedding = reference(load_audio(data))
    np.testing.assert_allclose(result["embedding"], embedding, atol=1e-5)
    plain = client.post("/predict", content=data).json()["results"][0]
    assert plain["top_k"] is None and plain["embedding"] is None


def test_multipart_files_are_answered_in_order(client, reference):
    clips = [
        encode_clip("wav", seconds=s, kind="noise", seed=i) for i, s in enumerate((0.5, 2.0, 1.0))
    ]
    files = [("file", (f"clip{i}.wav", clip, "audio/wav")) for i, clip in enumerate(clips)]
    results = client.post("/predict", files=files).json()["results"]
    assert [r["filename"] for r in results] == ["clip0.wav", "clip1.wav", "clip2.wav"]
    for result, clip in zip(results, clips, strict=True):
        assert_matches_reference(result, load_audio(clip), reference)


@pytest.mark.parametrize(
    ("fmt", "seconds", "inline"),
    [("wav", 3.0, True), ("wav", 10.0, False), ("flac", 3.0, False), ("mp3", 3.0, False)],
)
def test_a_small_wav_is_decoded_on_the_event_loop_the_rest_in_a_thread(
    client, reference, monkeypatch, fmt, seconds, inline
):
    """A 3 s 16 kHz WAV (96 KB) skips the worker thread's round trip; a longer WAV or a
    compressed format does not hold up the event loop. The answer is the same either way."""
    from server.api import predict

    threaded = []

    async def in_thread(work):
        threaded.append(work)
        return work()

    monkeypatch.setattr(predict, "in_thread", in_thread)
    data = encode_clip(fmt, seconds=seconds, kind="noise")
    assert predict.decodes_inline(data) is inline
    response = client.post("/predict", content=data)
    assert response.status_code == 200, response.text
    assert len(threaded) == (0 if inline else 1)
    assert_matches_reference(response.json()["results"][0], load_audio(data), reference)
