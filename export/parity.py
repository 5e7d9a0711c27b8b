"""The parity gate: ONNX Runtime vs PyTorch, batched vs alone, and gain, over padded batches."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from emocore.audio import MIN_SAMPLES
from emocore.model_dir import TOLERANCE, output_names, parity_cases
from emocore.model_dir import pad_batch as model_inputs
from training.models.student import Student

# Each case is run again with its rows scaled by these gains, alternately (row i by GAINS[i % 2]
# in one run, by the other gain in the next), so every row is heard at both and each batch mixes
# them. The model directory contract promises per-utterance level normalisation in the graph.
GAINS = (0.1, 10.0)
# Largest difference of any output at those gains from the clip at gain 1 (ONNX). Looser than the
# parity tolerance: the normalisations' variance floor (1e-7, about -70 dBFS RMS) makes the
# quieter copy differ slightly (<= 3e-5 measured on real speech, Whisper tiny.en). Without the
# normalisation, Whisper tiny.en students moved their logits by 0.02 to 0.15 at these gains and
# the tiny random Whisper config its embedding by 9e-3.
GAIN_TOLERANCE = 1e-3


class ParityError(RuntimeError):
    """The exported graph disagrees with PyTorch (or with itself across batches or gains)."""


@dataclass(frozen=True)
class ParityReport:
    tolerance: float
    max_abs_diff_logits: float
    max_abs_diff_embedding: float
    batching_max_abs_diff: float
    gain_max_abs_diff: float
    gain_tolerance: float
    gains: list[float]
    cases: list[list[int]]
    # Students with the dimensions head only (the key is left out of model.json otherwise).
    max_abs_diff_dimensions: float | None = None

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def check(self) -> None:
        """Raise ParityError when any measured difference exceeds its tolerance."""
        worst = {
            "ONNX vs PyTorch logits": self.max_abs_diff_logits,
            "ONNX vs PyTorch embedding": self.max_abs_diff_embedding,
            "batched vs alone (ONNX)": self.batching_max_abs_diff,
        }
        if self.max_abs_diff_dimensions is not None:
            worst["ONNX vs PyTorch dimensions"] = self.max_abs_diff_dimensions
        failed = {
            f"{k} (tolerance {self.tolerance:g})": v
            for k, v in worst.items()
            if not v <= self.tolerance
        }
        if not self.gain_max_abs_diff <= self.gain_tolerance:
            gains = "/".join(f"x{g:g}" for g in self.gains)
            failed[f"gain {gains} vs x1 (ONNX, tolerance {self.gain_tolerance:g})"] = (
                self.gain_max_abs_diff
            )
        if failed:
            detail = ", ".join(f"{k}: {v:.3g}" for k, v in failed.items())
            raise ParityError(
                f"refusing to write the model directory: max abs difference above the "
                f"tolerance ({detail}; cases {self.cases})"
            )


def open_session(path: Path | str, threads: int | None = None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def pad_batch(rows: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Zero-padded float32 [batch, samples] + int64 lengths [batch]; rows must be >= MIN_SAMPLES."""
    if min(len(r) for r in rows) < MIN_SAMPLES:
        raise ValueError(f"rows shorter than {MIN_SAMPLES} samples crash the feature encoder")
    return model_inputs(rows)  # the padding every consumer feeds the model, checked here


def run_onnx(session: ort.InferenceSession, rows: Sequence[np.ndarray]) -> list[np.ndarray]:
    audio, lengths = pad_batch(rows)
    return session.run(None, {"audio": audio, "lengths": lengths})


def run_torch(student: Student, rows: Sequence[np.ndarray]) -> list[np.ndarray]:
    audio, lengths = pad_batch(rows)
    with torch.no_grad():
        outputs = student(torch.from_numpy(audio), torch.from_numpy(lengths))
    return [o.numpy() for o in outputs]


def probe_signal(length: int, seed: int) -> np.ndarray:
    """Noise plus a gliding tone at a speech-like level: deterministic, non-trivial audio."""
    rng = np.random.default_rng(seed)
    t = np.arange(length) / 16_000
    tone = 0.3 * np.sin(2 * np.pi * (120 + 80 * rng.random()) * t * (1 + 0.2 * t))
    return (0.05 * rng.standard_normal(length) + tone).astype(np.float32)


def batching_max_abs_diff(session: ort.InferenceSession, rows: Sequence[np.ndarray]) -> float:
    """Largest difference of any output (dimensions included) between a row in the padded batch
    and the row alone."""
    batched = run_onnx(session, rows)
    worst = 0.0
    for i, row in enumerate(rows):
        alone = run_onnx(session, [row])
        for b, a in zip(batched, alone, strict=True):
            worst = max(worst, float(np.abs(b[i] - a[0]).max()))
    return worst


def length_batches(
    rows: Sequence[np.ndarray], size: int = 8, max_ratio: float = 2.0
) -> list[list[np.ndarray]]:
    """Rows grouped as the server's batcher groups them: neighbours in length, at most ``size``
    per batch and the longest at most ``max_ratio`` times the shortest."""
    batches: list[list[np.ndarray]] = []
    for row in sorted(rows, key=len):
        if batches and len(batches[-1]) < size and len(row) <= max_ratio * len(batches[-1][0]):
            batches[-1].append(row)
        else:
            batches.append([row])
    return batches


def gain_max_abs_diff(
    session: ort.InferenceSession, rows: Sequence[np.ndarray], gains: Sequence[float] = GAINS
) -> float:
    """Largest difference of any output between the rows as given and the rows scaled, row i by
    ``gains[(i + shift) % len(gains)]`` for each shift (every row at every gain, mixed in a
    batch)."""
    plain = run_onnx(session, rows)
    worst = 0.0
    for shift in range(len(gains)):
        scaled = [row * np.float32(gains[(i + shift) % len(gains)]) for i, row in enumerate(rows)]
        for s, p in zip(run_onnx(session, scaled), plain, strict=True):
            worst = max(worst, float(np.abs(s - p).max()))
    return worst


def measure_parity(
    student: Student,
    onnx_path: Path,
    *,
    tolerance: float = TOLERANCE,
    cases: Sequence[Sequence[int]] | None = None,
) -> ParityReport:
    """Default cases: ``parity_cases`` down to the student's own shortest legal input."""
    cases = parity_cases(student.min_samples) if cases is None else cases
    session = open_session(onnx_path)
    student = student.eval()
    # ONNX vs PyTorch per output: logits, embedding (and dimensions when the student has them)
    diffs = [0.0] * len(output_names(student.dimension_head is not None))
    batching = gain = 0.0
    for c, case in enumerate(cases):
        rows = [probe_signal(n, seed=1000 * c + i) for i, n in enumerate(case)]
        pairs = zip(run_onnx(session, rows), run_torch(student, rows), strict=True)
        diffs = [max(d, float(np.abs(o - t).max())) for d, (o, t) in zip(diffs, pairs, strict=True)]
        if len(rows) > 1:
            batching = max(batching, batching_max_abs_diff(session, rows))
        gain = max(gain, gain_max_abs_diff(session, rows))
    return ParityReport(
        tolerance=tolerance,
        max_abs_diff_logits=diffs[0],
        max_abs_diff_embedding=diffs[1],
        batching_max_abs_diff=batching,
        gain_max_abs_diff=gain,
        gain_tolerance=GAIN_TOLERANCE,
        gains=list(GAINS),
        cases=[list(case) for case in cases],
        max_abs_diff_dimensions=diffs[2] if len(diffs) > 2 else None,
    )
