"""Secrets and origins: keys compared in constant time without their length showing, the
websocket key as a subprotocol (never echoed), Origin checked, and no key in any log line."""

from __future__ import annotations

import base64
import logging

import httpx
import pytest
from starlette.testclient import WebSocketDenialResponse
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from server.api import auth
from server.api.auth import SUBPROTOCOL, key_accepted, redact
from server.settings import Settings
from tests.server.uvicorn_thread import live_server

KEY = "s3cret-k\u00e9y/+="  # non-ASCII and base64's special characters


def key_protocol(key: str) -> str:
    encoded = base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")
    return f"emodistill.key.{encoded}"


def test_keys_are_compared_as_fixed_length_digests_against_every_key(monkeypatch):
    compared: list[tuple[bytes, bytes]] = []
    original = auth.hmac.compare_digest

    def spy(a, b):
        compared.append((a, b))
        return original(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    keys = ["short", "a-much-longer-key-" * 4, KEY]
    assert key_accepted(keys, "short")
    assert not key_accepted(keys, "x")
    assert key_accepted(keys, KEY)
    # every configured key is compared each time (no early exit on the first match), and
    # every comparison is of two 32-byte digests, whatever the lengths of the keys
    assert len(compared) == 3 * len(keys)
    assert {(len(a), len(b)) for a, b in compared} == {(32, 32)}
    assert all(b"short" not in a and b"short" not in b for a, b in compared)


def test_stream_takes_the_key_as_a_subprotocol_and_echoes_only_the_protocol(make_client):
    with make_client(api_keys=[KEY, "other"]) as client:
        protocols = [SUBPROTOCOL, key_protocol(KEY)]
        with client.websocket_connect("/v1/stream?sample_rate=16000", subprotocols=protocols) as ws:
            assert ws.accepted_subprotocol == SUBPROTOCOL
            assert ws.receive_json()["type"] == "ready"
        for wrong in ([SUBPROTOCOL, key_protocol("nope")], [SUBPROTOCOL, "emodistill.key.%%%"]):
            with pytest.raises(WebSocketDenialResponse) as refused:
                with client.websocket_connect("/v1/stream?sample_rate=16000", subprotocols=wrong):
                    pass
            assert refused.value.status_code == 401
            assert "emodistill.v1" in refused.value.json()["error"]["message"]
        # headers, as for HTTP, and the query parameter for old clients
        headers = {"X-API-Key": "other"}
        with client.websocket_connect("/v1/stream?sample_rate=16000", headers=headers) as ws:
            assert ws.receive_json()["type"] == "ready"


@pytest.mark.parametrize(
    ("origins", "origin", "allowed"),
    [
        (["https://app.example"], "https://evil.example", False),
        (["https://app.example"], "https://app.example", True),
        (["https://app.example/"], "https://app.example", True),
        (["https://app.example"], None, True),  # not a browser: no Origin to check
        ([], "https://evil.example", True),  # no origins configured: no check (as for CORS)
        (["*"], "https://evil.example", True),
    ],
)
def test_stream_checks_origin_against_the_cors_origins(make_client, origins, origin, allowed):
    headers = {"origin": origin} if origin else {}
    with make_client(cors_origins=origins) as client:
        if allowed:
            with client.websocket_connect("/v1/stream?sample_rate=16000", headers=headers) as ws:
                assert ws.receive_json()["type"] == "ready"
            return
        with pytest.raises(WebSocketDenialResponse) as refused:
            with client.websocket_connect("/v1/stream?sample_rate=16000", headers=headers):
                pass
        assert refused.value.status_code == 403
        error = refused.value.json()["error"]
        assert error["code"] == "forbidden_origin" and "https://app.example" in error["message"]


def test_redact_hides_every_spelling_of_the_query_key():
    line = '1.2.3.4:5 - "WebSocket /v1/stream?sample_rate=16000&api_key=abc%20d&x=1" 403'
    assert redact(line) == line.replace("abc%20d", "[redacted]")
    assert "zz" not in redact("GET /health?API%5Fkey=zz HTTP/1.1")
    assert "zz" not in redact("GET /p?a=1&api_key=zz")
    assert redact("no query here: api_key=zz") == "no query here: api_key=zz"


class Capture(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_no_key_reaches_a_log_line(tiny_model_dir):
    """A real uvicorn logs every request path with its query string (access log, and its
    websocket handshake lines): keys and wrong guesses alike must come out redacted."""
    capture = Capture()
    loggers = [logging.getLogger(n) for n in ("uvicorn.access", "uvicorn.error", "emodistill")]
    settings = Settings(model_dir=tiny_model_dir, threads=1, api_keys=[KEY])
    with live_server(settings) as server:
        levels = [logger.level for logger in loggers]
        for logger in loggers:
            logger.setLevel(logging.INFO)
            logger.addHandler(capture)
        try:
            quoted = httpx.QueryParams({"api_key": KEY})
            guess = httpx.QueryParams({"api_key": "wrong-guess-123"})
            httpx.get(f"{server.url}/health?{quoted}")
            httpx.get(f"{server.url}/v1/model?{guess}")
            with connect(f"{server.ws_url}?sample_rate=16000&{quoted}") as ws:
                assert '"ready"' in ws.recv(timeout=10)
            with pytest.raises(InvalidStatus):
                with connect(f"{server.ws_url}?sample_rate=16000&{guess}"):
                    pass
            protocols = [SUBPROTOCOL, key_protocol(KEY)]
            with connect(f"{server.ws_url}?sample_rate=16000", subprotocols=protocols) as ws:
                assert ws.subprotocol == SUBPROTOCOL
                assert '"ready"' in ws.recv(timeout=10)
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.removeHandler(capture)
                logger.setLevel(level)
    text = "\n".join(capture.lines)
    assert text.count("[redacted]") >= 4, text  # the lines were logged, without the keys
    for secret in (KEY, str(quoted).split("=", 1)[1], "wrong-guess-123", "s3cret"):
        assert secret not in text, text
