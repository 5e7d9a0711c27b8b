"""Fixtures of the corpus tests: small RAVDESS (WAV) and TESS (FLAC) trees, built once."""

import pytest

from tests.training.data.trees import make_ravdess, make_tess


@pytest.fixture(scope="session")
def ravdess_root(tmp_path_factory):
    """24 actors x 15 clips (every emotion; both intensities where the release has them)."""
    return make_ravdess(tmp_path_factory.mktemp("ravdess"))


@pytest.fixture(scope="session")
def tess_root(tmp_path_factory):
    """2 speakers x 7 emotions x 3 words, FLAC, the release's folder spellings."""
    return make_tess(tmp_path_factory.mktemp("tess"), fmt="flac")
