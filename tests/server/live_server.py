"""A live ``python -m server`` process on loopback (tests that need a real uvicorn, benchmarks)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import httpx
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 60


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_env(model_dir: Path, port: int, **settings: object) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMODISTILL_")}
    env |= {
        "EMODISTILL_MODEL_DIR": str(model_dir),
        "EMODISTILL_HOST": "127.0.0.1",
        "EMODISTILL_PORT": str(port),
    }
    env |= {"EMODISTILL_THREADS": "1", "EMODISTILL_LOG_LEVEL": "warning", "PYTHONPATH": str(ROOT)}
    env |= {f"EMODISTILL_{key.upper()}": str(value) for key, value in settings.items()}
    # A setting given as None is left to the server's default.
    return {k: v for k, v in env.items() if v != "None"}


class ServerFailed(RuntimeError):
    pass


@contextmanager
def serve(
    model_dir: Path,
    *,
    start_timeout_s: float = START_TIMEOUT_S,
    port: int | None = None,
    output: IO[str] | None = None,
    **settings: object,
) -> Iterator[tuple[subprocess.Popen, str]]:
    """Start ``python -m server`` with ``EMODISTILL_<KEY>=value`` for each setting; yields once
    /ready answers 200; kills the process on exit if it is still running. Its output goes to
    ``output`` (a file: a server that logs a lot must not block on a pipe nobody reads) or to
    a pipe read when it fails to start."""
    port = port or free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "server"],
        cwd=ROOT,
        env=server_env(model_dir, port, **settings),
        stdout=output or subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = wait_ready(process, port, start_timeout_s)
        yield process, url
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def wait_ready(process: subprocess.Popen, port: int, timeout_s: float) -> str:
    """Poll /ready until 200 (returns the base URL); ServerFailed if the process exits first."""
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            output = process.stdout.read() if process.stdout else "(see its log)"
            raise ServerFailed(f"server exited with {process.returncode}: {output}")
        try:
            if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                return url
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise ServerFailed("server did not become ready")
        time.sleep(0.05)


def metric(url: str, name: str, **labels: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and labels.items() <= s.labels.items()
    )
