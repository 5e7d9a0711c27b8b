"""Optional API keys: ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``."""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence

from fastapi import Request

from server.errors import ApiError


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key a client sent, from either header (header names are case-insensitive)."""
    authorization = headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return headers.get("x-api-key") or None


def key_accepted(keys: Sequence[str], presented: str | None) -> bool:
    """Constant-time comparison against every configured key (no early exit on a match)."""
    if not keys:
        return True
    if presented is None:
        return False
    given = presented.encode()
    matches = [hmac.compare_digest(given, key.encode()) for key in keys]
    return any(matches)


async def require_api_key(request: Request) -> None:
    """FastAPI dependency: 401 unless no keys are configured or a configured key was sent."""
    if not key_accepted(request.app.state.settings.api_keys, presented_key(request.headers)):
        raise ApiError(
            401,
            "unauthorized",
            "a valid API key is required (Authorization: Bearer <key> or X-API-Key: <key>)",
            {"WWW-Authenticate": "Bearer"},
        )
