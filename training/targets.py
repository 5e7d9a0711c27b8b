"""Teacher targets: teachers run once over the training (and validation) utterances; their
logits and embeddings are cached in ``RUN/folds/<fold>/targets/<teacher>.npz`` (keyed by
utterance id), so distillation epochs never run a teacher. Which teacher produced which
utterance's target (cross-fitted or in-sample) is decided in ``training.distill``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from training.data.utterance import Utterance
from training.teachers import LinguisticTeacher, ProsodicTeacher
from training.teachers.fit import predict
from training.teachers.linguistic import make_collate, texts
from training.teachers.prosodic import collate as prosodic_collate


def target_path(targets_dir: Path, teacher: str) -> Path:
    return targets_dir / f"{teacher}.npz"


def _write(path: Path, ids: Sequence[str], logits: np.ndarray, embedding: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(
        tmp,
        ids=np.asarray(ids),
        logits=logits.astype(np.float32),
        embedding=embedding.astype(np.float32),
    )
    tmp.replace(path)  # atomic: a killed run never leaves half a target file


def write_targets(
    path: Path, ids: Sequence[str], logits: np.ndarray, embedding: np.ndarray
) -> None:
    """The cached targets of one teacher (atomic)."""
    _write(path, ids, logits, embedding)


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
    """{teacher: {"logits": [N, C], "embedding": [N, D]}} in the order of ``ids``."""
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
        order = np.array([row[i] for i in ids])
        out[teacher] = {"logits": data["logits"][order], "embedding": data["embedding"][order]}
    return out
