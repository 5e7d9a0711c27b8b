"""Server test fixtures: a tiny exported model directory and app/client factories."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from server.settings import Settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def export_named(name: str, tmp_path_factory) -> Path:
    import torch

    from export import build_model_dir
    from training.data.utterance import EMOTIONS
    from training.student import Student, build_classifier

    torch.manual_seed(0)
    student = Student(build_classifier(name, EMOTIONS)).eval()
    return build_model_dir(student, tmp_path_factory.mktemp("models") / name, hf=False)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """The "tiny" student (group-norm encoder, masked: exact batching), exported to ONNX."""
    return export_named("tiny", tmp_path_factory)


@pytest.fixture(scope="session")
def mel_model_dir(tmp_path_factory) -> Path:
    """The log-mel student of the demo ("tiny-mel"): min_samples 720, not 400."""
    return export_named("tiny-mel", tmp_path_factory)


DIMENSIONS = {"names": ["arousal", "valence", "dominance"], "scale": [1.0, 5.0]}


def add_dimensions_output(source: Path, target: Path) -> Path:
    """A copy of the model dir ``source`` whose graph also answers ``dimensions`` [batch, 3]:
    3 + 2 * tanh(affine map of the embedding), deterministic and inside 1-5, declared in
    model.json (a stand-in for a student exported with the regression head)."""
    import json
    import shutil

    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from server.model_dir import sha256_file

    shutil.copytree(source, target)
    meta = json.loads((target / "model.json").read_text())
    model = onnx.load(target / "model.onnx")
    rng = np.random.default_rng(0)
    width = len(DIMENSIONS["names"])
    constants = {
        "dims_weight": rng.normal(
            0, 3 / np.sqrt(meta["embedding_dim"]), (meta["embedding_dim"], width)
        ),
        "dims_bias": rng.normal(0, 0.3, width),
        "dims_half_range": np.array(2.0),
        "dims_middle": np.array(3.0),
    }
    model.graph.initializer.extend(
        numpy_helper.from_array(value.astype(np.float32), name) for name, value in constants.items()
    )
    model.graph.node.extend(
        [
            helper.make_node("MatMul", ["embedding", "dims_weight"], ["dims_mapped"]),
            helper.make_node("Add", ["dims_mapped", "dims_bias"], ["dims_affine"]),
            helper.make_node("Tanh", ["dims_affine"], ["dims_tanh"]),
            helper.make_node("Mul", ["dims_tanh", "dims_half_range"], ["dims_spread"]),
            helper.make_node("Add", ["dims_spread", "dims_middle"], ["dimensions"]),
        ]
    )
    model.graph.output.append(
        helper.make_tensor_value_info("dimensions", TensorProto.FLOAT, ["batch", width])
    )
    onnx.checker.check_model(model)
    onnx.save(model, target / "model.onnx")
    meta["dimensions"] = DIMENSIONS
    meta["files"]["model.onnx"]["sha256"] = sha256_file(target / "model.onnx")
    (target / "model.json").write_text(json.dumps(meta, indent=2))
    return target


@pytest.fixture(scope="session")
def dims_model_dir(tiny_model_dir: Path, tmp_path_factory) -> Path:
    """The tiny model with a ``dimensions`` output: its logits and embedding are the tiny's."""
    return add_dimensions_output(tiny_model_dir, tmp_path_factory.mktemp("models") / "tiny-dims")


@pytest.fixture
def make_settings(tiny_model_dir: Path) -> Callable[..., Settings]:
    """Settings for the tiny model; keyword arguments override fields (environment ignored)."""

    def make(**overrides) -> Settings:
        values = dict(model_dir=tiny_model_dir, threads=1, max_wait_ms=5.0) | overrides
        return Settings(**values)

    return make


@pytest.fixture
def make_client(make_settings) -> Callable[..., TestClient]:
    """``with make_client(max_seconds=5) as client:`` runs the lifespan (load, warm-up, drain)."""

    @contextmanager
    def make(**overrides) -> Iterator[TestClient]:
        with TestClient(create_app(make_settings(**overrides))) as client:
            yield client

    return make


@pytest.fixture
def client(make_client) -> Iterator[TestClient]:
    with make_client() as client:
        yield client


def direct_run(model_dir: Path, outputs: list[str]) -> Callable[[np.ndarray], list[np.ndarray]]:
    """A direct, unbatched ONNX Runtime call: samples -> the named outputs of that one row."""
    session = ort.InferenceSession(
        str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"]
    )

    def run(samples: np.ndarray) -> list[np.ndarray]:
        audio = samples.astype(np.float32)[None]
        answers = session.run(
            outputs, {"audio": audio, "lengths": np.array([audio.shape[1]], np.int64)}
        )
        return [answer[0] for answer in answers]

    return run


@pytest.fixture(scope="session")
def reference(tiny_model_dir: Path) -> Callable[[np.ndarray], list[np.ndarray]]:
    """samples -> [logits [C], embedding [D]], straight from ONNX Runtime."""
    return direct_run(tiny_model_dir, ["logits", "embedding"])


@pytest.fixture(scope="session")
def dims_reference(dims_model_dir: Path) -> Callable[[np.ndarray], list[np.ndarray]]:
    """samples -> [logits [C], embedding [D], dimensions [3]], straight from ONNX Runtime."""
    return direct_run(dims_model_dir, ["logits", "embedding", "dimensions"])


def softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max())
    return exp / exp.sum()
