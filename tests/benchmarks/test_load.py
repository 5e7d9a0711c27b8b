"""The load benchmark's accounting (benchmarks/load.py): what counts as refused, lost, finaled."""

from __future__ import annotations

from benchmarks.load import stream_summary


def test_streams_refused_at_the_handshake_spoke_nothing_and_are_counted_apart():
    runs = [
        {"spoken": 6, "finals": 6, "errors": [], "close_code": 1000, "delay_s": [0.4, 0.5]},
        {"spoken": 6, "finals": 2, "errors": ["overloaded"], "close_code": 1013},
        {"spoken": 6, "finals": 5, "errors": [], "close_code": 1000},  # one final missing
        {
            "spoken": 0,
            "finals": 0,
            "errors": [],
            "refused": {"status": 503, "retry_after": "10", "code": "overloaded"},
        },
        {
            "spoken": 0,
            "finals": 0,
            "errors": [],
            "refused": {"status": 503, "retry_after": None, "code": "too_many_streams"},
        },
    ]
    summary = stream_summary(runs)
    assert summary["streams"] == 5 and summary["refused_at_handshake"] == 2
    assert summary["refused_without_503_retry_after"] == 1
    assert summary["refusal_codes"] == ["overloaded", "too_many_streams"]
    assert summary["utterances_spoken"] == 18 and summary["finals"] == 13
    assert summary["refused_with_error"] == 4 and summary["lost"] == 1
