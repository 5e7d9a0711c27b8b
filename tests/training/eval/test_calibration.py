"""Temperature scaling, ECE and NLL; folding T into the student changes probabilities only."""

import numpy as np
import pytest
import torch

from training.data.utterance import EMOTIONS
from training.eval.calibration import (
    calibration_report,
    ece,
    ece_floor,
    fit_temperature,
    fold_temperature,
    nll,
    plot_reliability,
    softmax,
)
from training.models.student import Student, build_classifier


def overconfident(n: int, seed: int, true_t: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from softmax(z), reported logits true_t * z: a model too sure by true_t."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 1.5, size=(n, 4))
    labels = np.array([rng.choice(4, p=p) for p in softmax(z)])
    return true_t * z, labels


def test_fit_recovers_the_temperature_that_generated_the_labels():
    logits, labels = overconfident(4000, 0, true_t=3.0)
    assert fit_temperature(logits, labels) == pytest.approx(3.0, rel=0.1)
    logits, labels = overconfident(4000, 1, true_t=0.5)
    assert fit_temperature(logits, labels) == pytest.approx(0.5, rel=0.1)


def test_ece_and_nll_definitions():
    # Two utterances at confidence 0.9, one right and one wrong: one bin, |0.5 - 0.9| = 0.4.
    p = np.log(np.array([[0.9, 0.1 / 3, 0.1 / 3, 0.1 / 3]] * 2))
    assert ece(p, np.array([0, 1])) == pytest.approx(0.4, abs=1e-9)
    assert nll(p, np.array([0, 1])) == pytest.approx(-(np.log(0.9) + np.log(0.1 / 3)) / 2)
    # A calibrated model: ECE shrinks with the sample (sampling noise only).
    logits, labels = overconfident(20000, 2, true_t=1.0)
    assert ece(logits, labels) < 0.02


def test_the_floor_is_what_a_calibrated_model_scores_and_shrinks_with_the_sample():
    # Labels drawn from the model's own probabilities: a perfectly calibrated model. Its
    # measured ECE on 112 utterances sits inside the floor's spread, far above 0, and the floor
    # falls roughly as one over the square root of the sample.
    inside = 0
    for seed in range(20):
        logits, labels = overconfident(112, 100 + seed, true_t=1.0)
        floor = ece_floor(logits, draws=300, seed=seed)
        assert floor["p5"] < floor["mean"] < floor["p95"]
        inside += floor["p5"] <= ece(logits, labels) <= floor["p95"]
    assert inside >= 16  # ~90% expected
    small = ece_floor(overconfident(112, 0, true_t=1.0)[0], draws=300)["mean"]
    large = ece_floor(overconfident(11200, 0, true_t=1.0)[0], draws=50)["mean"]
    assert small > 0.05 and large < small / 5
    # The temperature applies as in ece: the same floor for logits / T at T = 1.
    logits = overconfident(200, 1)[0]
    assert ece_floor(logits, 2.0, draws=50) == ece_floor(logits / 2.0, draws=50)


def test_calibration_lowers_test_ece_and_nll_of_an_overconfident_model():
    valid, valid_y = overconfident(1500, 3)
    test, test_y = overconfident(1500, 4)
    report = calibration_report(valid, valid_y, test, test_y)
    assert report["temperature"] > 2.0
    assert report["test_ece_after"] < report["test_ece_before"] / 2
    assert report["test_nll_after"] < report["test_nll_before"]
    rows = report["valid_selective"]
    coverage = [r["coverage"] for r in rows]
    accuracy = [r["accuracy"] for r in rows if r["accuracy"] is not None]
    assert coverage == sorted(coverage, reverse=True) and coverage[0] <= 1.0
    assert accuracy[-1] > accuracy[0]  # a calibrated model is more often right when surer


def test_no_utterances_is_a_clear_error():
    with pytest.raises(ValueError, match="no utterances"):
        fit_temperature(np.zeros((0, 4)), np.zeros(0, dtype=int))


@pytest.mark.parametrize("name", ["tiny", "tiny-whisper"])
def test_folding_divides_the_logits_and_keeps_the_argmax(name):
    torch.manual_seed(0)
    student = Student(build_classifier(name, EMOTIONS)).eval()
    audio, lengths = torch.randn(3, 16_000) * 0.1, torch.tensor([16_000, 9_000, 4_000])
    with torch.no_grad():
        before, embedding = student(audio, lengths)
        fold_temperature(student, 2.5)
        after, embedding_after = student(audio, lengths)
    assert torch.allclose(after, before / 2.5, atol=1e-6)
    assert torch.equal(embedding, embedding_after)  # distillation's embedding is untouched
    assert student.config.calibration_temperature == 2.5
    with pytest.raises(ValueError, match="> 0"):
        fold_temperature(student, 0.0)


def test_reliability_diagram_is_written(tmp_path):
    logits, labels = overconfident(300, 5)
    path = plot_reliability(logits, labels, 3.0, tmp_path / "r.png", "demo")
    assert path.stat().st_size > 5_000
