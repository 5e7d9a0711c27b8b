"""Optional API keys, and keeping them out of logs.

HTTP: ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. The websocket takes the same
headers, or, from a browser (which cannot set headers on a websocket), the subprotocol pair
``emodistill.v1, emodistill.key.<base64url(key)>``: the server answers with ``emodistill.v1``
only, so the key is never echoed. ``?api_key=`` still works for old clients but is scrubbed
from every uvicorn log line (`RedactSecrets`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import re
from collections.abc import Mapping, Sequence
from urllib.parse import unquote_plus

from fastapi import Request

from server.api.errors import ApiError
from server.state import app_state

SUBPROTOCOL = "emodistill.v1"
KEY_SUBPROTOCOL_PREFIX = "emodistill.key."
QUERY_KEY = "api_key"
REDACTED = "[redacted]"
# Loggers that print request paths with their query strings (uvicorn's access log, and its
# websocket handshake lines on uvicorn.error).
PATH_LOGGERS = ("uvicorn.access", "uvicorn.error", "uvicorn")


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key a client sent, from either header (header names are case-insensitive)."""
    authorization = headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return headers.get("x-api-key") or None


def offered_subprotocols(headers: Mapping[str, str]) -> list[str]:
    return [p.strip() for p in headers.get("sec-websocket-protocol", "").split(",") if p.strip()]


def subprotocol_key(offered: Sequence[str]) -> str | None:
    """The key carried as ``emodistill.key.<base64url, no padding>``, if one was offered."""
    for protocol in offered:
        if protocol.startswith(KEY_SUBPROTOCOL_PREFIX):
            encoded = protocol[len(KEY_SUBPROTOCOL_PREFIX) :]
            try:
                return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
            except (binascii.Error, UnicodeDecodeError, ValueError):
                return None
    return None


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


def key_accepted(keys: Sequence[str], presented: str | None) -> bool:
    """Constant-time comparison of fixed-length digests (the key's length does not show)
    against every configured key (no early exit on a match)."""
    if not keys:
        return True
    if presented is None:
        return False
    given = _digest(presented)
    matches = [hmac.compare_digest(given, _digest(key)) for key in keys]
    return any(matches)


async def require_api_key(request: Request) -> None:
    """FastAPI dependency: 401 unless no keys are configured or a configured key was sent.
    (It reads the settings itself: a sub-dependency would cost a solve per request.)"""
    keys = app_state(request.app).settings.api_keys
    if keys and not key_accepted(keys, presented_key(request.headers)):
        raise ApiError(
            401,
            "unauthorized",
            "a valid API key is required (Authorization: Bearer <key> or X-API-Key: <key>)",
            {"WWW-Authenticate": "Bearer"},
        )


_QUERY = re.compile(r"\?[^\s\"']*")


def _redact_query(match: re.Match) -> str:
    pairs = match.group(0)[1:].split("&")
    for i, pair in enumerate(pairs):
        name, sep, _ = pair.partition("=")
        if sep and unquote_plus(name).strip().lower() == QUERY_KEY:
            pairs[i] = f"{name}{sep}{REDACTED}"
    return "?" + "&".join(pairs)


def redact(text: str) -> str:
    """``text`` with the value of every ``api_key`` query parameter replaced (however its
    name is percent-encoded)."""
    return _QUERY.sub(_redact_query, text) if "?" in text else text


class RedactSecrets(logging.Filter):
    """Rewrites a record's message and arguments so that no query-string key is logged."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, Mapping):
            record.args = {
                k: redact(v) if isinstance(v, str) else v for k, v in record.args.items()
            }
        return True


def install_log_redaction() -> None:
    """Idempotent: one RedactSecrets on each logger that prints request paths. Logger filters
    survive uvicorn's logging.config.dictConfig (it replaces handlers, not filters)."""
    for name in PATH_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactSecrets) for f in logger.filters):
            logger.addFilter(RedactSecrets())
