"""Dimensional affect (model.json ``dimensions``, the graph's third output): the load-time
checks, exact batched answers, and every answer that carries it: POST /predict (single,
multipart, segments and their summary), /v1/model, the OpenAPI schema, the CLI (local and
--url), the stream's ready event, partials and finals. A model without dimensions answers
exactly as before: no key."""

from __future__ import annotations

import csv
import dataclasses
import functools
import io
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import soundfile as sf

from emocore import scoring
from emocore.audio import load_audio
from emocore.model_dir import (
    Dimensions,
    ModelDirError,
    load_model_dir,
    sha256_file,
)
from server.inference.runtime import Runtime
from server.score import LocalScorer, RemoteScorer, main
from tests.fixtures import encode_clip, write_clip
from tests.server.conftest import DIMENSIONS, softmax
from tests.server.speech_clips import three_utterances
from tests.server.stream import test_machine as test_stream_machine
from tests.server.stream.test_route import encode, finals, predict_span, stream_file

NAMES = DIMENSIONS["names"]
LABELS = ["neutral", "happy", "angry", "sad"]


@pytest.fixture
def dims_client(make_client, dims_model_dir):
    with make_client(model_dir=dims_model_dir) as client:
        yield client


def values(answer: dict) -> list[float]:
    assert list(answer["dimensions"]) == NAMES  # in the model's order
    return [answer["dimensions"][name] for name in NAMES]


def edit_meta(model_dir: Path, **changes) -> None:
    path = model_dir / "model.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | changes))


def predict(client, data: bytes, **params) -> dict:
    response = client.post("/predict", content=data, params=params)
    assert response.status_code == 200, response.text
    return response.json()["results"][0]


def wav(samples: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, 16_000, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


# The model directory and the runtime ----------------------------------------------------------


def test_model_json_dimensions_are_read(dims_model_dir, tiny_model_dir):
    model = load_model_dir(dims_model_dir)
    assert model.dimensions == Dimensions(tuple(NAMES), (1.0, 5.0))
    assert model.summary()["dimensions"] == {"names": NAMES, "scale": [1.0, 5.0]}
    assert load_model_dir(tiny_model_dir).dimensions is None
    assert load_model_dir(tiny_model_dir).summary()["dimensions"] is None


def test_a_bad_key_stops_loading(dims_model_dir, tmp_path):
    model = shutil.copytree(dims_model_dir, tmp_path / "model")
    edit_meta(model, dimensions={"names": NAMES, "scale": [5, 1]})
    with pytest.raises(ModelDirError, match="dimensions.scale"):
        load_model_dir(model)


def test_dimensions_promised_but_missing_from_the_graph_are_refused(tiny_model_dir, tmp_path):
    model = shutil.copytree(tiny_model_dir, tmp_path / "model")
    edit_meta(model, dimensions=DIMENSIONS)
    load_model_dir(model)  # model.json alone is fine; the graph is checked when loaded
    with pytest.raises(ModelDirError, match="has no 'dimensions' output.*re-export"):
        Runtime.load(model, device="cpu", threads=1)


def test_dimensions_of_another_width_are_refused(dims_model_dir, tmp_path):
    model = shutil.copytree(dims_model_dir, tmp_path / "model")
    edit_meta(model, dimensions={"names": ["arousal", "valence"], "scale": [1, 5]})
    with pytest.raises(ModelDirError, match=r"expected tensor\(float\) \[batch, 2\]"):
        Runtime.load(model, device="cpu", threads=1)


def test_a_symbolic_width_is_checked_by_running_the_graph(dims_model_dir, tmp_path):
    model = shutil.copytree(dims_model_dir, tmp_path / "model")
    graph = onnx.load(model / "model.onnx")
    (output,) = [o for o in graph.graph.output if o.name == "dimensions"]
    output.type.tensor_type.shape.dim[1].dim_param = "width"
    onnx.save(graph, model / "model.onnx")
    edit_meta(model, files={"model.onnx": {"sha256": sha256_file(model / "model.onnx")}})
    assert Runtime.load(model, device="cpu", threads=1).dimension_names == tuple(NAMES)
    edit_meta(model, dimensions={"names": ["arousal", "valence"], "scale": [1, 5]})
    with pytest.raises(
        ModelDirError, match=r"\['batch', 3\]; expected tensor\(float\) \[batch, 2\]"
    ):
        Runtime.load(model, device="cpu", threads=1)


def test_an_undeclared_dimensions_output_is_never_run(dims_model_dir, tmp_path):
    """model.json says null: the graph's extra output is ignored, the answers are the plain
    model's (outputs: logits and embedding only)."""
    model = shutil.copytree(dims_model_dir, tmp_path / "model")
    edit_meta(model, dimensions=None)
    runtime = Runtime.load(model, device="cpu", threads=1)
    assert runtime.dimensions is None and runtime.dimension_names is None
    assert runtime.run_clips([np.full(4000, 0.1, np.float32)]).dimensions is None


@pytest.mark.parametrize("io_binding", [False, True])
def test_runtime_answers_dimensions_equal_to_direct_onnx(
    dims_model_dir, dims_reference, io_binding
):
    runtime = Runtime.load(dims_model_dir, device="cpu", threads=1)
    runtime.use_io_binding(io_binding)  # True: the CUDA code path, on CPU
    rng = np.random.default_rng(0)
    clips = [rng.uniform(-0.5, 0.5, n).astype(np.float32) for n in (16000, 9000, 400)]
    outputs = runtime.run_clips(clips)
    assert outputs.dimensions.shape == (3, 3) and outputs.dimensions.dtype == np.float32
    for row, samples in enumerate(clips):  # padded rows answer as alone (exact batching)
        logits, embedding, dimensions = dims_reference(samples)
        np.testing.assert_allclose(outputs.logits[row], logits, atol=1e-4)
        np.testing.assert_allclose(outputs.dimensions[row], dimensions, atol=1e-4)


# POST /predict, /v1/model, OpenAPI -----------------------------------------------------------


def test_predict_carries_dimensions(dims_client, dims_reference, reference):
    data = encode_clip(seconds=1.0, kind="noise")
    result = predict(dims_client, data)
    logits, _, dimensions = dims_reference(load_audio(data))
    np.testing.assert_allclose(values(result), dimensions, atol=1e-5)
    # the classification is the plain tiny model's: the extra output changes nothing else
    plain_logits, _ = reference(load_audio(data))
    np.testing.assert_allclose(logits, plain_logits, atol=1e-6)
    got = [result["probabilities"][label] for label in LABELS]
    np.testing.assert_allclose(got, softmax(logits), atol=1e-5)


def test_multipart_files_carry_their_own_dimensions(dims_client, dims_reference):
    clips = [encode_clip(seconds=0.6 + i / 2, kind="noise", seed=i) for i in range(3)]
    files = [("file", (f"{i}.wav", clip, "audio/wav")) for i, clip in enumerate(clips)]
    response = dims_client.post("/predict", files=files)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    for result, clip in zip(results, clips, strict=True):
        np.testing.assert_allclose(values(result), dims_reference(load_audio(clip))[2], atol=1e-5)
    assert len({tuple(values(r)) for r in results}) == 3


def test_segments_and_their_summary_carry_dimensions(dims_client, dims_reference):
    samples = three_utterances().samples
    result = predict(dims_client, wav(samples), segment="true")
    segments = result["segments"]
    assert len(segments) == 3
    spans, rows = [], []
    for segment in segments:
        span = (round(segment["start_s"] * 16_000), round(segment["end_s"] * 16_000))
        expected = dims_reference(samples[span[0] : span[1]])[2]
        np.testing.assert_allclose(values(segment), expected, atol=1e-5)
        spans.append(span)
        rows.append(values(segment))
    # the file's dimensions: the segments' weighted by their durations, like its probabilities
    expected = scoring.summarise(spans, np.array(rows))
    np.testing.assert_allclose(values(result), expected, atol=1e-6)
    silence = predict(dims_client, wav(np.zeros(16_000, np.float32)), segment="true")
    assert silence["segments"] == [] and silence["label"] is None
    assert silence["dimensions"] is None  # a model with dimensions, but no speech


def test_a_model_without_dimensions_answers_without_the_key(client):
    data = encode_clip(seconds=1.0, kind="noise")
    assert "dimensions" not in predict(client, data)
    files = [("file", ("a.wav", data, "audio/wav"))] * 2
    for result in client.post("/predict", files=files).json()["results"]:
        assert "dimensions" not in result
    result = predict(client, wav(three_utterances().samples), segment="true")
    assert "dimensions" not in result
    assert len(result["segments"]) == 3
    assert all("dimensions" not in segment for segment in result["segments"])
    assert client.get("/v1/model").json()["model"]["dimensions"] is None


def test_model_info_and_openapi_describe_dimensions(dims_client):
    info = dims_client.get("/v1/model").json()
    assert info["model"]["dimensions"] == {"names": NAMES, "scale": [1.0, 5.0]}
    schema = dims_client.get("/openapi.json").json()["components"]["schemas"]
    for name in ("Prediction", "Segment"):
        field = schema[name]["properties"]["dimensions"]
        assert "arousal, valence, dominance on 1-5" in field["description"]
        assert "dimensions" not in schema[name].get("required", [])


def test_answers_with_dimensions_match_the_openapi_schema(dims_client):
    jsonschema_rs = pytest.importorskip("jsonschema_rs")  # schemathesis' validator (dev extra)
    spec = dims_client.get("/openapi.json").json()
    schema = {"$ref": "#/components/schemas/PredictResponse", "components": spec["components"]}
    validator = jsonschema_rs.validator_for(schema)
    bodies = [
        dims_client.post("/predict", content=encode_clip(seconds=1.0, kind="noise")).json(),
        dims_client.post(
            "/predict", content=wav(three_utterances().samples), params={"segment": "true"}
        ).json(),
    ]
    for body in bodies:
        validator.validate(body)
    bodies[1]["results"][0]["segments"][0]["dimensions"]["arousal"] = "high"
    assert not validator.is_valid(bodies[1])  # the schema does constrain the field


# The CLI -----------------------------------------------------------------------------------------


def test_cli_jsonl_and_csv_carry_dimensions(dims_model_dir, dims_reference, tmp_path):
    write_clip(tmp_path / "a.wav", seconds=1.0, kind="noise")
    (tmp_path / "long.wav").write_bytes(wav(three_utterances().samples))
    args = ["--model-dir", str(dims_model_dir), "--no-progress"]
    out = tmp_path / "rows.jsonl"
    assert main(["predict", str(tmp_path / "a.wav"), *args, "--out", str(out)]) == 0
    expected = dims_reference(load_audio(tmp_path / "a.wav"))[2]
    np.testing.assert_allclose(values(json.loads(out.read_text())), expected, atol=1e-5)
    assert main(["predict", str(tmp_path / "long.wav"), *args, "--segment", "--out", str(out)]) == 0
    row = json.loads(out.read_text())
    assert len(row["segments"]) == 3
    spans = [(round(s["start_s"] * 16_000), round(s["end_s"] * 16_000)) for s in row["segments"]]
    summary = scoring.summarise(spans, np.array([values(s) for s in row["segments"]]))
    np.testing.assert_allclose(values(row), summary, atol=1e-6)
    csv_out = tmp_path / "rows.csv"
    assert main(["predict", str(tmp_path / "a.wav"), *args, "--out", str(csv_out)]) == 0
    (line,) = csv.DictReader(csv_out.open())
    np.testing.assert_allclose([float(line[name]) for name in NAMES], expected, atol=1e-5)


def test_cli_url_mode_passes_dimensions_through(dims_model_dir, dims_client, tmp_path):
    write_clip(tmp_path / "a.wav", seconds=1.0, kind="noise")
    remote = RemoteScorer("http://testserver", api_key=None)
    remote.client = dims_client  # the running app, in-process
    local = LocalScorer(dims_model_dir, device="cpu", int8=False, threads=1, max_seconds=30)
    options = dict(segment=False, top_k=None)
    a, b = local(tmp_path / "a.wav", **options), remote(tmp_path / "a.wav", **options)
    np.testing.assert_allclose(values(a), values(b), atol=1e-6)
    assert set(a) == set(b)


def test_cli_rows_of_a_model_without_dimensions_are_unchanged(tiny_model_dir, tmp_path):
    write_clip(tmp_path / "a.wav", seconds=1.0, kind="noise")
    args = ["predict", str(tmp_path / "a.wav"), "--model-dir", str(tiny_model_dir)]
    out, csv_out = tmp_path / "rows.jsonl", tmp_path / "rows.csv"
    assert main([*args, "--no-progress", "--out", str(out)]) == 0
    assert "dimensions" not in json.loads(out.read_text())
    assert main([*args, "--no-progress", "--out", str(csv_out)]) == 0
    assert not set(NAMES) & set(csv_out.read_text().splitlines()[0].split(","))


# The stream --------------------------------------------------------------------------------------


def test_stream_finals_carry_the_dimensions_of_their_span(dims_client, client):
    clip = three_utterances()
    ready, events, code = stream_file(dims_client, clip.samples, rate=16_000, encoding="pcm_s16le")
    assert code == 1000
    assert ready["dimensions"] == {"names": NAMES, "scale": [1.0, 5.0]}
    found = finals(events)
    assert len(found) == 3
    # The same spans through POST /predict give the same answer: 16-bit samples are exact.
    pcm = np.frombuffer(encode(clip.samples, "pcm_s16le"), "<i2").astype(np.float32) / 32768
    for final in found:
        expected = predict_span(dims_client, pcm, 16_000, final["start"], final["end"])
        np.testing.assert_allclose(values(final), values(expected), atol=1e-5)
        assert all(v == round(v, 6) for v in values(final))  # rounded like the scores
    ready, events, code = stream_file(client, clip.samples, rate=16_000, encoding="pcm_s16le")
    assert "dimensions" not in ready
    assert finals(events) and all("dimensions" not in final for final in finals(events))


def test_stream_partials_carry_dimensions(monkeypatch):
    """The state machine, without a socket: every partial and final of a model with
    dimensions carries them, named and rounded to 6 digits."""
    dims = Dimensions(tuple(NAMES), (1.0, 5.0))
    machine = functools.partial(test_stream_machine.StreamMachine, dimensions=dims)
    monkeypatch.setattr(test_stream_machine, "StreamMachine", machine)
    affect = np.array([3.1234567, 1.5, 4.99], np.float32)
    answer = dataclasses.replace(test_stream_machine.inference(), dimensions=affect)
    run = test_stream_machine.Harness([1.0] * 60 + [0.0] * 30)
    assert run.sent[0]["dimensions"] == {"names": NAMES, "scale": [1.0, 5.0]}
    for _ in range(90):
        run.audio(test_stream_machine.WINDOW)
        for key in list(run.outstanding):
            run.outstanding.pop(key)
            run.apply(run.machine.inferred(key, answer, run.now))
    run.text({"type": "stop"})
    results = run.of("partial") + run.of("final")
    assert run.of("partial") and run.of("final")
    for result in results:
        assert result["dimensions"] == {"arousal": 3.123457, "valence": 1.5, "dominance": 4.99}
