"""A real ``python -m server`` on loopback: start-up errors, SIGTERM drain, client gone, chunked bodies."""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.fixtures import encode_clip
from tests.server.faults import client_gone_while_queued, start_failure
from tests.server.live_server import metric, serve


def test_missing_model_dir_is_one_clear_message(tmp_path):
    result = start_failure(tmp_path / "no-such-model")
    assert result.returncode != 0
    assert "cannot start" in result.stderr and "no-such-model" in result.stderr
    assert "Traceback" not in result.stderr


def test_limit_longer_than_the_model_accepts_is_one_clear_message(tiny_model_dir, tmp_path):
    model = shutil.copytree(tiny_model_dir, tmp_path / "model")
    meta = json.loads((model / "model.json").read_text())
    (model / "model.json").write_text(json.dumps(meta | {"max_samples": 30 * 16_000}))
    result = start_failure(model, EMODISTILL_MAX_SECONDS="60")
    assert result.returncode != 0
    assert "EMODISTILL_MAX_SECONDS=60" in result.stderr and "Traceback" not in result.stderr


def test_corrupt_model_is_one_clear_message(tiny_model_dir, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    meta = json.loads((tiny_model_dir / "model.json").read_text())
    (broken / "model.json").write_text(json.dumps(meta))
    (broken / "model.onnx").write_bytes(b"not the exported model")
    result = start_failure(broken)
    assert result.returncode != 0
    assert "sha256" in result.stderr and "Traceback" not in result.stderr


def test_sigterm_finishes_queued_requests_and_exits_zero(tiny_model_dir):
    # Requests sit in the batcher for max_wait_ms: SIGTERM arrives while they are queued.
    with serve(tiny_model_dir, max_wait_ms=1500, max_batch_size=8) as (process, url):
        data = encode_clip("wav", seconds=1.0, kind="noise")
        with ThreadPoolExecutor(3) as pool:
            pending = [
                pool.submit(httpx.post, f"{url}/predict", content=data, timeout=30)
                for _ in range(3)
            ]
            deadline = time.monotonic() + 5
            while metric(url, "emodistill_queue_depth") < 3 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert metric(url, "emodistill_queue_depth") == 3
            process.send_signal(signal.SIGTERM)
            responses = [p.result() for p in pending]
        assert process.wait(timeout=30) == 0
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert {r.json()["results"][0]["batch_size"] for r in responses} == {3}


def test_a_client_that_goes_away_is_dropped_before_inference(tiny_model_dir):
    result = client_gone_while_queued(tiny_model_dir)
    assert result["dropped_cancelled"] == 1 and result["next_status"] == 200
    assert result["utterances_inferred"] == 1  # only the second was inferred


def test_chunked_body_over_the_limit_is_refused_mid_stream(tiny_model_dir):
    chunk, limit_mb, offered = b"\0" * 65536, 1, 1024  # offers 64 MiB against a 1 MiB limit
    with serve(tiny_model_dir, max_body_mb=limit_mb) as (_, url):
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
            sent = 0
            try:
                for _ in range(offered):
                    sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                    sent += len(chunk)
            except OSError:
                pass  # the server answered and closed the connection while we were sending
            answer = sock.recv(65536).decode(errors="replace")
    assert answer.startswith("HTTP/1.1 413"), answer[:200]
    assert '"body_too_large"' in answer
    assert sent < offered * len(chunk)


def test_an_aborted_upload_is_a_499_without_a_traceback(tiny_model_dir):
    """A client that closes its connection mid-body is not a server fault: counted as 499,
    logged without a traceback, and the server keeps serving."""
    from urllib.parse import urlparse

    from tests.server.live_server import metric

    with serve(tiny_model_dir, log_level="info") as (process, url):
        address = urlparse(url)
        with socket.create_connection((address.hostname, address.port)) as sock:
            sock.sendall(
                b"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: audio/wav\r\n"
                b"Content-Length: 200000\r\n\r\n" + b"\x00" * 1000
            )
            time.sleep(0.3)  # the route is reading the body when the client goes away
        deadline = time.monotonic() + 10
        while metric(url, "emodistill_requests_total", route="/predict", status="499") < 1:
            assert time.monotonic() < deadline, "the aborted upload was never counted as 499"
            time.sleep(0.1)
        assert metric(url, "emodistill_requests_total", status="500") == 0
        assert httpx.get(f"{url}/ready").status_code == 200
        process.terminate()
        output = process.communicate(timeout=30)[0]
    assert "Traceback" not in output, output


def test_python_m_server_listens_on_loopback_unless_told_otherwise(tiny_model_dir):
    """No EMODISTILL_HOST: uvicorn binds 127.0.0.1 and nothing is warned. 0.0.0.0 without a
    key: the start-up log warns."""
    with tempfile.TemporaryFile("w+") as log:
        with serve(tiny_model_dir, host=None, log_level="info", output=log):
            pass
        log.seek(0)
        output = log.read()
    assert re.search(r"Uvicorn running on http://127\.0\.0\.1:\d+", output), output
    assert "beyond loopback" not in output
    with tempfile.TemporaryFile("w+") as log:
        with serve(tiny_model_dir, host="0.0.0.0", log_level="info", output=log):
            pass
        log.seek(0)
        output = log.read()
    assert re.search(r"Uvicorn running on http://0\.0\.0\.0:\d+", output), output
    assert "WARNING emodistill: listening on 0.0.0.0, beyond loopback, with no API key" in output
