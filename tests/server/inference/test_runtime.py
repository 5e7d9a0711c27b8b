"""Execution provider choice (fake provider lists: no GPU here), model dir checks, ORT runs."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from emocore.model_dir import ModelDirError, load_model_dir, sha256_file
from server.inference.runtime import (
    CPU,
    CUDA,
    CUDA_OPTIONS,
    ProviderError,
    Runtime,
    active_provider,
    requested_providers,
)

GPU_BUILD = ["TensorrtExecutionProvider", CUDA, CPU]  # what onnxruntime-gpu lists, CUDA or not


def test_requested_providers():
    assert requested_providers("cpu", GPU_BUILD) == [CPU]
    assert requested_providers("auto", [CPU]) == [CPU]
    assert requested_providers("auto", GPU_BUILD) == [(CUDA, CUDA_OPTIONS), CPU]
    assert requested_providers("cuda", GPU_BUILD) == [(CUDA, CUDA_OPTIONS), CPU]
    assert CUDA_OPTIONS["cudnn_conv_algo_search"] == "HEURISTIC"
    with pytest.raises(ProviderError, match="onnxruntime-gpu"):
        requested_providers("cuda", [CPU])


def test_active_provider_trusts_the_session_not_the_build():
    assert active_provider("auto", [CUDA, CPU]) == CUDA
    assert active_provider("auto", [CPU]) == CPU
    assert active_provider("cuda", [CUDA, CPU]) == CUDA
    with pytest.raises(ProviderError, match="fell back"):
        active_provider("cuda", [CPU])


@pytest.fixture
def gpu_build_without_cuda(monkeypatch):
    """Mimic onnxruntime-gpu on a machine without CUDA: lists CUDA, silently runs on CPU."""
    real_session = ort.InferenceSession
    asked = []

    def session(path, options=None, providers=None):
        asked.append(providers)
        return real_session(path, options, providers=[CPU])

    monkeypatch.setattr(ort, "get_available_providers", lambda: GPU_BUILD)
    monkeypatch.setattr(ort, "InferenceSession", session)
    return asked


def test_auto_falls_back_to_cpu_with_a_warning(tiny_model_dir, gpu_build_without_cuda, caplog):
    with caplog.at_level(logging.WARNING, logger="emodistill.runtime"):
        runtime = Runtime.load(tiny_model_dir, device="auto")
    assert gpu_build_without_cuda[0][0] == (CUDA, CUDA_OPTIONS)
    assert runtime.provider == CPU
    assert "unusable" in caplog.text


def test_cuda_that_cannot_be_had_is_a_startup_error(tiny_model_dir, gpu_build_without_cuda):
    with pytest.raises(ProviderError):
        Runtime.load(tiny_model_dir, device="cuda")


def test_io_binding_path_equals_plain_run(tiny_model_dir):
    runtime = Runtime.load(tiny_model_dir, device="cpu", threads=1)
    rng = np.random.default_rng(0)
    clips = [rng.uniform(-0.5, 0.5, n).astype(np.float32) for n in (16000, 9000, 400)]
    plain = runtime.run_clips(clips)
    runtime.use_io_binding(True)  # the CUDA code path, on CPU
    bound = runtime.run_clips(clips)
    for a, b in zip(plain, bound, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.fixture
def model_copy(tiny_model_dir, tmp_path):
    return shutil.copytree(tiny_model_dir, tmp_path / "model")


def edit_meta(model_dir, **changes):
    path = model_dir / "model.json"
    meta = json.loads(path.read_text())
    meta.update(changes)
    path.write_text(json.dumps(meta))


def test_valid_model_dir(model_copy):
    model = load_model_dir(model_copy)
    assert model.labels == ["neutral", "happy", "angry", "sad"]
    assert model.min_samples == 400 and model.batch_invariant
    assert "files" not in model.summary()


def test_summary_says_what_the_model_may_be_used_for(model_copy):
    corpora = [{"name": "ravdess", "licence": "CC BY-NC-SA 4.0"}]
    edit_meta(model_copy, corpora=corpora, usage="non-commercial")
    summary = load_model_dir(model_copy).summary()
    assert summary["usage"] == "non-commercial" and summary["corpora"] == corpora


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: shutil.rmtree(d), "does not exist"),
        (lambda d: (d / "model.json").unlink(), "model.json is missing"),
        (lambda d: (d / "model.json").write_text("{oops"), "not valid JSON"),
        (lambda d: edit_meta(d, format_version=2), "format_version"),
        (lambda d: edit_meta(d, labels=[]), "labels"),
        (lambda d: edit_meta(d, sample_rate=8000), "sample_rate"),
        (lambda d: edit_meta(d, max_samples=100), "max_samples"),
        (lambda d: edit_meta(d, max_samples="30 s"), "max_samples"),
        (lambda d: (d / "model.onnx").unlink(), "model.onnx is missing"),
        (lambda d: (d / "model.onnx").write_bytes(b"corrupt"), "sha256"),
    ],
)
def test_broken_model_dirs_are_refused(model_copy, damage, message):
    damage(model_copy)
    with pytest.raises(ModelDirError, match=message):
        load_model_dir(model_copy)


def test_settings_longer_than_the_model_accepts_are_refused(model_copy):
    """A Whisper student's position table covers 30 s: longer limits are a start-up error
    that names the setting, not a 5xx at the first long clip."""
    from server.inference.runtime import Runtime
    from server.settings import Settings

    assert load_model_dir(model_copy).max_samples is None  # raw-waveform encoders: any length
    edit_meta(model_copy, max_samples=30 * 16_000)
    runtime = Runtime.load(model_copy, device="cpu", int8=False, threads=1)
    runtime.check_settings(Settings(model_dir=model_copy))  # the defaults fit
    with pytest.raises(ModelDirError, match="EMODISTILL_MAX_SECONDS=45.*at most 30 s"):
        runtime.check_settings(Settings(model_dir=model_copy, max_seconds=45))


def test_int8_requested_but_not_exported(model_copy):
    with pytest.raises(ModelDirError, match="model.int8.onnx"):
        load_model_dir(model_copy, int8=True)


def test_int8_batch_invariance_comes_from_model_json(model_copy):
    shutil.copy(model_copy / "model.onnx", model_copy / "model.int8.onnx")
    entry = {"sha256": sha256_file(model_copy / "model.int8.onnx")}
    files = json.loads((model_copy / "model.json").read_text())["files"] | {
        "model.int8.onnx": entry
    }
    edit_meta(model_copy, files=files, int8={"batching_max_abs_diff": 5e-3})
    assert not load_model_dir(model_copy, int8=True).batch_invariant
    edit_meta(model_copy, int8={"batching_max_abs_diff": 1e-6})
    assert load_model_dir(model_copy, int8=True).batch_invariant
    edit_meta(model_copy, int8={"batching_max_abs_diff": 1e-6, "batch_invariant": False})
    assert not load_model_dir(model_copy, int8=True).batch_invariant  # the explicit flag wins
    assert load_model_dir(model_copy).batch_invariant  # fp32 is exact by contract


@pytest.mark.parametrize(
    ("int8", "served"),
    [
        (None, "model.onnx"),  # auto: no int8 written
        ({"accepted": True, "evaluated_on_calibration_clips": False}, "model.int8.onnx"),
        ({"accepted": False, "evaluated_on_calibration_clips": False}, "model.onnx"),
        ({"accepted": True, "evaluated_on_calibration_clips": True}, "model.onnx"),  # ungated
    ],
)
def test_int8_auto_serves_int8_only_where_its_gate_passed(model_copy, int8, served):
    """EMODISTILL_INT8=auto (the default) serves model.int8.onnx when the export wrote it and
    its accuracy gate passed on held-out clips; fp32 otherwise; true/false choose."""
    from server.settings import Settings

    if int8 is not None:
        shutil.copy(model_copy / "model.onnx", model_copy / "model.int8.onnx")
        files = json.loads((model_copy / "model.json").read_text())["files"]
        files["model.int8.onnx"] = {"sha256": sha256_file(model_copy / "model.int8.onnx")}
        edit_meta(model_copy, files=files, int8=int8)
    settings = Settings(model_dir=model_copy, threads=1)
    assert settings.int8 == "auto" and settings.int8_choice is None
    runtime = Runtime.from_settings(settings)
    assert runtime.model.onnx_path.name == served
    assert runtime.model.summary()["variant"] == ("int8" if "int8" in served else "fp32")
    fp32 = Runtime.from_settings(Settings(model_dir=model_copy, threads=1, int8=False))
    assert fp32.model.onnx_path.name == "model.onnx"


def test_int8_setting_reads_auto_true_and_false(monkeypatch):
    from server.settings import Settings

    for text, value in (("auto", "auto"), ("true", True), ("1", True), ("false", False)):
        monkeypatch.setenv("EMODISTILL_INT8", text)
        assert Settings().int8 == value


def test_wrong_onnx_io_names_are_refused(model_copy):
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "wrong",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "t"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", "t"])],
    )
    onnx.save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
        model_copy / "model.onnx",
    )
    files = {"model.onnx": {"sha256": sha256_file(model_copy / "model.onnx")}}
    edit_meta(model_copy, files=files)
    with pytest.raises(ModelDirError, match="expected inputs"):
        Runtime.load(model_copy, device="cpu")


def test_ort_spinning_setting_reaches_the_session_options(monkeypatch):
    from server.inference.runtime import session_options
    from server.settings import Settings

    assert Settings().ort_spinning is True  # ONNX Runtime's own default
    monkeypatch.setenv("EMODISTILL_ORT_SPINNING", "false")
    assert Settings().ort_spinning is False
    options = session_options(2, True)  # spin within a run, stop at its end
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    assert options.get_session_config_entry("session.force_spinning_stop") == "1"
    options = session_options(2, False)
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
