"""Classification metrics for SER: UA (macro recall), WA (accuracy), macro-F1, confusion matrix."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def confusion_matrix(
    y_true: Sequence[str | int], y_pred: Sequence[str | int], labels: Sequence[str | int]
) -> np.ndarray:
    """Counts [true, predicted] in ``labels`` order; labels outside ``labels`` are an error."""
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true has {len(y_true)} items, y_pred {len(y_pred)}")
    index = {label: i for i, label in enumerate(labels)}
    unknown = sorted({str(y) for y in (*y_true, *y_pred) if y not in index})
    if unknown:
        raise ValueError(f"labels not in {list(labels)}: {unknown}")
    matrix = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for t, p in zip(y_true, y_pred, strict=True):
        matrix[index[t], index[p]] += 1
    return matrix


def _safe_divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    # A class with no true (or no predicted) items scores 0, as in sklearn's zero_division=0.
    return np.divide(num, den, out=np.zeros_like(num, dtype=np.float64), where=den > 0)


def compute_metrics(
    y_true: Sequence[str | int], y_pred: Sequence[str | int], labels: Sequence[str | int]
) -> dict:
    """UA = mean per-class recall over classes present in y_true; WA = accuracy.

    Returns {"ua", "wa", "macro_f1", "confusion" (list of lists, rows = true), "recall"
    ({label: recall}), "support" ({label: count}), "n"}.
    """
    matrix = confusion_matrix(y_true, y_pred, labels)
    support = matrix.sum(axis=1)
    predicted = matrix.sum(axis=0)
    hits = np.diag(matrix).astype(np.float64)
    recall = _safe_divide(hits, support)
    precision = _safe_divide(hits, predicted)
    f1 = _safe_divide(2 * precision * recall, precision + recall)
    present = support > 0
    total = int(matrix.sum())
    return {
        "ua": float(recall[present].mean()) if present.any() else 0.0,
        "wa": float(hits.sum() / total) if total else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "confusion": matrix.tolist(),
        "recall": {str(label): float(r) for label, r in zip(labels, recall, strict=True)},
        "support": {str(label): int(s) for label, s in zip(labels, support, strict=True)},
        "n": total,
    }


def plot_confusion(
    confusion: Sequence[Sequence[int]], labels: Sequence[str], path: str | Path, title: str = ""
) -> Path:
    """Write the confusion matrix as a PNG: row-normalised colours, raw counts in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = np.asarray(confusion, dtype=np.int64)
    rates = _safe_divide(counts.astype(np.float64), counts.sum(axis=1, keepdims=True))
    fig, ax = plt.subplots(figsize=(1.2 * len(labels) + 2, 1.2 * len(labels) + 1.5))
    ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(labels)), labels=list(labels), rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels=list(labels))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title)
    for i in range(counts.shape[0]):
        for j in range(counts.shape[1]):
            color = "white" if rates[i, j] > 0.5 else "black"
            ax.text(
                j, i, f"{counts[i, j]}\n{rates[i, j]:.0%}", ha="center", va="center", color=color
            )
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def ccc_per_dimension(pred: np.ndarray, truth: np.ndarray) -> list[float]:
    """Lin's concordance correlation coefficient per column of [N, D] predictions and ratings,
    over the rows whose ratings have no NaN (unrated utterances are left out); NaN per column
    with fewer than 2 rated rows."""
    pred, truth = np.asarray(pred, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    rated = ~np.isnan(truth).any(-1)
    if rated.sum() < 2:
        return [float("nan")] * truth.shape[-1]
    p, t = pred[rated], truth[rated]
    cov = ((p - p.mean(0)) * (t - t.mean(0))).mean(0)
    denominator = p.var(0) + t.var(0) + (p.mean(0) - t.mean(0)) ** 2
    return [float(v) for v in 2 * cov / np.maximum(denominator, 1e-12)]
