"""Trained student -> model directory (ONNX + metadata). Imports torch; the server never imports it."""

from export.model_dir import build_model_dir
from export.parity import ParityError
from export.run import export_run

__all__ = ["ParityError", "build_model_dir", "export_run"]
