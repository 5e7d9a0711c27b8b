"""training.fit.targets.without_scripted: which utterances the linguistic teacher is left out
on."""

import numpy as np

from training.data.utterance import Utterance
from training.fit.targets import without_scripted


def _targets(n: int) -> dict:
    return {
        t: {"logits": np.zeros((n, 4)), "embedding": np.zeros((n, 8))} for t in ("ling", "pros")
    }


def _utts(corpora: list[str]) -> list[Utterance]:
    return [Utterance(f"u{i}", f"/a/{i}.wav", "sad", corpus=c) for i, c in enumerate(corpora)]


def test_the_linguistic_teacher_is_marked_off_on_scripted_corpora_only():
    utts = _utts(["ravdess", "synthetic", "tess", "synthetic"])
    targets = _targets(6)  # two transfer utterances appended after the training ones
    out = without_scripted(targets, utts, ["ravdess", "tess"])
    assert out["ling"]["applies"].tolist() == [0, 1, 0, 1, 1, 1]
    assert "applies" not in out["pros"]
    assert "applies" not in targets["ling"]  # the caller's targets are not changed


def test_nothing_is_marked_without_scripted_corpora_or_a_linguistic_teacher():
    utts = _utts(["ravdess", "tess"])
    assert "applies" not in without_scripted(_targets(2), utts, [])["ling"]
    pros_only = {"pros": _targets(2)["pros"]}
    assert without_scripted(pros_only, utts, ["ravdess"]) == pros_only
