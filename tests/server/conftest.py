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


def export_named(name: str, tmp_path_factory, *, dimensions: bool = False) -> Path:
    import torch

    from export import build_model_dir
    from training.data.utterance import EMOTIONS
    from training.models.student import Student, build_classifier

    torch.manual_seed(0)
    student = Student(build_classifier(name, EMOTIONS), dimensions=dimensions).eval()
    folder = tmp_path_factory.mktemp("models") / (f"{name}-dims" if dimensions else name)
    return build_model_dir(student, folder, hf=False)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """The "tiny" student (group-norm encoder, masked: exact batching), exported to ONNX."""
    return export_named("tiny", tmp_path_factory)


@pytest.fixture(scope="session")
def mel_model_dir(tmp_path_factory) -> Path:
    """The log-mel student of the demo ("tiny-mel"): min_samples 720, not 400."""
    return export_named("tiny-mel", tmp_path_factory)


DIMENSIONS = {"names": ["arousal", "valence", "dominance"], "scale": [1.0, 5.0]}


@pytest.fixture(scope="session")
def dims_model_dir(tmp_path_factory) -> Path:
    """The "tiny" student with the dimensions head (arousal, valence, dominance, 1-5): the
    model directory's third output. Its classifier is the tiny's (same seed)."""
    return export_named("tiny", tmp_path_factory, dimensions=True)


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
