"""Fixtures of the training tests."""

import pytest

from training.config import load_config
from training.data.synthetic import SyntheticConfig, generate


# The demo preset's 16 voices, 64 utterances: the corpus of test_distill.py and
# test_distill_protocols.py. Here (session-wide) rather than in test_distill.py, so that both
# modules share it and its prosody cache (each module generated and extracted its own, ~5 s).
@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    voices = tuple(load_config("demo").synth_voices) or SyntheticConfig().voices
    generate(SyntheticConfig(n=64, seed=0, voices=voices), root, progress=False)
    return root
