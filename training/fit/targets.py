"""Teacher targets: teachers run once over the training (and validation) utterances; their
logits and embeddings (and, for dimension distillation, their predicted arousal, valence and
dominance) are cached in ``RUN/folds/<fold>/targets/<teacher>.npz`` (keyed by utterance id), so
distillation epochs never run a teacher. Which teacher produced which utterance's target
(cross-fitted or in-sample) is decided in ``training.distill``.

A teacher predicts dimensions with a ridge regression on its (standardised) embedding, fitted
on the rated utterances it trained on (``DimensionProbe``; saved beside the teacher): the
teachers are trained for the categories only, and a closed-form linear read-out of what they
learnt adds no training run and no hyper-parameter search beyond ``RIDGE_ALPHA``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from training.data.utterance import DIMENSION_SCALE, Utterance
from training.fit.teachers import predict
from training.models.teachers import LinguisticTeacher, ProsodicTeacher
from training.models.teachers.linguistic import make_collate, texts
from training.models.teachers.prosodic import collate as prosodic_collate

log = logging.getLogger(__name__)

PROBE_FILE = "dimensions.npz"
RIDGE_ALPHA = 10.0  # on standardised embeddings: shrinks the read-out of a few hundred rows


def target_path(targets_dir: Path, teacher: str) -> Path:
    return targets_dir / f"{teacher}.npz"


def write_targets(
    path: Path,
    ids: Sequence[str],
    logits: np.ndarray,
    embedding: np.ndarray,
    dimensions: np.ndarray | None = None,
) -> None:
    """The cached targets of one teacher (atomic: a killed run never leaves half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"logits": logits, "embedding": embedding}
    if dimensions is not None:
        arrays["dimensions"] = dimensions
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, ids=np.asarray(ids), **{k: v.astype(np.float32) for k, v in arrays.items()})
    tmp.replace(path)


def has_dimensions(path: Path) -> bool:
    """Whether cached targets carry the teacher's dimensions."""
    with np.load(path) as data:
        return "dimensions" in data.files


class DimensionProbe:
    """Ridge regression from a teacher's embedding to (arousal, valence, dominance)."""

    def __init__(self, mean: np.ndarray, scale: np.ndarray, weight: np.ndarray, bias: np.ndarray):
        self.mean, self.scale, self.weight, self.bias = mean, scale, weight, bias

    @classmethod
    def fit(cls, embedding: np.ndarray, rated: np.ndarray, alpha: float = RIDGE_ALPHA):
        """Fitted on the rows of ``rated`` [N, 3] without NaN; raises when none is rated."""
        keep = ~np.isnan(rated).any(-1)
        if not keep.any():
            raise ValueError("no rated utterances to fit the teacher's dimensions on")
        x, y = embedding[keep].astype(np.float64), rated[keep].astype(np.float64)
        mean, scale = x.mean(0), x.std(0) + 1e-6
        z = (x - mean) / scale
        bias = y.mean(0)
        weight = np.linalg.solve(z.T @ z + alpha * np.eye(z.shape[1]), z.T @ (y - bias))
        return cls(mean, scale, weight, bias)

    def predict(self, embedding: np.ndarray) -> np.ndarray:
        """[N, 3] in scale units, clipped to the scale (a teacher's target stays a rating)."""
        out = ((embedding - self.mean) / self.scale) @ self.weight + self.bias
        return np.clip(out, *DIMENSION_SCALE).astype(np.float32)

    def save(self, path: Path) -> None:
        np.savez(path, mean=self.mean, scale=self.scale, weight=self.weight, bias=self.bias)

    @classmethod
    def load(cls, path: Path) -> DimensionProbe:
        with np.load(path) as data:
            return cls(data["mean"], data["scale"], data["weight"], data["bias"])


def linguistic_outputs(
    teacher_dir: Path, utts: Sequence[Utterance], max_tokens: int, batch_size: int, device: str
) -> tuple[np.ndarray, np.ndarray]:
    """(logits, embeddings) of the saved linguistic teacher on ``utts``' transcripts."""
    teacher, tokenizer = LinguisticTeacher.load(teacher_dir)
    return predict(teacher, make_collate(tokenizer, max_tokens), texts(utts), batch_size, device)


def prosodic_outputs(
    teacher_dir: Path, feats: Sequence[np.ndarray], batch_size: int, device: str
) -> tuple[np.ndarray, np.ndarray]:
    """(logits, embeddings) of the saved prosodic teacher on normalised LLDs."""
    teacher = ProsodicTeacher.load(teacher_dir)
    return predict(teacher, prosodic_collate, list(feats), batch_size, device)


def load_targets(
    targets_dir: Path, teachers: Sequence[str], ids: Sequence[str]
) -> dict[str, dict[str, np.ndarray]]:
    """{teacher: {"logits": [N, C], "embedding": [N, D] (, "dimensions": [N, 3])}} in the
    order of ``ids``."""
    out = {}
    for teacher in teachers:
        data = np.load(target_path(targets_dir, teacher))
        row = {str(i): k for k, i in enumerate(data["ids"])}
        missing = [i for i in ids if i not in row]
        if missing:
            raise KeyError(
                f"{teacher} targets lack {len(missing)} utterances, e.g. {missing[:3]}; "
                f"delete {target_path(targets_dir, teacher)} to recompute them"
            )
        order = np.array([row[i] for i in ids], dtype=int)
        out[teacher] = {k: data[k][order] for k in data.files if k != "ids"}
    return out


def without_scripted(
    targets: dict[str, dict[str, np.ndarray]], utts: Sequence[Utterance], scripted: Sequence[str]
) -> dict[str, dict[str, np.ndarray]]:
    """``targets`` with the linguistic teacher marked as not applying ("applies" 0: no KD,
    embedding or dimension term) on the utterances of ``scripted`` corpora, whose texts are
    fixed sentences spoken in every emotion (RAVDESS, TESS): there its words predict nothing,
    and distilling its near-uniform answer would only pull the student away from the prosody.
    The rows after ``utts`` (the transfer set appended to them) keep it."""
    if "ling" not in targets or not scripted:
        return targets
    applies = np.ones(len(targets["ling"]["logits"]), dtype=np.float32)
    applies[: len(utts)] = [u.corpus not in scripted for u in utts]
    left_out = int(len(utts) - applies[: len(utts)].sum())
    log.info(
        "linguistic teacher left out on %d of %d training utterances (scripted corpora: %s)",
        left_out, len(utts), ", ".join(scripted),
    )  # fmt: skip
    return {**targets, "ling": {**targets["ling"], "applies": applies}}
