"""The hostile-input corpus (tests/server/hostile.py) against POST /predict.

Every case must answer its 4xx and error code, within a time bound, and the decode must stay
within its memory budget, measured on the server side: tracemalloc's peak around every
`load_audio` call the server makes (numpy's arrays are traced), which must stay under
`decode_budget_bytes(limit)` = 2 x the allowed 16 kHz mono audio + 2 blocks + 1 MiB
(30 s: 5.7 MiB; 120 s with segment=true: 16.6 MiB). test_process.py measures the whole server
process (peak RSS) over the same corpus.
"""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

import httpx
import pytest

from emocore.audio import decode_budget_bytes
from server.api import predict
from tests.server.hostile import MAX_FILES, MAX_SECONDS, MAX_SEGMENTED_SECONDS, Case, cases
from tests.server.live_server import serve

# Generous: the slowest case decodes 30 s of 8-channel 48 kHz audio (about 0.3 s here).
CASE_SECONDS = 10.0
REPRS = ("object at 0x", "<_io.", "Traceback", "/tmp/", "/etc/")


@pytest.fixture(scope="module")
def hostile_client(tiny_model_dir):
    from fastapi.testclient import TestClient

    from server.app import create_app
    from server.settings import Settings

    settings = Settings(
        model_dir=tiny_model_dir,
        threads=1,
        max_seconds=MAX_SECONDS,
        max_segmented_seconds=MAX_SEGMENTED_SECONDS,
        max_files=MAX_FILES,
        stream_max_utterance_s=15.0,
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def decode_peaks(monkeypatch):
    """Peak traced memory (bytes) of each load_audio call the server makes, with its limit."""
    peaks: list[tuple[int, float]] = []
    original = predict.load_audio

    def measured(data, **kwargs):
        tracemalloc.start()
        try:
            return original(data, **kwargs)
        finally:
            peaks.append((tracemalloc.get_traced_memory()[1], kwargs["max_seconds"]))
            tracemalloc.stop()

    monkeypatch.setattr(predict, "load_audio", measured)
    return peaks


def send(client, case: Case):
    url = "/predict" + (f"?{case.query}" if case.query else "")
    if case.files is not None:
        files = [(f, (name, data, kind)) for f, name, data, kind in case.files]
        return client.post(url, files=files, headers=case.headers)
    return client.post(url, content=case.body, headers=case.headers)


def test_the_corpus_is_large_and_varied():
    corpus = cases()
    assert len(corpus) >= 40
    assert sum(case.name.startswith("bomb-") for case in corpus) >= 8
    assert sum(case.name.startswith("multipart-") for case in corpus) >= 6


@pytest.mark.parametrize("case", cases(), ids=lambda case: case.name)
def test_hostile_input_is_a_clear_4xx_in_bounded_time_and_memory(
    hostile_client, decode_peaks, case
):
    started = time.monotonic()
    response = send(hostile_client, case)
    elapsed = time.monotonic() - started
    assert elapsed < CASE_SECONDS, f"{case.name} took {elapsed:.1f} s"
    if case.status == 200:
        assert response.status_code == 200, response.text
    else:
        assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
        if case.status is not None:
            assert response.status_code == case.status, response.text[:300]
        body = response.json()
        assert set(body) == {"error"}, body
        assert body["error"]["code"] in case.codes, body
        message = body["error"]["message"]
        assert len(message) > 10 and not any(r in message for r in REPRS), message
        assert len(message) < 600, message
    for peak, limit in decode_peaks:
        assert peak <= decode_budget_bytes(limit), (
            f"{case.name}: decode peak {peak / 2**20:.1f} MiB over the "
            f"{decode_budget_bytes(limit) / 2**20:.1f} MiB budget for {limit:g} s"
        )


def test_memory_budget_holds_for_audio_right_at_the_limit(hostile_client, decode_peaks):
    """The budget is tight enough to matter: 29 s of 8-channel 48 kHz audio (a 53 MiB decode
    before the fix) is accepted within its 5.7 MiB budget."""
    from tests.server.hostile import encode, tone

    body = encode(tone(29.0, 48_000, 8) * 0.1, 48_000, fmt="FLAC")
    response = hostile_client.post("/predict", content=body)
    assert response.status_code == 200, response.text
    ((peak, limit),) = decode_peaks
    assert peak <= decode_budget_bytes(limit) <= 6 * 2**20


def _peak_rss_kib(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM")


# The whole server process may grow by at most this over the corpus (peak RSS, measured by
# the kernel): the bodies, the decoded audio, the VAD and ONNX Runtime's working memory.
PROCESS_GROWTH_MIB = 200


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_the_server_process_stays_small_over_the_whole_corpus(tiny_model_dir):
    """A real `python -m server`: its peak RSS (VmHWM) over every case, including ten-minute
    8-channel bombs that decode to 0.9 GiB each without the budget."""
    settings = dict(
        max_seconds=MAX_SECONDS, max_segmented_seconds=MAX_SEGMENTED_SECONDS, max_files=MAX_FILES
    )
    with serve(tiny_model_dir, **settings) as (process, url), httpx.Client(base_url=url) as http:
        http.post("/predict", content=cases()[-1].body or b"warm-up")  # import paths warmed
        Path(f"/proc/{process.pid}/clear_refs").write_text("5")  # reset the peak to now
        before = _peak_rss_kib(process.pid)
        statuses = []
        for case in cases():
            url_ = "/predict" + (f"?{case.query}" if case.query else "")
            if case.files is not None:
                files = [(f, (name, data, kind)) for f, name, data, kind in case.files]
                response = http.post(url_, files=files, headers=case.headers, timeout=60)
            else:
                response = http.post(url_, content=case.body, headers=case.headers, timeout=60)
            statuses.append(response.status_code)
        growth_mib = (_peak_rss_kib(process.pid) - before) / 1024
    assert all(s < 500 for s in statuses), statuses
    print(f"server peak RSS growth over the corpus: {growth_mib:.1f} MiB")
    assert growth_mib < PROCESS_GROWTH_MIB
