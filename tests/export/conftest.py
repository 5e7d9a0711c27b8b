import os

import pytest
import torch

from training.data.utterance import EMOTIONS
from training.models.student import Student, build_classifier

os.environ.setdefault("HF_HUB_OFFLINE", "1")


# Whisper students ship with weighted layer pooling (on for every pretrained student).
OVERRIDES = {"tiny-whisper": {"use_weighted_layer_sum": True}}


def new_student(name: str) -> Student:
    torch.manual_seed(0)
    return Student(build_classifier(name, EMOTIONS, **OVERRIDES.get(name, {}))).eval()


@pytest.fixture
def make_student():
    return new_student


@pytest.fixture(scope="session", params=["tiny", "tiny-layer", "tiny-mel", "tiny-whisper"])
def student_and_dir(request, tmp_path_factory):
    """Every front end: group-norm and layer-norm conv encoders, log-mel, and Whisper's log-mel."""
    from export import build_model_dir

    student = new_student(request.param)
    out = build_model_dir(student, tmp_path_factory.mktemp(request.param) / "model")
    return student, out
