"""Settings that contradict each other stop the server at start-up with one clear line."""

from __future__ import annotations

import logging

import pytest
from pydantic import ValidationError

from server.settings import Settings, settings_problem
from tests.server.test_process import start_failure


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"max_seconds": 60, "max_segmented_seconds": 50}, "EMODISTILL_MAX_SEGMENTED_SECONDS"),
        ({"stream_max_utterance_s": 20, "max_seconds": 10}, "EMODISTILL_STREAM_MAX_UTTERANCE_S"),
        ({"stream_min_speech_ms": 2000, "stream_max_utterance_s": 1}, "STREAM_MIN_SPEECH_MS"),
        ({"queue_size": 4, "max_batch_size": 8}, "EMODISTILL_QUEUE_SIZE"),
        ({"stream_min_silence_ms": 9000}, "EMODISTILL_STREAM_MIN_SILENCE_MS"),
        ({"stream_partial_interval_ms": 20_000}, "EMODISTILL_STREAM_PARTIAL_INTERVAL_MS"),
    ],
)
def test_contradictory_settings_are_refused(values, named):
    with pytest.raises(ValidationError) as refused:
        Settings(**values)
    line = settings_problem(refused.value)
    assert named in line and "\n" not in line


def test_consistent_settings_pass():
    Settings(max_seconds=15, stream_max_utterance_s=15, queue_size=8, max_batch_size=8)
    # a default that the user did not set follows a lowered max_seconds
    assert Settings(max_seconds=10).stream_max_utterance_s == 10
    lowered = Settings(max_segmented_seconds=2)
    assert lowered.max_seconds == 2 and lowered.stream_max_utterance_s == 2


@pytest.mark.parametrize(
    "env",
    [
        {"EMODISTILL_STREAM_MAX_UTTERANCE_S": "40"},  # over the default max_seconds 30
        {"EMODISTILL_STREAM_MIN_SILENCE_MS": "9000"},  # no stream could accept it
        {"EMODISTILL_MAX_SECONDS": "abc"},
    ],
)
def test_server_start_stops_with_one_line(tiny_model_dir, env):
    result = start_failure(tiny_model_dir, **env)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("emodistill: cannot start: invalid settings")
    assert next(iter(env)) in lines[0]


@pytest.mark.parametrize(
    ("host", "keys", "warned"),
    [
        ("127.0.0.1", "", False),
        ("127.0.0.2", "", False),
        ("localhost", "", False),
        ("::1", "", False),
        ("0.0.0.0", "", True),
        ("::", "", True),
        ("192.168.1.20", "", True),
        ("emotion.example.org", "", True),  # a name may resolve to any interface
        ("0.0.0.0", "secret", False),
    ],
)
def test_start_up_warns_when_open_beyond_loopback_without_a_key(host, keys, warned, caplog):
    from server.__main__ import announce

    settings = Settings(host=host, api_keys=keys, port=8123)
    with caplog.at_level(logging.INFO, logger="emodistill"):
        announce(settings, "CPUExecutionProvider")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert bool(warnings) == warned
    if warned:
        assert host in warnings[0] and "EMODISTILL_API_KEYS" in warnings[0]
    (line,) = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert "web page: http://" in line and ":8123/" in line


def test_the_default_listen_address_is_loopback(monkeypatch):
    monkeypatch.delenv("EMODISTILL_HOST", raising=False)
    settings = Settings()
    assert settings.host == "127.0.0.1" and settings.loopback_only
    assert settings.exposure_warning is None
