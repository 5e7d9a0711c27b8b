"""The model directory contract (docs/export.md) and the export defaults, in one place."""

from __future__ import annotations

from server.audio import MIN_SAMPLES, SAMPLE_RATE

FORMAT_VERSION = 1
MODEL_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
META_FILE = "model.json"
HF_DIR = "hf"

INPUTS = ("audio", "lengths")
OUTPUTS = ("logits", "embedding")
# The optional third output: [batch, 3] arousal, valence, dominance in the scale's units, written
# only for a student with the regression head (model.json then has a "dimensions" entry).
DIMENSIONS_OUTPUT = "dimensions"
DYNAMIC_AXES = {
    "audio": {0: "batch", 1: "samples"},
    "lengths": {0: "batch"},
    "logits": {0: "batch"},
    "embedding": {0: "batch"},
    DIMENSIONS_OUTPUT: {0: "batch"},
}


def output_names(dimensions: bool) -> tuple[str, ...]:
    """The graph's outputs, in order: with ``dimensions`` the third one is added."""
    return (*OUTPUTS, DIMENSIONS_OUTPUT) if dimensions else OUTPUTS


# The TorchScript exporter gives the fastest ORT graph here (docs/export.md); dynamo's SDPA
# translation adds NaN guards over the full T x T attention matrix and needs opset >= 18.
OPSET = 17
TOLERANCE = 1e-4  # fp32 ORT vs PyTorch, and batched vs alone


def parity_cases(min_samples: int = MIN_SAMPLES) -> tuple[tuple[int, ...], ...]:
    """Batches of utterance lengths in samples, 0.5 s to 20 s, batch 1 to 4, mixed lengths and
    the model's shortest legal row (``min_samples``; shorter rows crash its feature encoder)."""
    return (
        (SAMPLE_RATE // 2,),
        (20 * SAMPLE_RATE,),
        (3 * SAMPLE_RATE, SAMPLE_RATE // 2, 7 * SAMPLE_RATE + 123),
        (max(min_samples, MIN_SAMPLES), 2 * SAMPLE_RATE, 20 * SAMPLE_RATE, 11_111),
    )


# The cases of the raw-waveform encoders (HuBERT / wav2vec 2.0: 400 samples minimum).
PARITY_CASES = parity_cases()
# The longest length export verified; the server's recommended utterance limit.
MAX_SECONDS = max(max(case) for case in PARITY_CASES) / SAMPLE_RATE

__all__ = ["MIN_SAMPLES", "SAMPLE_RATE"]
