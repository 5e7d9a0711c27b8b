"""Run-time plumbing of ``training.distill``: per-stage wall time and peak memory, and rank-0
work that the other ranks wait for without sitting in a collective.

Peak memory per stage is the process's resident-set high-water mark (``VmHWM``), reset at the
start of each stage by writing ``5`` to ``/proc/self/clear_refs`` (Linux); where that is not
possible the figure is the peak since the process started, and the record says so. Child
processes (the LLD extraction pool) are not included. Every rank appends its own lines to
``RUN/stages.jsonl``.
"""

from __future__ import annotations

import json
import logging
import os
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

log = logging.getLogger("emodistill.training")
STAGES_FILE = "stages.jsonl"
POLL_S = 2.0
T = TypeVar("T")


def _status_kb(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float | None:
    kb = _status_kb("VmHWM")
    return None if kb is None else round(kb / 1024, 1)


@contextmanager
def stage(name: str, run_dir: Path, rank: int = 0, **info) -> Iterator[dict]:
    """Time ``name`` and record its peak RSS in ``run_dir/stages.jsonl`` (one line per rank).
    The yielded dict may be updated with more fields before the stage ends."""
    since_start = not reset_peak_rss()
    started = time.monotonic()
    rss = _status_kb("VmRSS")
    record = {"stage": name, "rank": rank, **info}
    record["rss_start_mb"] = None if rss is None else round(rss / 1024, 1)
    yield record
    record.update(
        seconds=round(time.monotonic() - started, 2),
        peak_rss_mb=peak_rss_mb(),
        peak_since_process_start=since_start,
        finished=time.strftime("%H:%M:%S"),
    )
    with (run_dir / STAGES_FILE).open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


def read_stages(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / STAGES_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


class MainFirst:
    """Rank 0 alone runs a piece of work while the other ranks wait for a marker file, so no
    rank sits in a collective (a barrier under the process group's timeout, 30 min for gloo
    and 10 min for NCCL by default, after which the watchdog kills it) for as long as the
    work takes: extracting prosody and training both teachers takes tens of minutes at IEMOCAP
    scale. Markers live in ``RUN/.sync/<token>``, a token per launch shared by broadcast, so a
    resumed run never sees an old one. If rank 0 fails, it leaves a ``.failed`` marker and the
    waiting ranks raise too (torchrun stops them anyway)."""

    def __init__(self, accelerator, run_dir: Path):
        self.accelerator = accelerator
        self.single = accelerator.num_processes == 1
        token = [f"{os.getpid()}-{time.time_ns()}"]
        if not self.single:
            from accelerate.utils import broadcast_object_list

            broadcast_object_list(token, from_process=0)
        self.dir = Path(run_dir) / ".sync" / token[0]
        if accelerator.is_main_process:
            self.dir.mkdir(parents=True, exist_ok=True)

    def run(self, name: str, work: Callable[[], T]) -> T | None:
        """``work()`` on rank 0 (its result there, None elsewhere); every rank returns after it."""
        if self.single:
            return work()
        done, failed = self.dir / f"{name}.done", self.dir / f"{name}.failed"
        result = None
        if self.accelerator.is_main_process:
            try:
                result = work()
            except BaseException:
                failed.write_text(traceback.format_exc(), encoding="utf-8")
                raise
            done.write_text("ok", encoding="utf-8")
        else:
            waited = time.monotonic()
            while not done.is_file():
                if failed.is_file():
                    raise RuntimeError(f"rank 0 failed in {name!r}:\n{failed.read_text()}")
                time.sleep(POLL_S)
            log.debug("waited %.0fs for rank 0 (%s)", time.monotonic() - waited, name)
        self.accelerator.wait_for_everyone()  # everyone is here now: a short barrier
        return result

    def close(self) -> None:
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            import shutil

            shutil.rmtree(self.dir, ignore_errors=True)
