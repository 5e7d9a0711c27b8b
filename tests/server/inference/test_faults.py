"""Faults on a real ``python -m server`` process (the fast versions of ``make reliability``'s
fault cases; scenarios in tests/server/faults.py): a model that raises for some inputs, a
model directory of the wrong version, SIGTERM under load, ``kill -9`` and a restart.
Missing and corrupt model directories and a client gone while queued: test_process.py."""

from __future__ import annotations

from server.inference.batcher import FAILURES_UNREADY
from tests.server.faults import (
    bad_model_dirs,
    failing_batch,
    kill_and_restart,
    sigterm_under_load,
    start_failure,
)


def test_a_failing_batch_fails_alone_with_an_id_in_answer_and_log(tiny_model_dir, tmp_path):
    result = failing_batch(tiny_model_dir, tmp_path / "faulty")
    assert result["statuses"] == [200, 500, 200, 200]  # the 3 s clip's batch alone failed
    assert result["failed_code"] == "inference_failed" and result["batch_id_in_answer"]
    assert result["batch_id_in_log"]
    assert result["ready_after_one_failure"] == 200  # one failure is not a pattern
    assert result["repeated_failures"] == [500] * FAILURES_UNREADY
    assert result["ready_after_repeated"] == 503 and "failed in inference" in result["ready_reason"]
    assert result["served_after"] == 200 and result["ready_after_a_success"] == 200


def test_a_model_directory_of_another_version_is_one_clear_line(tiny_model_dir, tmp_path):
    failure = start_failure(bad_model_dirs(tiny_model_dir, tmp_path)["wrong_version"])
    assert failure.returncode == 2
    assert (
        failure.line.startswith("emodistill: cannot start") and "format_version 99" in failure.line
    )
    assert "Traceback" not in failure.stderr


def test_sigterm_under_load_answers_requests_and_drains_streams(tiny_model_dir):
    report = sigterm_under_load(tiny_model_dir, http_clients=12, streams=4, max_wait_ms=200)
    assert report.ok, report
    assert report.closing_events == 4 and report.exit_s < 20


def test_kill_9_under_load_then_restart_on_the_same_port(tiny_model_dir):
    report = kill_and_restart(tiny_model_dir, http_clients=4, max_wait_ms=500)
    assert sum(report.killed_answers.values()) == 4
    assert "200" not in report.killed_answers  # they were queued when the process died
    assert report.served_after == 200 and report.ready_s < 30


def test_requests_still_queued_when_the_grace_runs_out_get_503_not_500(tiny_model_dir):
    """More queued work than the grace period allows: what cannot finish in time is refused
    with 503 shutting_down + Retry-After before uvicorn's own deadline cancels it (a 500)."""
    report = sigterm_under_load(
        tiny_model_dir,
        http_clients=48,
        streams=0,
        clip_s=30,
        grace_s=4,
        threads=1,
        max_batch_size=1,
        request_timeout_s=300,
    )
    assert 500 not in report.http_status, report.http_status
    assert 503 in report.http_status  # the grace really was too short for the queue
    assert report.exit_code == 0 and report.exit_s < 4 + 3
