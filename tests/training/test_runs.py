"""training.runs: rank-0 work the other ranks wait for outside any collective."""

from __future__ import annotations

import os
import socket
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch

from training.runs import MainFirst, read_stages, stage

BUSY_S = 4  # rank 0's work: longer than the process group's timeout below
TIMEOUT_S = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, root: str, use_main_first: bool) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
        LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE="2",
    )  # fmt: skip
    # A process group whose timeout stands for the default 30 min (gloo) / 10 min (NCCL).
    torch.distributed.init_process_group("gloo", timeout=timedelta(seconds=TIMEOUT_S))
    from accelerate import Accelerator

    from training import runs

    # Rank 1 polls for rank 0's marker every POLL_S (2 s), then both meet in a short barrier
    # that also runs under TIMEOUT_S: at 2 s, a poll just missed left rank 0 in it past the
    # timeout (seen in a full run). A quick poll keeps that barrier short, as it is in real runs.
    runs.POLL_S = 0.1

    accelerator = Accelerator(cpu=True)

    def teachers() -> str:
        time.sleep(BUSY_S)
        return "trained"

    if use_main_first:
        main_first = MainFirst(accelerator, Path(root))
        out = main_first.run("teachers", teachers)
        assert out == ("trained" if rank == 0 else None)
        main_first.close()
    else:  # how the recipe waited before: rank 1 sits in a barrier
        if accelerator.is_main_process:
            teachers()
        accelerator.wait_for_everyone()
    torch.distributed.destroy_process_group()


@pytest.mark.parametrize(
    "use_main_first",
    [True, pytest.param(False, marks=pytest.mark.slow)],  # the control: how it failed before
    ids=["marker-file", "barrier"],
)
def test_waiting_ranks_outlive_the_process_group_timeout(tmp_path, use_main_first):
    import torch.multiprocessing as mp

    args = (_free_port(), str(tmp_path), use_main_first)
    if use_main_first:
        mp.spawn(_worker, args=args, nprocs=2, join=True)
        assert not any((tmp_path / ".sync").iterdir())  # markers removed at the end
    else:  # the control: the barrier times out while rank 0 works
        with pytest.raises(Exception, match="(?i)timed? ?out|timeout"):
            mp.spawn(_worker, args=args, nprocs=2, join=True)


def test_stage_records_time_and_peak_memory(tmp_path):
    import mmap

    with stage("big", tmp_path, fold="x"):
        # 80 MB of fresh anonymous pages, each touched: an allocator could serve a numpy array
        # from freed memory that is still resident, and then the peak would not move.
        block = mmap.mmap(-1, 80_000_000)
        for offset in range(0, len(block), mmap.PAGESIZE):
            block[offset] = 1
        block.close()
    with stage("small", tmp_path):
        pass
    big, small = read_stages(tmp_path)
    assert big["stage"] == "big" and big["fold"] == "x" and big["seconds"] >= 0
    assert big["peak_rss_mb"] - small["peak_rss_mb"] > 60  # the peak is reset per stage
