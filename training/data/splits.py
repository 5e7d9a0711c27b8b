"""Speaker-independent train/valid/test folds for every evaluation protocol.

Validation speakers are always carved from the training speakers, never from the test fold,
so model selection never sees a test speaker.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from dataclasses import dataclass

from training.data.utterance import Utterance

PROTOCOLS = ("loso", "lospk", "speakers", "manifest", "corpus", "final")
FINAL_FOLD = "final"
DEFAULT_VALID_SPEAKERS = 2
DEFAULT_TEST_SPEAKERS = 2
MANIFEST_SPLITS = ("train", "valid", "test")


class SplitError(ValueError):
    """A protocol that cannot be applied to the given utterances."""


@dataclass(frozen=True)
class Fold:
    name: str
    train: list[Utterance]
    valid: list[Utterance]
    test: list[Utterance]

    def speakers(self, part: str) -> set[str]:
        return {u.speaker for u in getattr(self, part)}


def _speakers(utterances: Sequence[Utterance]) -> list[str]:
    missing = [u.id for u in utterances if not u.speaker]
    if missing:
        raise SplitError(
            f"{len(missing)} utterances have no speaker (e.g. {missing[:3]}); "
            "speaker-independent protocols need one"
        )
    return sorted({u.speaker for u in utterances})


def _pick(candidates: Sequence[str], n: int, seed: int, what: str) -> list[str]:
    if n >= len(candidates):
        raise SplitError(
            f"cannot hold out {n} {what} speakers from {len(candidates)}: {list(candidates)}"
        )
    return sorted(random.Random(seed).sample(sorted(candidates), n))


def _fold(name: str, utterances: Sequence[Utterance], test: set[str], valid: set[str]) -> Fold:
    parts: dict[str, list[Utterance]] = {"train": [], "valid": [], "test": []}
    for u in utterances:
        part = "test" if u.speaker in test else "valid" if u.speaker in valid else "train"
        parts[part].append(u)
    return Fold(name, parts["train"], parts["valid"], parts["test"])


def _loso(utterances: Sequence[Utterance], valid_speakers: int, seed: int) -> list[Fold]:
    sessions = sorted({u.session for u in utterances})
    if "" in sessions or len(sessions) < 2:
        raise SplitError(f"leave-one-session-out needs >= 2 named sessions, got {sessions}")
    folds = []
    for i, session in enumerate(sessions):
        test = {u.speaker for u in utterances if u.session == session}
        rest = [s for s in _speakers(utterances) if s not in test]
        valid = set(_pick(rest, valid_speakers, seed + i, "validation"))
        folds.append(_fold(session, utterances, test, valid))
    return folds


def _lospk(utterances: Sequence[Utterance], valid_speakers: int, seed: int) -> list[Fold]:
    speakers = _speakers(utterances)
    folds = []
    for i, speaker in enumerate(speakers):
        rest = [s for s in speakers if s != speaker]
        valid = set(_pick(rest, valid_speakers, seed + i, "validation"))
        folds.append(_fold(speaker, utterances, {speaker}, valid))
    return folds


def _held_out(
    utterances: Sequence[Utterance],
    valid_speakers: int,
    seed: int,
    test_speakers: Sequence[str] | None,
) -> list[Fold]:
    speakers = _speakers(utterances)
    if test_speakers is None:
        test = set(_pick(speakers, DEFAULT_TEST_SPEAKERS, seed, "test"))
    else:
        test = set(test_speakers)
        unknown = sorted(test - set(speakers))
        if unknown:
            raise SplitError(f"test speakers {unknown} are not in the data ({speakers})")
    rest = [s for s in speakers if s not in test]
    valid = set(_pick(rest, valid_speakers, seed + 1, "validation"))
    return [_fold("test-" + "+".join(sorted(test)), utterances, test, valid)]


def with_held_out_split(
    utterances: Sequence[Utterance], valid_speakers: int = DEFAULT_VALID_SPEAKERS, seed: int = 0
) -> list[Utterance]:
    """The utterances with ``split`` set as the "speakers" protocol holds them out (its test
    speakers, then ``valid_speakers`` of the rest, drawn by ``seed``). A corpus that sets no
    split of its own (the synthetic one) joins ``--protocol=corpus`` this way."""
    (fold,) = _held_out(utterances, valid_speakers, seed, None)
    part = {u.id: name for name in MANIFEST_SPLITS for u in getattr(fold, name)}
    return [dataclasses.replace(u, split=part[u.id]) for u in utterances]


def _fixed(utterances: Sequence[Utterance], name: str, source: str) -> list[Fold]:
    """One fold ``name`` from each utterance's ``split``, set by ``source``."""
    bad = sorted({u.split for u in utterances} - set(MANIFEST_SPLITS))
    if bad:
        raise SplitError(f"split values must be one of {MANIFEST_SPLITS}, found {bad}")
    parts = {part: [u for u in utterances if u.split == part] for part in MANIFEST_SPLITS}
    empty = [part for part, utts in parts.items() if not utts]
    if empty:
        raise SplitError(f"{source} leaves {empty} empty")
    return [Fold(name, parts["train"], parts["valid"], parts["test"])]


def check_speaker_independent(fold: Fold) -> None:
    """Raise if any speaker appears in two parts of the fold (speakers may be '' only for manifests)."""
    parts = ("train", "valid", "test")
    for i, a in enumerate(parts):
        for b in parts[i + 1 :]:
            shared = (fold.speakers(a) & fold.speakers(b)) - {""}
            if shared:
                raise SplitError(f"fold {fold.name}: speakers {sorted(shared)} in both {a} and {b}")


def make_folds(
    utterances: Sequence[Utterance],
    protocol: str,
    *,
    valid_speakers: int = DEFAULT_VALID_SPEAKERS,
    seed: int = 0,
    test_speakers: Sequence[str] | None = None,
) -> list[Fold]:
    """Folds for ``protocol``:

    - "loso": one fold per session (IEMOCAP: 5); its speakers are the test part.
    - "lospk": one fold per speaker (IEMOCAP: 10).
    - "speakers": one fold; test = ``test_speakers`` or 2 chosen by ``seed``.
    - "manifest": one fold from the manifest's ``split`` column.
    - "corpus": one fold "corpus" from the split each real corpus sets (RAVDESS actors 1-16
      train, 17-20 validation, 21-24 test; TESS train only: training/data/ravdess.py, tess.py).
    - "final": one fold "final" whose training part is every utterance (no validation or
      test part): the model for export, trained for an epoch count chosen by a protocol above.
    In the first three, ``valid_speakers`` speakers drawn from the remaining (training)
    speakers form the validation part. Every fold is checked to be speaker-independent.
    """
    if not utterances:
        raise SplitError("no utterances to split")
    if protocol == "loso":
        folds = _loso(utterances, valid_speakers, seed)
    elif protocol == "lospk":
        folds = _lospk(utterances, valid_speakers, seed)
    elif protocol == "speakers":
        folds = _held_out(utterances, valid_speakers, seed, test_speakers)
    elif protocol == "manifest":
        folds = _fixed(utterances, "manifest", "the manifest's split column")
    elif protocol == "corpus":
        folds = _fixed(
            utterances,
            "corpus",
            "the corpora's own protocol (RAVDESS holds out actors; TESS only trains)",
        )
    elif protocol == "final":
        folds = [Fold(FINAL_FOLD, list(utterances), [], [])]
    else:
        raise SplitError(f"unknown protocol {protocol!r}; choose one of {PROTOCOLS}")
    for fold in folds:
        check_speaker_independent(fold)
    return folds
