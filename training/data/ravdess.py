"""RAVDESS adapter (the speech part), from the official extracted layout:

    <root>/Actor_NN/03-01-EE-II-SS-RR-NN.wav      (.flac is read alike)

``Audio_Speech_Actors_01-24.zip`` extracts to Actor_01 ... Actor_24, 60 clips each (1,440).
The name's seven fields: modality 03 (audio only), vocal channel 01 (speech), emotion EE,
intensity II (01 normal, 02 strong; neutral has only 01), statement SS, repetition RR (01, 02),
actor NN (01-24; odd = male, even = female), as the release documents them.

Labels (``LABELS``): 01 neutral, 02 calm, 03 happy, 04 sad, 05 angry, 06 fearful, 07 disgust,
08 surprised; calm stays its own class (it is not merged into neutral). The transcript is the
statement, so the linguistic teacher reads the exact words (both are emotionally neutral).

Protocol (the ``split`` each utterance carries, read by ``--protocol=corpus``): actors 1-16
train, 17-20 validation, 21-24 test (each part half male, half female). ``session`` is the
corpus name, so ``loso`` over several corpora leaves one corpus out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from training.data.corpus import load_tree, scan_tree
from training.data.utterance import EMOTIONS, Utterance

NAME = "ravdess"
LABELS = {
    "01": "neutral", "02": "calm", "03": "happy", "04": "sad",
    "05": "angry", "06": "fearful", "07": "disgust", "08": "surprised",
}  # fmt: skip
STATEMENTS = {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}
INTENSITIES = {"01": "normal", "02": "strong"}
REPETITIONS = ("01", "02")
ACTORS = 24
CLIPS = 1440  # the official speech archive: 24 actors x 60 clips
VALID_ACTORS = range(17, 21)
TEST_ACTORS = range(21, 25)
_NAME = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")
_FOLDER = re.compile(r"^Actor_(\d\d)$")


def split_of(actor: int) -> str:
    """The corpus protocol's part for an actor number."""
    return "test" if actor in TEST_ACTORS else "valid" if actor in VALID_ACTORS else "train"


def speaker_of(actor: int) -> str:
    return f"Actor_{actor:02d}"


def parse_name(stem: str) -> tuple[dict | None, str]:
    """``"03-01-05-02-01-02-13"`` -> ({"label", "raw_label", "intensity", "statement",
    "repetition", "actor"}, "") or (None, what is wrong with the name)."""
    match = _NAME.match(stem)
    if not match:
        return None, "not a RAVDESS name MM-VV-EE-II-SS-RR-AA (seven two-digit fields)"
    modality, channel, emotion, intensity, statement, repetition, actor = match.groups()
    wrong = []
    if modality != "03":
        wrong.append(f"modality {modality} is not 03 (audio only)")
    if channel != "01":
        wrong.append(f"vocal channel {channel} is not 01 (speech)")
    if emotion not in LABELS:
        wrong.append(f"emotion {emotion} is not one of 01-08")
    if intensity not in INTENSITIES:
        wrong.append(f"intensity {intensity} is not 01 or 02")
    elif intensity == "02" and emotion == "01":
        wrong.append("neutral has no strong intensity (02)")
    if statement not in STATEMENTS:
        wrong.append(f"statement {statement} is not 01 or 02")
    if repetition not in REPETITIONS:
        wrong.append(f"repetition {repetition} is not 01 or 02")
    if not 1 <= int(actor) <= ACTORS:
        wrong.append(f"actor {actor} is not 01-{ACTORS}")
    if wrong:
        return None, "; ".join(wrong)
    fields = {
        "label": LABELS[emotion],
        "raw_label": emotion,
        "intensity": INTENSITIES[intensity],
        "statement": STATEMENTS[statement],
        "repetition": int(repetition),
        "actor": int(actor),
    }
    return fields, ""


def _read(path: Path) -> tuple[str, dict | None, str]:
    fields, problem = parse_name(path.stem)
    if problem:
        return "", None, problem
    folder = _FOLDER.match(path.parent.name)
    if not folder or int(folder[1]) != fields["actor"]:
        return "", None, f"not in its actor's folder {speaker_of(fields['actor'])}"
    return path.stem, fields, ""


def _build(path: Path, fields: dict, duration: float) -> Utterance:
    actor = fields["actor"]
    return Utterance(
        id=f"{NAME}/{path.stem}",
        audio_path=str(path.resolve()),
        label=fields["label"],
        transcript=fields["statement"],
        speaker=speaker_of(actor),
        session=NAME,
        duration=duration,
        split=split_of(actor),
        corpus=NAME,
        extra={
            "raw_label": fields["raw_label"],
            "gender": "male" if actor % 2 else "female",
            "intensity": fields["intensity"],
            "repetition": fields["repetition"],
        },
    )


def scan_ravdess(
    root: str | Path, labels: Iterable[str] = EMOTIONS
) -> tuple[list[Utterance], list[str]]:
    """(utterances with a label in ``labels``, every problem found); a problem-free scan with
    all of ``ACTED_LABELS`` gives the whole corpus (``CLIPS`` for the official release)."""
    return scan_tree(NAME, root, labels, _read, _build)


def load_ravdess(root: str | Path, labels: Iterable[str] = EMOTIONS) -> list[Utterance]:
    """Utterances of the RAVDESS speech tree at ``root`` with a label in ``labels``; raises
    ``CorpusError`` listing every malformed name, misplaced or unreadable file."""
    return load_tree(NAME, root, scan_ravdess(root, labels))
