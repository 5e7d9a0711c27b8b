import hashlib
import json

import numpy as np
import onnx
import pytest

from emocore.audio import MIN_SAMPLES
from emocore.model_dir import PARITY_CASES
from export import ParityError, build_model_dir
from export.parity import open_session, probe_signal, run_onnx, run_torch
from training.data.utterance import EMOTIONS

META_KEYS = {
    "format_version", "labels", "sample_rate", "min_samples", "max_seconds", "backbone",
    "embedding_dim", "files", "parity", "int8", "training", "exporter", "created",
}  # fmt: skip


def test_model_json_complete(student_and_dir):
    student, out = student_and_dir
    meta = json.loads((out / "model.json").read_text())
    assert META_KEYS <= set(meta)
    assert meta["format_version"] == 1
    assert meta["labels"] == list(EMOTIONS)
    assert "dimensions" not in meta  # a student without the regression head: no third output
    # The shortest input with an output frame: 400 samples for HuBERT's convs, 720 (3 frames of
    # 10 ms for the k=3 conv after the 25 ms log-mel window) for the log-mel front end; Whisper
    # students take the server's floor (one 25 ms window).
    expected = {"hubert": 400, "emodistill_mel_hubert": 720, "emodistill_whisper": 400}[
        student.config.model_type
    ]
    assert meta["sample_rate"] == 16000 and meta["min_samples"] == student.min_samples == expected
    assert meta["embedding_dim"] == student.embedding_dim
    entry = meta["files"]["model.onnx"]
    data = (out / "model.onnx").read_bytes()
    assert entry == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    assert set(meta["parity"]) == {
        "tolerance", "max_abs_diff_logits", "max_abs_diff_embedding",
        "batching_max_abs_diff", "gain_max_abs_diff", "gain_tolerance", "gains", "cases",
    }  # fmt: skip
    assert min(min(case) for case in meta["parity"]["cases"]) == student.min_samples
    assert meta["exporter"]["opset"] == 17


def test_graph_has_contract_io_with_dynamic_axes(student_and_dir):
    _, out = student_and_dir
    graph = onnx.load(str(out / "model.onnx")).graph
    io = {v.name: v.type.tensor_type for v in list(graph.input) + list(graph.output)}
    assert list(io) == ["audio", "lengths", "logits", "embedding"]
    assert io["audio"].elem_type == onnx.TensorProto.FLOAT
    assert io["lengths"].elem_type == onnx.TensorProto.INT64
    assert [d.dim_param for d in io["audio"].shape.dim] == ["batch", "samples"]
    assert io["logits"].shape.dim[0].dim_param == "batch"


def test_onnx_matches_torch_on_unseen_lengths(student_and_dir):
    student, out = student_and_dir
    rows = [probe_signal(n, seed=n) for n in (student.min_samples, 5_000, 41_003)]
    onnx_out = run_onnx(open_session(out / "model.onnx"), rows)
    torch_out = run_torch(student, rows)
    for a, b in zip(onnx_out, torch_out, strict=True):
        assert np.abs(a - b).max() <= 1e-4


def test_batched_equals_alone_in_onnx(student_and_dir):
    """Exact batching over mixed lengths, for group-norm and layer-norm encoders."""
    student, out = student_and_dir
    session = open_session(out / "model.onnx")
    lengths = (16_000, student.min_samples, 70_000, 9_999)
    rows = [probe_signal(n, seed=i) for i, n in enumerate(lengths)]
    logits, embedding = run_onnx(session, rows)
    for i, row in enumerate(rows):
        alone_logits, alone_embedding = run_onnx(session, [row])
        assert np.abs(logits[i] - alone_logits[0]).max() <= 1e-4
        assert np.abs(embedding[i] - alone_embedding[0]).max() <= 1e-4
    meta = json.loads((out / "model.json").read_text())
    assert meta["parity"]["batching_max_abs_diff"] <= 1e-4


def test_refuses_above_tolerance_and_writes_nothing(tmp_path, make_student):
    out = tmp_path / "model"
    with pytest.raises(ParityError, match="refusing"):
        build_model_dir(make_student("tiny"), out, tolerance=0.0, hf=False)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no staging leftovers


def test_tampered_graph_fails_the_gate(tmp_path, make_student):
    from export.onnx_export import export_onnx
    from export.parity import measure_parity

    student = make_student("tiny")
    path = export_onnx(student, tmp_path / "model.onnx")
    model = onnx.load(str(path))
    weight = max(model.graph.initializer, key=lambda t: np.prod(t.dims))
    array = onnx.numpy_helper.to_array(weight) * 1.01
    weight.CopyFrom(onnx.numpy_helper.from_array(array.astype(np.float32), weight.name))
    onnx.save(model, str(path))
    report = measure_parity(student, path, cases=PARITY_CASES[:1])
    with pytest.raises(ParityError):
        report.check()


def test_replaces_only_model_dirs(tmp_path, make_student):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        build_model_dir(make_student("tiny"), tmp_path, hf=False)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_server_loader_accepts_the_model_dir(student_and_dir):
    from emocore.model_dir import load_model_dir

    _, out = student_and_dir
    loaded = load_model_dir(out)
    assert loaded.labels == list(EMOTIONS) and loaded.batch_invariant


def test_replaces_an_earlier_model_dir(tmp_path, make_student):
    out = build_model_dir(make_student("tiny"), tmp_path / "m", hf=False)
    first = json.loads((out / "model.json").read_text())["created"]
    (out / "stale.txt").write_text("from the old export")
    build_model_dir(make_student("tiny-layer"), out, hf=False)
    assert not (out / "stale.txt").exists()
    assert json.loads((out / "model.json").read_text())["created"] >= first
    assert [p.name for p in tmp_path.iterdir()] == ["m"]


def test_never_feeds_rows_below_min_samples():
    from export.parity import pad_batch

    assert min(min(case) for case in PARITY_CASES) >= MIN_SAMPLES
    with pytest.raises(ValueError, match="400"):
        pad_batch([np.zeros(MIN_SAMPLES), np.zeros(MIN_SAMPLES - 1)])


def test_every_file_is_readable_by_other_users(student_and_dir):
    """A server or an image build may run as another user than the exporter."""
    _, out = student_and_dir
    for path in [out, *out.rglob("*")]:
        assert path.stat().st_mode & 0o004, f"{path} is not world-readable"
