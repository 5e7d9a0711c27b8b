"""Confidence calibration: a temperature fitted on the validation speakers, ECE and NLL.

Temperature scaling (Guo et al., ICML 2017) divides the logits by one scalar T > 0 chosen to
minimise the negative log-likelihood on held-out data; the predicted class never changes, only
how sure the model says it is. ``fold_temperature`` writes 1/T into the student's last linear
layer, so every artefact exported from it (ONNX fp32 and int8, the ``hf/`` checkpoint, the
Triton repository) gives the calibrated probabilities with no extra step anywhere.

ECE (expected calibration error) is the gap between confidence and accuracy, averaged over 15
equal-width confidence bins weighted by their share of utterances.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from emocore.scoring import softmax

ECE_BINS = 15
# log T is searched in this range (T from ~0.05 to ~20): wide enough for any sane classifier.
LOG_T_RANGE = (-3.0, 3.0)


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the true labels at temperature T."""
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    scaled = scaled - scaled.max(-1, keepdims=True)
    log_z = np.log(np.exp(scaled).sum(-1))
    labels = np.asarray(labels)
    return float((log_z - scaled[np.arange(len(labels)), labels]).mean())


def binned(
    logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0, bins: int = ECE_BINS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(top-class confidence, correct, bin index) per utterance; bin b holds confidences in
    (b/bins, (b+1)/bins] (a confidence is always above 1/classes > 0)."""
    probs, confidence, which = _confidence_bins(logits, temperature, bins)
    return confidence, probs.argmax(-1) == np.asarray(labels), which


def _confidence_bins(
    logits: np.ndarray, temperature: float, bins: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(probabilities, top-class confidence, its bin) per utterance."""
    probs = softmax(np.asarray(logits, dtype=np.float64) / temperature)
    confidence = probs.max(-1)
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    return probs, confidence, which


def ece(
    logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0, bins: int = ECE_BINS
) -> float:
    """Expected calibration error of the top-class confidence, ``bins`` equal-width bins."""
    confidence, correct, which = binned(logits, labels, temperature, bins)
    return _ece_of(confidence, correct, which, bins)


def _ece_of(confidence: np.ndarray, correct: np.ndarray, which: np.ndarray, bins: int) -> float:
    total = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            total += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(total)


def ece_floor(
    logits: np.ndarray,
    temperature: float = 1.0,
    draws: int = 1000,
    seed: int = 0,
    bins: int = ECE_BINS,
) -> dict[str, float]:
    """The ECE a perfectly calibrated model would show on these utterances: each is right with
    exactly its top-class confidence (drawn ``draws`` times), binned as ``ece`` bins. On a
    hundred utterances the bins hold a handful each and the floor is several points: a
    measured ECE inside its spread says nothing against the calibration. Mean, 5th and 95th
    percentile of the draws."""
    _, confidence, which = _confidence_bins(logits, temperature, bins)
    rng = np.random.default_rng(seed)
    values = np.array(
        [_ece_of(confidence, rng.random(len(confidence)) < confidence, which, bins)
         for _ in range(draws)]
    )  # fmt: skip
    return {
        "mean": float(values.mean()),
        "p5": float(np.percentile(values, 5)),
        "p95": float(np.percentile(values, 95)),
    }


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T > 0 minimising validation NLL: NLL(log T) is convex-shaped in practice, and a
    golden-section search over ``LOG_T_RANGE`` needs no gradients or learning rate."""
    if len(labels) == 0:
        raise ValueError("cannot fit a temperature on no utterances")
    lo, hi = LOG_T_RANGE
    ratio = (np.sqrt(5.0) - 1.0) / 2.0
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = nll(logits, labels, np.exp(a)), nll(logits, labels, np.exp(b))
    while hi - lo > 1e-4:
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = nll(logits, labels, np.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = nll(logits, labels, np.exp(b))
    return float(np.exp((lo + hi) / 2.0))


SELECTIVE_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def selective(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> list[dict]:
    """For each candidate ``min_confidence``: the share of utterances answered with confidence
    at or above it (coverage) and their accuracy; how to choose the server's threshold."""
    confidence, correct, _ = binned(logits, labels, temperature)
    rows = []
    for threshold in SELECTIVE_THRESHOLDS:
        kept = confidence >= threshold
        rows.append(
            {
                "min_confidence": threshold,
                "coverage": float(kept.mean()),
                "accuracy": float(correct[kept].mean()) if kept.any() else None,
            }
        )
    return rows


def test_calibration(logits: np.ndarray, labels: np.ndarray, t: float) -> dict:
    """ECE and NLL of test logits before (T = 1) and after the temperature ``t``."""
    return {
        "test_ece_before": ece(logits, labels),
        "test_ece_after": ece(logits, labels, t),
        "test_nll_before": nll(logits, labels),
        "test_nll_after": nll(logits, labels, t),
    }


def calibration_report(
    valid_logits: np.ndarray,
    valid_labels: np.ndarray,
    test_logits: np.ndarray,
    test_labels: np.ndarray,
) -> dict:
    """T fitted on validation; test ECE and NLL before (T = 1) and after."""
    t = fit_temperature(valid_logits, valid_labels)
    return {
        "temperature": t,
        **test_calibration(test_logits, test_labels, t),
        # What the exported (calibrated) model does on the validation speakers at each threshold.
        "valid_selective": selective(valid_logits, valid_labels, t),
    }


@torch.no_grad()
def fold_temperature(student, temperature: float) -> None:
    """Divide the student's logits by T inside the model: its last linear layer is scaled by 1/T
    (the argmax, so accuracy, is unchanged). Records T in the config for the model card."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    head = student.classifier.classifier
    head.weight.div_(temperature)
    head.bias.div_(temperature)
    student.config.calibration_temperature = float(temperature)


def plot_reliability(
    logits: np.ndarray, labels: np.ndarray, temperature: float, path: Path, title: str
) -> Path:
    """Reliability diagram: accuracy per confidence bin before and after temperature scaling."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    edges = np.linspace(0.0, 1.0, ECE_BINS + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    for t, name, style in (
        (1.0, "before", "o--"),
        (temperature, f"after (T={temperature:.2f})", "s-"),
    ):
        _, correct, which = binned(logits, labels, t)
        acc = [
            correct[which == b].mean() if (which == b).any() else np.nan for b in range(ECE_BINS)
        ]
        ax.plot(centres, acc, style, label=f"{name}, ECE {100 * ece(logits, labels, t):.1f}%")
    ax.plot([0, 1], [0, 1], color="grey", linewidth=0.8)
    ax.set(xlabel="confidence", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1), title=title)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
