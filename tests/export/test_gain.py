"""The exported graph normalises each utterance's level: the same clip at any gain, the same
answer, and an export whose graph does not is refused."""

import json

import numpy as np
import pytest

from emocore.model_dir import PARITY_CASES
from export import ParityError, build_model_dir
from export.parity import GAIN_TOLERANCE, GAINS, ParityReport, open_session, probe_signal, run_onnx


def test_onnx_answers_the_same_at_any_gain(student_and_dir):
    """Every front end, in a padded batch: each row at x0.1 and x10 (and a batch mixing them)
    gives the outputs of x1 within the gain tolerance (1e-3) and the same label."""
    student, out = student_and_dir
    session = open_session(out / "model.onnx")
    rows = [probe_signal(n, seed=n) for n in (student.min_samples, 16_000, 41_003)]
    plain = run_onnx(session, rows)
    for gains in ((0.1,) * 3, (10.0,) * 3, (0.1, 10.0, 1.0)):
        scaled = run_onnx(
            session, [row * np.float32(g) for row, g in zip(rows, gains, strict=True)]
        )
        for s, p in zip(scaled, plain, strict=True):
            assert np.abs(s - p).max() <= GAIN_TOLERANCE, gains
        assert (scaled[0].argmax(-1) == plain[0].argmax(-1)).all()
    parity = json.loads((out / "model.json").read_text())["parity"]
    assert parity["gains"] == list(GAINS) == [0.1, 10.0]
    assert parity["gain_tolerance"] == GAIN_TOLERANCE == 1e-3
    assert 0.0 <= parity["gain_max_abs_diff"] <= GAIN_TOLERANCE


@pytest.mark.parametrize("name", ["tiny-mel", "tiny-whisper"])
def test_a_graph_without_level_normalisation_is_refused(tmp_path, make_student, monkeypatch, name):
    """The control: with the normalisation taken out of the model, ONNX still matches PyTorch,
    but the gain check refuses the export and nothing is written."""
    import training.models.student
    import training.models.whisper_encoder

    monkeypatch.setattr(training.models.student, "masked_normalise", lambda audio, lengths: audio)
    monkeypatch.setattr(
        training.models.whisper_encoder, "normalise_level", lambda audio, lengths, level: audio
    )
    out = tmp_path / "model"
    with pytest.raises(ParityError, match=r"gain x0\.1/x10 vs x1") as refused:
        build_model_dir(make_student(name), out, hf=False)
    assert "ONNX vs PyTorch" not in str(refused.value)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def report(**figures) -> ParityReport:
    values = dict(
        tolerance=1e-4, max_abs_diff_logits=0.0, max_abs_diff_embedding=0.0,
        batching_max_abs_diff=0.0, gain_max_abs_diff=0.0, gain_tolerance=GAIN_TOLERANCE,
        gains=list(GAINS), cases=[list(PARITY_CASES[0])],
    )  # fmt: skip
    return ParityReport(**(values | figures))


def test_the_gain_figure_has_its_own_tolerance():
    """A gain drift above the parity tolerance but within the gain tolerance passes; above the
    gain tolerance it is refused, and the message names the figure."""
    report(gain_max_abs_diff=5e-4).check()
    with pytest.raises(
        ParityError, match=r"gain x0\.1/x10 vs x1 \(ONNX, tolerance 0\.001\): 0\.002"
    ):
        report(gain_max_abs_diff=2e-3).check()
    assert report(gain_max_abs_diff=2e-3).to_json()["gain_max_abs_diff"] == 2e-3
