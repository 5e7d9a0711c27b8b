"""Replays the inputs kept from fuzzing and bug hunts (tests/fuzz/corpus/) through the
decoder's property (tests/fuzz/decoder_property.py): each decodes within the limits or is a
clean AudioError, within the memory budget."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fuzz.decoder_property import check

CORPUS = sorted((Path(__file__).parents[1] / "fuzz" / "corpus").iterdir())


def test_the_corpus_is_there():
    assert len(CORPUS) >= 3


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
def test_kept_input_holds_the_property(path):
    check(path.read_bytes())
