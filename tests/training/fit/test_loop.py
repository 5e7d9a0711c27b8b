"""The student loop at full fidelity: DDP with LayerDrop and time masking, no accelerator
references left behind by a finished student, resume (of a GPU-saved state, after a kill while
saving), and the learning-rate schedule."""

from __future__ import annotations

import gc
import os
import socket
import weakref
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from training.data.utterance import EMOTIONS
from training.eval.metrics import compute_metrics
from training.fit import loop
from training.fit.batches import AudioSet
from training.fit.checkpoints import TRAINER_STATE
from training.fit.loop import StudentOptions, train_student, warmup_cosine
from training.fit.losses import LossWeights

N_TRAIN, N_VALID, EMB = 32, 8, 8


def _score(y, logits):
    return compute_metrics(list(y), list(np.asarray(logits).argmax(-1)), list(range(4)))


def _write_audio(folder: Path, n: int, seed: int, write: bool = True) -> list[str]:
    """The clips' paths; ``write=False`` only names files written before (DDP workers must not
    rewrite what the other rank is reading: it saw a truncated, empty file)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"{i}.wav"
        if write:
            sf.write(path, 0.1 * rng.standard_normal(int(rng.integers(6000, 12000))), 16000)
        paths.append(str(path))
    return paths


def _sets(root: Path, write: bool = True) -> tuple[AudioSet, AudioSet]:
    rng = np.random.default_rng(0)
    targets = {
        "ling": {
            "logits": rng.standard_normal((N_TRAIN, 4)).astype(np.float32),
            "embedding": rng.standard_normal((N_TRAIN, EMB)).astype(np.float32),
        }
    }
    train_paths = _write_audio(root / "train", N_TRAIN, 1, write)
    train = AudioSet(train_paths, np.arange(N_TRAIN) % 4, targets)
    valid = AudioSet(_write_audio(root / "valid", N_VALID, 2, write), np.arange(N_VALID) % 4)
    return train, valid


def _opts(**kw) -> StudentOptions:
    base = dict(
        model="tiny", labels=EMOTIONS, epochs=1, batch_size=4, eval_batch_size=8,
        max_seconds=0.5, warmup_ratio=0.0, weights=LossWeights().for_variant("ce+ling"),
        progress=False,
    )  # fmt: skip
    return StudentOptions(**{**base, **kw})


def _accelerator():
    from training.config import load_config
    from training.distill import make_accelerator

    return make_accelerator(load_config("demo", overrides=["--cpu", "--threads=1"]))


def _ddp_worker(rank: int, world: int, port: int, root: str) -> None:
    from datetime import timedelta

    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world),
    )  # fmt: skip
    # A short timeout: a rank stuck in a collective fails the test instead of hanging it.
    torch.distributed.init_process_group("gloo", timeout=timedelta(seconds=90))
    accelerator = _accelerator()
    assert accelerator.num_processes == world
    train, valid = _sets(Path(root), write=False)  # the parent wrote them before spawning
    out = Path(root) / "student"
    result = train_student(train, valid, _opts(epochs=3), out, accelerator, _score)
    assert [h["epoch"] for h in result["history"]] == [1, 2, 3]
    model = loop.new_student(_opts(), {"ling": EMB})
    assert model.config.layerdrop > 0 and model.config.mask_time_prob > 0
    torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_gloo_processes_with_layerdrop_and_time_masking(tmp_path):
    """HuBERT's defaults (layerdrop 0.1, mask_time_prob 0.05) skip layers at random: without
    find_unused_parameters DDP fails within the first steps ("Expected to have finished
    reduction in the prior iteration")."""
    import torch.multiprocessing as mp

    _sets(tmp_path)  # write the audio once, before the workers read it
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    assert (tmp_path / "student" / "last" / TRAINER_STATE).is_file()


def test_a_finished_student_leaves_no_reference_in_the_accelerator(tmp_path, monkeypatch):
    """One accelerator trains every student of a run; prepared models must not pile up."""
    alive: weakref.WeakSet = weakref.WeakSet()
    real = loop.DistillModel

    class Tracked(real):
        def __init__(self, student):
            super().__init__(student)
            alive.add(self)

    monkeypatch.setattr(loop, "DistillModel", Tracked)
    accelerator = _accelerator()
    train, valid = _sets(tmp_path)
    for seed in (0, 1):
        train_student(train, valid, _opts(seed=seed), tmp_path / f"s{seed}", accelerator, _score)
        gc.collect()
        assert len(alive) == 0


def test_resume_loads_a_state_saved_on_a_gpu(tmp_path):
    """trainer.pt written on cuda:0 resumes on a CPU-only machine (map_location)."""
    accelerator = _accelerator()
    train, valid = _sets(tmp_path)
    out = tmp_path / "student"
    train_student(train, valid, _opts(epochs=1), out, accelerator, _score)
    state_file = out / "last" / TRAINER_STATE
    # Re-save with every storage tagged as CUDA, as torch.save does on a GPU machine.
    state = torch.load(state_file, map_location="cpu", weights_only=False)
    registry = torch.serialization._package_registry
    entry = (0, lambda obj: "cuda:0" if obj.device.type == "cpu" else None, lambda obj, loc: None)
    registry.insert(0, entry)
    try:
        torch.save(state, state_file)
    finally:
        registry.remove(entry)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(state_file, weights_only=False)
    result = train_student(train, valid, _opts(epochs=2), out, accelerator, _score)
    assert [h["epoch"] for h in result["history"]] == [1, 2]


def test_a_resumed_student_matches_the_uninterrupted_one(tmp_path):
    """Killed after epoch 1 and resumed by a new process (the global RNG starts elsewhere):
    time masking and LayerDrop draw the same numbers as in the uninterrupted run, so every
    later epoch and the final metrics match (the RNG states travel in trainer.pt)."""
    accelerator = _accelerator()
    train, valid = _sets(tmp_path)
    clean = train_student(train, valid, _opts(epochs=3), tmp_path / "clean", accelerator, _score)
    calls = {"n": 0}

    def dying(y, logits):
        calls["n"] += 1
        if calls["n"] == 2:  # the validation of epoch 2, before its checkpoint
            raise KeyboardInterrupt
        return _score(y, logits)

    out = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        train_student(train, valid, _opts(epochs=3), out, accelerator, dying)
    torch.manual_seed(12345)  # a new process: the global RNG is wherever it happens to be
    np.random.seed(12345)
    resumed = train_student(train, valid, _opts(epochs=3), out, accelerator, _score)
    assert [h["epoch"] for h in resumed["history"]] == [1, 2, 3]
    for a, b in zip(clean["history"], resumed["history"], strict=True):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-6), (a, b)
        assert a["valid_ua"] == b["valid_ua"]


def test_a_kill_while_saving_a_checkpoint_resumes_from_the_last_complete_one(tmp_path, monkeypatch):
    """Killed after epoch 2's weights were written but before its trainer state: the resumed
    run must not pair epoch-2 weights with epoch-1 optimizer and RNG state (it would train
    epoch 2 twice); checkpoints are written aside and swapped in whole."""
    accelerator = _accelerator()
    train, valid = _sets(tmp_path)
    clean = train_student(train, valid, _opts(epochs=3), tmp_path / "clean", accelerator, _score)
    out = tmp_path / "killed"
    real_save = torch.save
    saves = {"n": 0}

    def dying_save(obj, path, *args, **kwargs):
        if str(path).endswith(TRAINER_STATE):
            saves["n"] += 1
            if saves["n"] == 2:  # epoch 2's trainer state: the weights are already written
                raise KeyboardInterrupt
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        train_student(train, valid, _opts(epochs=3), out, accelerator, _score)
    monkeypatch.setattr(torch, "save", real_save)
    torch.manual_seed(12345)
    resumed = train_student(train, valid, _opts(epochs=3), out, accelerator, _score)
    for a, b in zip(clean["history"], resumed["history"], strict=True):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-6), (a, b)


def test_warmup_then_cosine():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = warmup_cosine(opt, total_steps=100, warmup_ratio=0.1)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:], strict=False))
    assert lrs[-1] < 0.01
