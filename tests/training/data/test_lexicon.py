"""The wide lexicon and its held-out-vocabulary split: test words never reach training."""

import re

import pytest

from training.data import lexicon
from training.data.synthetic import SyntheticConfig, plan_corpus
from training.data.transfer import PROBE_VOICES, TRANSFER_VOICES, probe_config, transfer_config


def _said(word: str, text: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", text.lower()) is not None


def test_the_lexicon_is_wide_enough():
    for label, words in lexicon.WORDS.items():
        assert len(set(words)) >= 40, label
    assert len(set(lexicon.FRAMES)) >= 20
    every = [w for words in lexicon.WORDS.values() for w in words]
    assert len(every) == len(set(every))  # no word in two classes
    assert any(w.startswith("not ") for w in every)  # negations
    assert any(w.split()[0] in ("really", "absolutely") for w in every)  # intensifiers


def test_the_parts_are_disjoint_and_cover_the_lexicon():
    parts = lexicon.split()
    for label, words in lexicon.WORDS.items():
        by_part = [set(parts[p]["words"][label]) for p in lexicon.PARTS]
        assert set().union(*by_part) == set(words)
        assert sum(len(p) for p in by_part) == len(words)
        assert all(by_part), label
    frames = [set(parts[p]["frames"]) for p in lexicon.PARTS]
    assert set().union(*frames) == set(lexicon.FRAMES) and sum(map(len, frames)) == 25
    assert parts == lexicon.split()  # a fixed draw


def test_novel_words_share_no_content_word_with_anything_trained_on():
    parts = lexicon.split()
    trained = set().union(
        *(lexicon.tokens(w) for p in ("labelled", "transfer") for ws in parts[p]["words"].values()
          for w in ws)
    )  # fmt: skip
    for words in parts["novel"]["words"].values():
        for word in words:
            assert not lexicon.tokens(word) & trained, word


def test_held_out_vocabulary_never_reaches_the_training_corpora():
    """The labelled corpus (the demo's) and the transfer set speak no novel word or frame, and
    the labelled corpus no transfer word: checked on every planned sentence."""
    parts = lexicon.split()
    novel = [w for ws in parts["novel"]["words"].values() for w in ws]
    transfer_only = [w for ws in parts["transfer"]["words"].values() for w in ws]
    novel_frames = [lexicon.frame_words(f).strip() for f in parts["novel"]["frames"]]
    labelled = plan_corpus(SyntheticConfig(n=960, seed=0))
    unlabelled = plan_corpus(transfer_config(960, seed=1))
    for plan in labelled + unlabelled:
        assert not [w for w in novel if _said(w, plan.text)], plan.text
    for plan in labelled:
        assert not [w for w in transfer_only if _said(w, plan.text)], plan.text
    texts = {p.text for p in labelled + unlabelled}
    probe = plan_corpus(probe_config("novel", 96))
    assert not texts & {p.text for p in probe}
    # every novel probe sentence is built from a novel frame
    frames = [re.escape(f).replace(r"\{adj\}", ".+").replace(r"\{topic\}", ".+")
              .replace(r"\{pause\}", "") for f in parts["novel"]["frames"]]  # fmt: skip
    for plan in probe:
        assert any(re.fullmatch(f, plan.text) for f in frames), plan.text
    assert novel_frames  # the frames themselves differ from the labelled ones
    assert not set(parts["novel"]["frames"]) & set(parts["labelled"]["frames"])


def test_the_probe_is_words_only_and_spoken_by_other_voices():
    for part in ("seen", "transfer", "novel"):
        plans = plan_corpus(probe_config(part, 32))
        assert all(p.words_carry and not p.prosody_carries for p in plans)
    demo_voices = set(SyntheticConfig().voices)
    assert not set(PROBE_VOICES) & set(TRANSFER_VOICES)
    assert not (set(PROBE_VOICES) | set(TRANSFER_VOICES)) & demo_voices


def test_transfer_prosody_is_independent_of_the_words():
    plans = plan_corpus(transfer_config(2000, seed=1))
    agree = sum(p.prosody_emotion == p.words_emotion for p in plans) / len(plans)
    assert agree == pytest.approx(0.25, abs=0.04)


def test_unknown_part_is_an_error():
    with pytest.raises(ValueError, match="unknown lexicon part"):
        lexicon.vocabulary("test")
