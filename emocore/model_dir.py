"""The model directory: the one contract between export (which writes it) and every consumer
(the server, the offline scorer, Triton), and the checks a directory passes before it is served.

Layout and model.json fields: docs/export.md.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emocore.audio import MIN_SAMPLES, SAMPLE_RATE

FORMAT_VERSION = 1
MODEL_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
META_FILE = "model.json"
HF_DIR = "hf"
INPUT_NAMES = ("audio", "lengths")
OUTPUT_NAMES = ("logits", "embedding")
# The optional third output: affect dimensions [batch, len(names)] in the scale's units,
# declared by model.json's "dimensions" key (absent or null: the model has none and the output
# is never run).
DIMENSIONS_OUTPUT = "dimensions"
# fp32 ONNX Runtime vs PyTorch, and batched vs alone: the exact-batching bound of
# docs/export.md (also used when model.json records no parity tolerance).
TOLERANCE = 1e-4


def output_names(dimensions: bool) -> tuple[str, ...]:
    """The graph's outputs, in order: with ``dimensions`` the third one is added."""
    return (*OUTPUT_NAMES, DIMENSIONS_OUTPUT) if dimensions else OUTPUT_NAMES


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
# The longest length export verifies; the server's recommended utterance limit.
MAX_SECONDS = max(max(case) for case in PARITY_CASES) / SAMPLE_RATE
_REQUIRED_KEYS = ("format_version", "labels", "sample_rate", "min_samples", "files")


def pad_batch(clips: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Mono clips -> zero-padded audio [B, T] float32 + lengths [B] int64: the model.onnx
    inputs, as every consumer and the export's parity check feed them."""
    lengths = np.array([len(clip) for clip in clips], dtype=np.int64)
    audio = np.zeros((len(clips), int(lengths.max())), dtype=np.float32)
    for row, clip in enumerate(clips):
        audio[row, : len(clip)] = clip
    return audio, lengths


class ModelDirError(RuntimeError):
    """A model directory that cannot be served; the message says what to fix."""


@dataclass(frozen=True)
class Dimensions:
    """model.json ``dimensions``: the names of the graph's ``dimensions`` columns, in order,
    and the scale their values are in (e.g. arousal, valence, dominance on 1-5)."""

    names: tuple[str, ...]
    scale: tuple[float, float]

    def describe(self) -> dict:
        return {"names": list(self.names), "scale": list(self.scale)}


def parse_dimensions(value: object, where: Path) -> Dimensions | None:
    """model.json's optional ``dimensions`` key, checked; None when absent or null."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ModelDirError(f"{where}: dimensions must be null or an object with names and scale")
    names, scale = value.get("names"), value.get("scale")
    if not (isinstance(names, list) and names and all(isinstance(n, str) and n for n in names)):
        raise ModelDirError(f"{where}: dimensions.names must be a non-empty list of strings")
    if len(set(names)) != len(names):
        raise ModelDirError(f"{where}: dimensions.names repeat ({names})")
    numbers = isinstance(scale, list) and len(scale) == 2
    numbers = numbers and all(
        isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) for x in scale
    )
    if not (numbers and scale[0] < scale[1]):
        raise ModelDirError(
            f"{where}: dimensions.scale must be two increasing numbers [low, high]; got {scale!r}"
        )
    return Dimensions(tuple(names), (float(scale[0]), float(scale[1])))


@dataclass(frozen=True)
class ModelDir:
    path: Path
    meta: dict
    onnx_path: Path
    int8: bool
    dimensions: Dimensions | None = None

    @property
    def labels(self) -> list[str]:
        return list(self.meta["labels"])

    @property
    def sample_rate(self) -> int:
        return int(self.meta["sample_rate"])

    @property
    def min_samples(self) -> int:
        return int(self.meta["min_samples"])

    @property
    def max_samples(self) -> int | None:
        """The longest input the graph accepts (Whisper's 30 s position table), None if any."""
        value = self.meta.get("max_samples")
        return None if value is None else int(value)

    def check_limits(self, **seconds: float) -> None:
        """Every named length limit (seconds) must fit the model's longest input."""
        if self.max_samples is None:
            return
        longest = self.max_samples / self.sample_rate
        over = {name: value for name, value in seconds.items() if value > longest}
        if over:
            named = ", ".join(f"{name}={value:g}" for name, value in over.items())
            raise ModelDirError(
                f"{named}: this model accepts at most {longest:g} s per utterance "
                f"(model.json max_samples {self.max_samples}); lower the setting"
            )

    @property
    def batch_invariant(self) -> bool:
        """Whether padded batches give each utterance its unbatched answer.

        fp32 exports are exact by contract. Dynamic int8 is not (activation scales span the
        batch): it is batched only if the export measured its drift within tolerance.
        """
        if not self.int8:
            return True
        int8 = self.meta.get("int8") or {}
        if isinstance(int8.get("batch_invariant"), bool):
            return int8["batch_invariant"]
        tolerance = float((self.meta.get("parity") or {}).get("tolerance", TOLERANCE))
        drift = int8.get("batching_max_abs_diff")
        return drift is not None and float(drift) <= tolerance

    def summary(self) -> dict:
        """The model.json fields a client cares about (no file hashes or paths)."""
        keys = (
            "format_version",
            "labels",
            "sample_rate",
            "min_samples",
            "max_seconds",
            "backbone",
            "embedding_dim",
            "parity",
            "int8",
            "training",
            "corpora",
            "usage",
            "exporter",
            "created",
        )
        return {key: self.meta.get(key) for key in keys} | {
            "dimensions": self.dimensions.describe() if self.dimensions else None,
            "variant": "int8" if self.int8 else "fp32",
        }


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def int8_accepted(meta: dict) -> bool:
    """Whether the export wrote ``model.int8.onnx`` and its accuracy gate passed on held-out
    clips (``int8.evaluated_on_calibration_clips`` false): what ``int8=None`` (auto) serves."""
    entry = meta.get("int8") or {}
    files = meta.get("files") if isinstance(meta.get("files"), dict) else {}
    return (
        INT8_FILE in files
        and entry.get("accepted") is True
        and entry.get("evaluated_on_calibration_clips") is False
    )


def load_model_dir(path: str | Path, *, int8: bool | None = False) -> ModelDir:
    """Validate ``path`` (model.json keys, file presence, sha256) and return its description.
    ``int8`` None: the int8 model when the export's gate accepted it (``int8_accepted``)."""
    path = Path(path)
    if not path.is_dir():
        raise ModelDirError(
            f"model directory {path} does not exist; build one with `make demo-model` or "
            f"`python -m export --run RUN --out {path}`, or set EMODISTILL_MODEL_DIR"
        )
    meta_path = path / META_FILE
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelDirError(f"{meta_path} is missing: {path} is not a model directory") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelDirError(f"{meta_path} is not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise ModelDirError(f"{meta_path} must hold a JSON object")
    missing = [key for key in _REQUIRED_KEYS if key not in meta]
    if missing:
        raise ModelDirError(f"{meta_path} lacks {', '.join(missing)}")
    if meta["format_version"] != FORMAT_VERSION:
        raise ModelDirError(
            f"{meta_path} has format_version {meta['format_version']!r}; this server reads {FORMAT_VERSION}"
        )
    labels = meta["labels"]
    if not (isinstance(labels, list) and labels and all(isinstance(x, str) for x in labels)):
        raise ModelDirError(f"{meta_path}: labels must be a non-empty list of strings")
    if len(set(labels)) != len(labels):
        raise ModelDirError(f"{meta_path}: labels repeat ({labels})")
    if meta["sample_rate"] != 16_000:
        raise ModelDirError(
            f"{meta_path}: sample_rate {meta['sample_rate']} (this server feeds 16000)"
        )
    if not (isinstance(meta["min_samples"], int) and meta["min_samples"] > 0):
        raise ModelDirError(f"{meta_path}: min_samples must be a positive integer")
    longest = meta.get("max_samples")
    if longest is not None and not (isinstance(longest, int) and longest >= meta["min_samples"]):
        raise ModelDirError(f"{meta_path}: max_samples must be null or an integer >= min_samples")
    dimensions = parse_dimensions(meta.get("dimensions"), meta_path)

    if int8 is None:
        int8 = int8_accepted(meta)
    name = INT8_FILE if int8 else MODEL_FILE
    entry = meta["files"].get(name) if isinstance(meta["files"], dict) else None
    if entry is None:
        hint = (
            " (this model was exported without int8; set EMODISTILL_INT8=auto or false)"
            if int8
            else ""
        )
        raise ModelDirError(f"{meta_path} lists no {name}{hint}")
    onnx_path = path / name
    if not onnx_path.is_file():
        raise ModelDirError(f"{onnx_path} is missing")
    actual = sha256_file(onnx_path)
    if actual != entry.get("sha256"):
        raise ModelDirError(
            f"{onnx_path} does not match model.json (sha256 {actual[:12]}..., expected "
            f"{str(entry.get('sha256'))[:12]}...): the file is corrupt or was replaced; re-export"
        )
    return ModelDir(path=path, meta=meta, onnx_path=onnx_path, int8=int8, dimensions=dimensions)
