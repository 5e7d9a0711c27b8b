"""``python -m server``: validate the model directory, then serve with uvicorn."""

from __future__ import annotations

import asyncio
import logging
import math
import signal
import sys

import uvicorn
from pydantic import ValidationError

from emocore.model_dir import ModelDirError
from server.api.auth import install_log_redaction
from server.app import create_app, drain_open_streams
from server.inference.runtime import ProviderError, Runtime
from server.settings import Settings, settings_problem
from server.state import app_state

REFUSE_MARGIN_S = 1.0  # before uvicorn's grace deadline, queued work is refused (503)


def main() -> int:
    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"emodistill: cannot start: {settings_problem(exc)}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        runtime = Runtime.from_settings(settings)
        runtime.check_settings(settings)
    except (ModelDirError, ProviderError) as exc:
        print(f"emodistill: cannot start: {exc}", file=sys.stderr)
        return 2
    app = create_app(settings, runtime=runtime)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        # The streams' drain comes first (DrainingServer); the rest of the grace is HTTP's.
        timeout_graceful_shutdown=math.ceil(
            settings.shutdown_grace_s - settings.stream_drain_budget_s
        ),
        lifespan="on",
        # Streams carry PCM, which deflate barely shrinks: compression would only cost CPU.
        ws_per_message_deflate=False,
        ws_max_size=settings.ws_max_size,
    )
    install_log_redaction()  # after uvicorn's logging set-up, as well as in create_app
    # uvicorn drains on SIGTERM and then re-raises the signal under the handler that was
    # installed before it started; a no-op one makes a clean drain exit with status 0.
    signal.signal(signal.SIGTERM, lambda *_: None)
    announce(settings, runtime.provider)
    DrainingServer(config, app, settings.stream_drain_budget_s).run()
    return 0


def announce(settings: Settings, provider: str) -> None:
    """The start-up line, and a warning when anyone beyond this machine may use the service
    without a key."""
    log = logging.getLogger("emodistill")
    shown_host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    if ":" in shown_host:
        shown_host = f"[{shown_host}]"  # an IPv6 address in a URL
    log.info(
        "serving %s on %s; web page: http://%s:%d/  (API docs: /docs)",
        settings.model_dir,
        provider,
        shown_host,
        settings.port,
    )
    if (warning := settings.exposure_warning) is not None:
        log.warning(warning)


class DrainingServer(uvicorn.Server):
    """uvicorn closes open websockets (1012) as the first step of its shutdown, before the
    lifespan runs: streams would lose the finals of what they had sent. This server first
    stops listening, then drains the streams (a `closing` event, their finals, 1001), then
    lets uvicorn finish HTTP requests in flight and the lifespan drain the batcher."""

    def __init__(self, config: uvicorn.Config, app, drain_s: float):
        super().__init__(config)
        self.app, self.drain_s = app, drain_s

    async def shutdown(self, sockets=None) -> None:
        for server in self.servers:
            server.close()  # no new connections while streams drain
        await drain_open_streams(self.app, self.drain_s)
        # When its grace ends uvicorn cancels the requests still running, each a 500: what is
        # still queued shortly before is refused instead (503 shutting_down + Retry-After).
        refuse = asyncio.get_running_loop().call_later(self._refuse_after_s(), self._refuse)
        try:
            await super().shutdown(sockets)
        finally:
            refuse.cancel()

    def _refuse_after_s(self) -> float:
        """The HTTP grace less a margin for the batch running then (twice the last one's time,
        at least REFUSE_MARGIN_S)."""
        batcher = app_state(self.app).batcher
        running = 2 * batcher.last_batch_s if batcher is not None else 0.0
        grace = self.config.timeout_graceful_shutdown or 0
        return max(0.0, grace - max(REFUSE_MARGIN_S, running))

    def _refuse(self) -> None:
        batcher = app_state(self.app).batcher
        if batcher is not None and (refused := batcher.refuse_queued()):
            logging.getLogger("emodistill").warning(
                "shutdown grace running out: refused %d queued utterances (503)", refused
            )


if __name__ == "__main__":
    sys.exit(main())
