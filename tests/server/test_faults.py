"""Faults on a real ``python -m server`` process (the fast versions of ``make reliability``'s
fault cases; scenarios in tests/server/faults.py): a model that raises for some inputs, a
model directory of the wrong version, SIGTERM under load, ``kill -9`` and a restart.
Missing and corrupt model directories and a client gone while queued: test_process.py."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import httpx

from server.batcher import FAILURES_UNREADY
from tests.server.faults import (
    bad_model_dirs,
    faulty_model_dir,
    kill_and_restart,
    serve_logged,
    sigterm_under_load,
    start_failure,
    wav,
)

BATCH_ID = re.compile(r"batch (\d+)")


def test_a_failing_batch_fails_alone_with_an_id_in_answer_and_log(tiny_model_dir, tmp_path):
    model = faulty_model_dir(tiny_model_dir, tmp_path / "faulty", fail_from_s=2)
    good, bad = wav(1.0), wav(3.0)
    with serve_logged(model, max_wait_ms=200, max_batch_size=8, max_length_ratio=1.5) as (
        process,
        url,
    ):
        # Concurrent: the 1 s clips batch together, the 3 s clip (ratio > 1.5) runs alone.
        with ThreadPoolExecutor(4) as pool:
            answers = list(
                pool.map(
                    lambda body: httpx.post(f"{url}/predict", content=body, timeout=30),
                    [good, bad, good, good],
                )
            )
        assert [a.status_code for a in answers] == [200, 500, 200, 200]
        failed = answers[1].json()["error"]
        assert failed["code"] == "inference_failed"
        (batch_id,) = BATCH_ID.findall(failed["message"])
        assert httpx.get(f"{url}/ready").status_code == 200  # one failure is not a pattern
        logged = [line for line in process.log().splitlines() if "inference failed" in line]
        assert any(f"batch {batch_id} " in line for line in logged), logged
        for _ in range(FAILURES_UNREADY):
            assert httpx.post(f"{url}/predict", content=bad, timeout=30).status_code == 500
        ready = httpx.get(f"{url}/ready")
        assert ready.status_code == 503 and "failed in inference" in ready.text
        assert httpx.post(f"{url}/predict", content=good, timeout=30).status_code == 200
        assert httpx.get(f"{url}/ready").status_code == 200  # a success makes it ready again


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
