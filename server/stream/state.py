"""What the streams of one app share: the open sessions, their counts per API key and per
client address, whether the server is draining them, and their metrics.

Part of the app's typed state (server/state.py `AppState.streams`); the route takes it as
`StreamStateDep` (server/api/dependencies.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry

from server.stream.metrics import StreamMetrics

if TYPE_CHECKING:
    from server.stream.session import StreamSession


@dataclass(eq=False)
class StreamState:
    registry: CollectorRegistry  # the app's (server/api/metrics.py)
    sessions: set[StreamSession] = field(default_factory=set)
    per_key: dict[str, int] = field(default_factory=dict)
    per_client: dict[str, int] = field(default_factory=dict)
    draining: bool = False  # shutting down: no new streams
    _metrics: StreamMetrics | None = None

    @property
    def open(self) -> int:
        """Streams open now."""
        return len(self.sessions)

    @property
    def metrics(self) -> StreamMetrics:
        """The stream metrics, registered on first use (the first stream tried)."""
        if self._metrics is None:
            self._metrics = StreamMetrics(self.registry)
        return self._metrics

    def add(self, session: StreamSession, api_key: str | None, client: str) -> None:
        """A stream opens: it counts for its client address and its API key (when set)."""
        for counts, holder in self._holders(api_key, client):
            counts[holder] = counts.get(holder, 0) + 1
        self.sessions.add(session)

    def discard(self, session: StreamSession, api_key: str | None, client: str) -> None:
        for counts, holder in self._holders(api_key, client):
            counts[holder] -= 1
            if not counts[holder]:
                del counts[holder]
        self.sessions.discard(session)

    def _holders(self, api_key: str | None, client: str) -> list[tuple[dict[str, int], str]]:
        holders = [(self.per_client, client)]
        if api_key is not None:
            holders.append((self.per_key, api_key))
        return holders
