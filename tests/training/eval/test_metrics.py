import numpy as np
import pytest

from training.eval.metrics import compute_metrics, confusion_matrix, plot_confusion

LABELS = ("neutral", "happy", "angry", "sad")


def test_hand_computed_example():
    # neutral: 3 true, 2 right; happy: 2 true, 1 right; angry: 1 true, 1 right; sad: 2 true, 0 right.
    y_true = ["neutral", "neutral", "neutral", "happy", "happy", "angry", "sad", "sad"]
    y_pred = ["neutral", "neutral", "happy", "happy", "neutral", "angry", "angry", "neutral"]
    m = compute_metrics(y_true, y_pred, LABELS)
    assert m["confusion"] == [[2, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [1, 0, 1, 0]]
    assert m["recall"] == {"neutral": 2 / 3, "happy": 1 / 2, "angry": 1.0, "sad": 0.0}
    assert m["ua"] == pytest.approx((2 / 3 + 1 / 2 + 1 + 0) / 4)
    assert m["wa"] == pytest.approx(4 / 8)
    # precision: neutral 2/4, happy 1/2, angry 1/2, sad 0 (no predictions)
    f1 = [2 * (0.5 * 2 / 3) / (0.5 + 2 / 3), 0.5, 2 * 0.5 / 1.5, 0.0]
    assert m["macro_f1"] == pytest.approx(np.mean(f1))
    assert m["support"] == {"neutral": 3, "happy": 2, "angry": 1, "sad": 2}
    assert m["n"] == 8


def test_ua_differs_from_wa_on_imbalanced_data():
    y_true = ["neutral"] * 9 + ["sad"]
    y_pred = ["neutral"] * 10
    m = compute_metrics(y_true, y_pred, LABELS)
    assert m["wa"] == pytest.approx(0.9)
    assert m["ua"] == pytest.approx(0.5)  # classes absent from y_true do not count


def test_perfect_and_integer_labels():
    m = compute_metrics([0, 1, 2, 3], [0, 1, 2, 3], range(4))
    assert m["ua"] == m["wa"] == m["macro_f1"] == 1.0


def test_errors():
    with pytest.raises(ValueError, match="labels not in"):
        confusion_matrix(["joy"], ["sad"], LABELS)
    with pytest.raises(ValueError, match="items"):
        confusion_matrix(["sad"], [], LABELS)


def test_plot_confusion_writes_png(tmp_path):
    path = plot_confusion(
        [[5, 1, 0, 0], [0, 3, 2, 0], [0, 0, 4, 0], [1, 0, 0, 0]], LABELS, tmp_path / "cm.png"
    )
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000
