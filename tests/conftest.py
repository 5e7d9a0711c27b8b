"""Fixtures shared by all test packages (others may append their own at the end)."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from tests.fixtures import write_clip


def pytest_collection_finish(session):
    """Freeze what collection built (torch, transformers, the test modules: ~400k objects) out
    of the cyclic garbage collector. The training code calls gc.collect() after every student
    and teacher (training.fit.loop.release_host_memory, accelerate's free_memory); each full
    collection walked all of them, 0.2-0.4 s a call on 2 shared cores, tens of seconds per
    session. Frozen objects are only those alive after collection (modules, classes,
    functions); what tests create is collected as before."""
    gc.collect()
    gc.freeze()


# Small enough to generate in ~1 s, large enough for 8 speakers x 4 classes.
SMALL_CORPUS_N = 64


@pytest.fixture(scope="session")
def synthetic_corpus(tmp_path_factory) -> Path:
    """A small synthetic corpus folder (manifest.csv, metadata.jsonl, summary.json, wavs/)."""
    from training.data.synthetic import SyntheticConfig, generate

    out = tmp_path_factory.mktemp("synthetic")
    generate(SyntheticConfig(n=SMALL_CORPUS_N, seed=0), out, progress=False)
    return out


@pytest.fixture(scope="session")
def fake_iemocap(tmp_path_factory) -> Path:
    """A fake IEMOCAP release tree: 5 sessions x 2 speakers x 4 classes x 2 utterances."""
    from training.data.fake_iemocap import make_fake_iemocap

    return make_fake_iemocap(tmp_path_factory.mktemp("iemocap"), per_class=2)


@pytest.fixture
def speech_wav(tmp_path) -> Path:
    """1.5 s of synthesized speech as a 16 kHz mono PCM-16 wav."""
    return write_clip(tmp_path / "speech.wav", kind="speech", seconds=1.5)


@pytest.fixture(scope="session")
def tiny_text_model(tmp_path_factory) -> Path:
    """A randomly initialised one-layer BERT (hidden size 32) with MiniLM's tokenizer, saved as
    a local checkpoint for ``--ling_model``: the linguistic teacher of recipe tests that are
    about folds, targets and resume rather than the text model (each MiniLM teacher fit,
    save and reload took ~1.5 s; MiniLM itself: tests/training/fit/test_teachers.py and
    test_distill.py::test_end_to_end_writes_every_stage_and_exports)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from training.models.teachers.linguistic import resolve_text_model

    path = tmp_path_factory.mktemp("tiny-text-model")
    tokenizer = AutoTokenizer.from_pretrained(resolve_text_model("minilm"))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1,
        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128,
    )  # fmt: skip
    torch.manual_seed(0)
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
