"""The student's checkpoints: folders swapped in whole, recovery after a kill, and the random
states a resumed epoch needs."""

from __future__ import annotations

import random
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

TRAINER_STATE = "trainer.pt"


@contextmanager
def checkpoint(target: Path) -> Iterator[Path]:
    """Write a checkpoint folder aside (``<target>.tmp``) and swap it in whole: a process
    killed while writing leaves the previous checkpoint intact, never new weights beside an
    old trainer state."""
    tmp, old = target.with_name(target.name + ".tmp"), target.with_name(target.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    yield tmp
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    tmp.rename(target)  # a kill just before this leaves only .old: recover_checkpoints
    shutil.rmtree(old, ignore_errors=True)


def recover_checkpoints(*targets: Path) -> None:
    """After a kill: a half-written ``.tmp`` is dropped; a ``.old`` without its replacement
    (killed between the two renames) is the last complete checkpoint and comes back."""
    for target in targets:
        tmp, old = target.with_name(target.name + ".tmp"), target.with_name(target.name + ".old")
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not target.exists():
            old.rename(target)
        shutil.rmtree(old, ignore_errors=True)


def rng_states() -> dict:
    """The global random states a training epoch draws from (time masking, LayerDrop, dropout,
    the data loader's seed): saved with each epoch so that a resumed run draws what the
    uninterrupted one would have, instead of restarting from the seed."""
    states = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"].cpu())
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in states["cuda"]])
