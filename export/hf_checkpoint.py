"""The student as a transformers checkpoint that `pipeline("audio-classification")` loads offline."""

from __future__ import annotations

from pathlib import Path

from transformers import Wav2Vec2FeatureExtractor

from export.spec import SAMPLE_RATE
from training.student import Student


def feature_extractor() -> Wav2Vec2FeatureExtractor:
    # do_normalize matches the graph's per-utterance normalisation (same epsilon), so a single
    # utterance gets the same logits from the pipeline as from model.onnx.
    return Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=SAMPLE_RATE,
        padding_value=0.0,
        do_normalize=True,
        return_attention_mask=True,
    )


def save_hf(student: Student, directory: Path) -> Path:
    """The classifier (id2label set) + feature extractor config. The masked first GroupNorm
    keeps transformers' parameter names, so the checkpoint loads as the plain model, which is
    exact for single utterances (no padding)."""
    student.classifier.save_pretrained(directory)
    feature_extractor().save_pretrained(directory)
    for path in directory.iterdir():
        path.chmod(0o644)  # safetensors writes its file private; others serve or copy the dir
    return directory
