"""The student as a transformers checkpoint that `pipeline("audio-classification")` loads offline."""

from __future__ import annotations

from pathlib import Path

from transformers import Wav2Vec2FeatureExtractor

from emocore.audio import SAMPLE_RATE
from training.models.student import Student


def feature_extractor(normalize: bool = True) -> Wav2Vec2FeatureExtractor:
    """Raw audio in. ``normalize`` matches the raw-waveform graphs' per-utterance normalisation
    (same epsilon), so a single utterance gets the same logits from the pipeline as from
    model.onnx; Whisper students take audio as it is (their log-mel is in the model)."""
    return Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=SAMPLE_RATE,
        padding_value=0.0,
        do_normalize=normalize,
        return_attention_mask=True,
    )


def save_hf(student: Student, directory: Path) -> Path:
    """The classifier (id2label set) + feature extractor config. The masked first GroupNorm
    keeps transformers' parameter names, so the checkpoint loads as the plain model, which is
    exact for single utterances (no padding)."""
    student.classifier.save_pretrained(directory)
    feature_extractor(normalize=not student.whisper).save_pretrained(directory)
    for path in directory.iterdir():
        path.chmod(0o644)  # safetensors writes its file private; others serve or copy the dir
    return directory
