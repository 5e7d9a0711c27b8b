"""The optional ``dimensions`` output (arousal, valence, dominance, 1-5): written only for a
student with the regression head, checked by the parity gate, kept by int8 and Triton."""

import json

import numpy as np
import onnx
import pytest
import torch

from export import build_model_dir
from export.parity import batching_max_abs_diff, open_session, probe_signal, run_onnx, run_torch
from training.data.utterance import DIMENSIONS, EMOTIONS
from training.models.student import Student, build_classifier, load_student, save_student

SPEC = {"names": ["arousal", "valence", "dominance"], "scale": [1.0, 5.0]}


def dims_student(name: str = "tiny") -> Student:
    torch.manual_seed(0)
    student = Student(build_classifier(name, EMOTIONS), dimensions=True)
    with torch.no_grad():  # away from the scale's middle, so the mapping to 1-5 shows
        student.dimension_head.bias.copy_(torch.tensor([0.5, -0.25, 0.1]))
    return student.eval()


@pytest.fixture(scope="module")
def dims_dir(tmp_path_factory):
    """One export (with int8 and Triton) serves every test here: exports take seconds."""
    student = dims_student()
    out = tmp_path_factory.mktemp("dims") / "model"
    calibration = [probe_signal(8_000, seed=i) for i in range(4)]
    return student, build_model_dir(
        student, out, int8=True, calibration=calibration, hf=False,
        triton_dir=out.parent / "triton",
    )  # fmt: skip


def test_graph_has_the_third_output(dims_dir):
    _, out = dims_dir
    graph = onnx.load(str(out / "model.onnx")).graph
    assert [o.name for o in graph.output] == ["logits", "embedding", "dimensions"]
    shape = graph.output[2].type.tensor_type.shape.dim
    assert shape[0].dim_param == "batch" and shape[1].dim_value == 3
    assert graph.output[2].type.tensor_type.elem_type == onnx.TensorProto.FLOAT


def test_model_json_names_the_dimensions_and_their_parity(dims_dir):
    _, out = dims_dir
    meta = json.loads((out / "model.json").read_text())
    assert meta["dimensions"] == SPEC and list(DIMENSIONS) == SPEC["names"]
    assert meta["format_version"] == 1
    assert 0 <= meta["parity"]["max_abs_diff_dimensions"] <= 1e-4


def test_output_is_in_scale_units(dims_dir):
    """dimensions = 3 + 2 * head(embedding): the graph maps the head's normalised units to 1-5."""
    student, out = dims_dir
    rows = [probe_signal(n, seed=n) for n in (student.min_samples, 12_345, 40_000)]
    logits, embedding, dimensions = run_onnx(open_session(out / "model.onnx"), rows)
    head = student.dimension_head
    expected = 3.0 + 2.0 * (embedding @ head.weight.detach().numpy().T + head.bias.detach().numpy())
    assert np.abs(dimensions - expected).max() <= 1e-4
    assert dimensions.shape == (3, 3)
    # The bias (0.5, -0.25, 0.1) puts the rows near (4.0, 2.5, 3.2), not at the middle 3.
    assert np.abs(dimensions.mean(0) - [4.0, 2.5, 3.2]).max() < 0.5


def test_onnx_matches_torch_and_batching_is_exact(dims_dir):
    student, out = dims_dir
    session = open_session(out / "model.onnx")
    rows = [probe_signal(n, seed=i) for i, n in enumerate((16_000, student.min_samples, 70_000))]
    onnx_dims, torch_dims = run_onnx(session, rows)[2], run_torch(student, rows)[2]
    assert np.abs(onnx_dims - torch_dims).max() <= 1e-4
    batched = onnx_dims
    for i, row in enumerate(rows):
        assert np.abs(batched[i] - run_onnx(session, [row])[2][0]).max() <= 1e-4
    assert batching_max_abs_diff(session, rows) <= 1e-4


def test_int8_and_triton_keep_the_output(dims_dir):
    student, out = dims_dir
    meta = json.loads((out / "model.json").read_text())
    config = (out.parent / "triton" / "emodistill" / "config.pbtxt").read_text()
    assert 'name: "dimensions"' in config and "dims: [ 3 ]" in config
    assert 0 <= meta["int8"]["dimensions_max_abs_diff"] < 0.5
    outputs = open_session(out / "model.int8.onnx").get_outputs()
    assert [o.name for o in outputs] == ["logits", "embedding", "dimensions"]


def test_dimensions_gate_passes_close_dimensions_or_a_kept_ccc():
    from export.quantize import dimensions_refusal

    close = {"dimensions_max_abs_diff": 0.03}
    assert dimensions_refusal(close, 0.05, 0.01) is None
    far = {"dimensions_max_abs_diff": 0.2}
    assert "unrated" in dimensions_refusal(far, 0.05, 0.01)
    kept = far | {"dimensions_ccc_fp32": [0.8, 0.7, 0.6], "dimensions_ccc_int8": [0.81, 0.695, 0.6]}
    assert dimensions_refusal(kept, 0.05, 0.01) is None  # CCC within 0.01 of fp32's
    lost = kept | {"dimensions_ccc_int8": [0.81, 0.68, 0.6]}
    assert "CCC by 0.020" in dimensions_refusal(lost, 0.05, 0.01)


@pytest.mark.parametrize(("limits", "accepted"), [
    ({"max_dimensions_diff": -1.0, "max_ccc_drop": -1.0}, False),
    ({"max_dimensions_diff": -1.0, "max_ccc_drop": 2.0}, True),
])  # fmt: skip
def test_int8_gate_checks_the_dimensions(tmp_path, limits, accepted):
    """Held-out rated clips: int8 is refused when it moves the dimensions past the allowance
    and their CCC with the ratings drops past its own; figures recorded either way."""
    student = dims_student()
    audio = [probe_signal(6_000 + 1_000 * i, seed=40 + i) for i in range(8)]
    ratings = np.array([[3.0 + (i % 3) / 2, 2.5 + i / 8, 3.5 - i / 10] for i in range(8)])
    check = {"audio": audio, "labels": [i % 4 for i in range(8)], "speakers": ["a", "b"],
             "dimensions": ratings}  # fmt: skip
    out = build_model_dir(
        student, tmp_path / "m", int8=True, calibration=audio[:4], hf=False,
        int8_check=check, int8_max_ua_drop=1.0, int8_limits=limits,
    )  # fmt: skip
    meta = json.loads((out / "model.json").read_text())
    int8 = meta["int8"]
    assert int8["accepted"] is accepted and ("model.int8.onnx" in meta["files"]) is accepted
    assert len(int8["dimensions_ccc_fp32"]) == len(int8["dimensions_ccc_int8"]) == 3
    assert int8["max_dimensions_diff"] == -1.0
    if not accepted:
        assert "dimensions" in int8["reason"] and "CCC" in int8["reason"]


def test_server_loader_accepts_a_model_with_dimensions(dims_dir):
    from emocore.model_dir import load_model_dir

    _, out = dims_dir
    assert load_model_dir(out).labels == list(EMOTIONS)


def test_checkpoint_round_trip_keeps_the_head(tmp_path):
    student = dims_student()
    save_student(student, tmp_path / "ckpt")
    loaded = load_student(tmp_path / "ckpt").eval()
    assert loaded.dimensions == SPEC
    rows = [probe_signal(8_000, seed=1)]
    assert np.abs(run_torch(loaded, rows)[2] - run_torch(student, rows)[2]).max() == 0.0


def test_temperature_leaves_dimensions_alone():
    from training.eval.calibration import fold_temperature

    student = dims_student()
    rows = [probe_signal(8_000, seed=2)]
    before = run_torch(student, rows)
    fold_temperature(student, 2.0)
    after = run_torch(student, rows)
    assert np.allclose(after[0], before[0] / 2.0, atol=1e-5)
    assert np.array_equal(after[2], before[2])


def test_whisper_student_gives_dimensions_too():
    student = dims_student("tiny-whisper")
    outputs = run_torch(student, [probe_signal(8_000, seed=1), probe_signal(20_000, seed=2)])
    assert [o.shape for o in outputs[::2]] == [(2, 4), (2, 3)]
