"""Training faults: a manifest with problems stops the command before any training with every
problem listed (no traceback); ``kill -9`` during a student's epoch resumes to the uninterrupted
run's final metrics (slow: two tiny runs as processes; ``make reliability`` runs it too)."""

from __future__ import annotations

import pytest

from tests.training.faults import TOLERANCE, bad_manifest, compare


def test_a_manifest_with_problems_fails_before_training_listing_each(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = bad_manifest(tmp_path / "work", in_process=True)
    assert result["exit_code"] == 2
    assert result["problems_listed"] == result["problems"]
    assert not result["traceback"] and not result["trained_anything"]


@pytest.mark.slow  # two tiny recipes as processes: about a minute on 2 idle cores
def test_kill_9_during_an_epoch_resumes_to_the_same_final_metrics(tmp_path):
    result = compare(tmp_path)
    assert result["killed_mid_student"], result
    assert result["resume_exit_code"] == 0, result["stderr_tail"]
    assert result["resumed_after_epoch"] is not None
    assert result["max_abs_difference"] <= TOLERANCE, result
