"""Student -> ONNX graph with dynamic batch and time axes."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from emocore.audio import SAMPLE_RATE
from emocore.model_dir import DIMENSIONS_OUTPUT, INPUT_NAMES, output_names
from training.models.student import Student

EXPORTERS = ("torchscript", "dynamo")
# The TorchScript exporter gives the fastest ORT graph here (docs/export.md); dynamo's SDPA
# translation adds NaN guards over the full T x T attention matrix and needs opset >= 18.
OPSET = 17
DYNAMIC_AXES = {
    "audio": {0: "batch", 1: "samples"},
    "lengths": {0: "batch"},
    "logits": {0: "batch"},
    "embedding": {0: "batch"},
    DIMENSIONS_OUTPUT: {0: "batch"},
}


def example_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    """Two rows of different lengths, so the trace sees a real padded batch."""
    generator = torch.Generator().manual_seed(0)
    audio = torch.randn(2, 2 * SAMPLE_RATE, generator=generator)
    lengths = torch.tensor([2 * SAMPLE_RATE, SAMPLE_RATE + 321])
    audio[1, lengths[1] :] = 0
    return audio, lengths


def export_onnx(student: Student, path: Path, *, exporter: str = "torchscript") -> Path:
    """Write ``student`` (in eval mode) as one self-contained ONNX file; a student with the
    dimensions head gets the third output ``dimensions``."""
    if exporter not in EXPORTERS:
        raise ValueError(f"unknown exporter {exporter!r}; choose one of {EXPORTERS}")
    student = student.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    outputs = output_names(student.dimension_head is not None)
    common = dict(input_names=list(INPUT_NAMES), output_names=list(outputs))
    with torch.no_grad(), warnings.catch_warnings():
        # Tracer warnings about Python-side shape arithmetic in transformers' attention code;
        # the parity gate is what proves the graph right for other shapes.
        warnings.simplefilter("ignore")
        if exporter == "torchscript":
            torch.onnx.export(
                student,
                example_inputs(),
                str(path),
                opset_version=OPSET,
                dynamic_axes={
                    k: v for k, v in DYNAMIC_AXES.items() if k in (*INPUT_NAMES, *outputs)
                },
                dynamo=False,
                **common,
            )
        else:
            batch = torch.export.Dim("batch", min=1)
            samples = torch.export.Dim("samples", min=400)
            torch.onnx.export(
                student,
                example_inputs(),
                str(path),
                dynamic_shapes=({0: batch, 1: samples}, {0: batch}),
                dynamo=True,
                external_data=False,
                **common,
            )
    return path
