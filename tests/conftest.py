"""Fixtures shared by all test packages (others may append their own at the end)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures import write_clip

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
