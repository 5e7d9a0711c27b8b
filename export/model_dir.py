"""Build the model directory (docs/export.md): model.onnx, model.json, hf/, optional int8 + Triton."""

from __future__ import annotations

import json
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import transformers

from emocore.audio import SAMPLE_RATE
from emocore.model_dir import (
    FORMAT_VERSION,
    HF_DIR,
    INT8_FILE,
    MAX_SECONDS,
    META_FILE,
    MODEL_FILE,
    TOLERANCE,
    sha256_file,
)
from export.hf_checkpoint import save_hf
from export.onnx_export import OPSET, export_onnx
from export.parity import measure_parity
from training.models.student import Student


def file_entry(path: Path) -> dict:
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}


def exporter_info() -> dict:
    return {
        "name": "torch.onnx.export (TorchScript, dynamo=False)",
        "opset": OPSET,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


def build_model_dir(
    student: Student,
    out_dir: Path | str,
    *,
    summary: dict | None = None,
    int8: bool = False,
    calibration: list[np.ndarray] | None = None,
    calibration_labels: list[int] | None = None,
    triton_dir: Path | str | None = None,
    tolerance: float = TOLERANCE,
    hf: bool = True,
    int8_check: dict | None = None,
    int8_max_ua_drop: float | None = None,
    calibration_info: dict | None = None,
    int8_limits: dict | None = None,
) -> Path:
    """Export, check parity, and only then write ``out_dir`` (replacing an earlier model dir).

    ``calibration`` is validation audio (float32 16 kHz rows) for the int8 scales and its
    agreement figures; ``calibration_labels`` (class indices) adds the UA of fp32 and int8.
    ``int8_check`` ({"audio", "labels", "speakers"}, clips disjoint from ``calibration``)
    moves those figures to held-out clips and gates: int8 more than ``int8_max_ua_drop`` UA
    below fp32 there is not shipped (model.json records why). ``calibration_info``
    ({"speakers", "source"}) names the calibration audio in model.json. ``int8_limits``
    (``max_dimensions_diff``, ``max_ccc_drop``) gates the dimensions the same way.
    Raises ``ParityError`` (and writes nothing) above ``tolerance``.
    """
    out_dir = Path(out_dir)
    check_replaceable(out_dir)  # fail before minutes of export, not after
    student = student.eval()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; a server may run as another user
    try:
        model_path = export_onnx(student, staging / MODEL_FILE)
        parity = measure_parity(student, model_path, tolerance=tolerance)
        parity.check()
        files = {MODEL_FILE: file_entry(model_path)}
        int8_meta = None
        if int8:
            from export.quantize import INT8_MAX_UA_DROP, quantize_model

            int8_meta = quantize_model(
                model_path, staging / INT8_FILE, calibration, calibration_labels, tolerance,
                min_samples=student.min_samples, check=int8_check,
                max_ua_drop=INT8_MAX_UA_DROP if int8_max_ua_drop is None else int8_max_ua_drop,
                calibration_info=calibration_info, **(int8_limits or {}),
            )  # fmt: skip
            if int8_meta["accepted"]:
                files[INT8_FILE] = file_entry(staging / INT8_FILE)
            else:  # the accuracy check gates: a worse int8 model is not shipped
                (staging / INT8_FILE).unlink()
        if hf:
            save_hf(student, staging / HF_DIR)
        meta = {
            "format_version": FORMAT_VERSION,
            "labels": student.labels,
            "sample_rate": SAMPLE_RATE,
            "min_samples": student.min_samples,
            "max_samples": student.max_samples,
            "max_seconds": MAX_SECONDS,
            "backbone": (summary or {}).get("backbone") or student.config.model_type,
            "embedding_dim": student.embedding_dim,
            # Logits already divided by it (in the graph): probabilities are calibrated as is.
            "temperature": getattr(student.config, "calibration_temperature", None),
            # Only with the regression head: the third output's names (in order) and scale.
            **({"dimensions": student.dimensions} if student.dimensions else {}),
            "files": files,
            "parity": parity.to_json(),
            "int8": int8_meta,
            "training": summary,
            # The corpora it learned from and their licences' terms ("non-commercial" when a
            # corpus's licence forbids commercial use), said again by /v1/model and the page.
            "corpora": (summary or {}).get("corpora") or [],
            "usage": (summary or {}).get("usage"),
            "exporter": exporter_info(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        (staging / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        replace_dir(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if triton_dir is not None:
        from export.triton import write_triton_repo

        write_triton_repo(out_dir, Path(triton_dir))
    return out_dir


def check_replaceable(out_dir: Path) -> None:
    """Only an empty folder or an earlier model directory may be replaced."""
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / META_FILE).exists():
        raise FileExistsError(f"{out_dir} exists and is not a model directory; not replacing it")


def replace_dir(staging: Path, out_dir: Path) -> None:
    """Move the finished directory into place."""
    check_replaceable(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    staging.rename(out_dir)
