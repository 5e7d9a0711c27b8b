"""TESS (Toronto Emotional Speech Set) adapter, from the official extracted layout:

    <root>/{OAF,YAF}_<emotion>/<speaker>_<word>_<emotion>.wav     (.flac is read alike)

Two female speakers, OAF (older, 64) and YAF (younger, 26), each say "Say the word <word>"
for 200 words in 7 emotions: 2,800 clips. The file name decides speaker, word and emotion;
folder names vary in case and spelling in the release (``OAF_Fear``, ``OAF_Pleasant_surprise``,
``YAF_pleasant_surprised``), so both are read case-insensitively, and a file in a
``<speaker>_<emotion>`` folder must agree with it. One release file is named
``OA_bite_neutral``: ``OA`` is read as OAF. Files outside such folders (a flat download) are
read by their names alone.

Labels (``LABELS``): angry, disgust, fear -> fearful, happy, neutral, ps (pleasant surprise)
-> surprised, sad. The transcript is the carrier phrase with the word.

Protocol: with two speakers there is no speaker-independent validation and test inside TESS.
Each utterance's ``split`` is "train" (``--protocol=corpus`` uses TESS as training data beside
a corpus that has held-out speakers, e.g. RAVDESS); TESS alone is evaluated leave-one-speaker-
out (``--protocol=lospk --valid_speakers=0``: 2 folds, a fixed epoch count, no validation).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from training.data.corpus import load_tree, scan_tree
from training.data.utterance import EMOTIONS, Utterance

NAME = "tess"
# Emotion words of the names (lower case) -> labels.
LABELS = {
    "angry": "angry", "disgust": "disgust", "fear": "fearful", "happy": "happy",
    "neutral": "neutral", "ps": "surprised", "sad": "sad",
    "pleasant_surprise": "surprised", "pleasant_surprised": "surprised",
}  # fmt: skip
SPEAKERS = {"oaf": "OAF", "oa": "OAF", "yaf": "YAF"}
AGE_GROUPS = {"OAF": "older", "YAF": "younger"}
CARRIER = "Say the word {word}"
CLIPS = 2800  # 2 speakers x 7 emotions x 200 words
_FOLDER = re.compile(r"^(oaf|yaf)_(.+)$", re.IGNORECASE)
_WORD = re.compile(r"^[a-z]+$")


def parse_name(stem: str) -> tuple[dict | None, str]:
    """``"OAF_back_ps"`` -> ({"speaker", "word", "label", "raw_label"}, "") or (None, what is
    wrong with the name)."""
    parts = stem.split("_")
    if len(parts) < 3:
        return None, "not a TESS name <speaker>_<word>_<emotion>"
    speaker, word, emotion = parts[0].lower(), parts[1].lower(), "_".join(parts[2:])
    wrong = []
    if speaker not in SPEAKERS:
        wrong.append(f"speaker {parts[0]!r} is not OAF or YAF")
    if not _WORD.match(word):
        wrong.append(f"word {parts[1]!r} is not a word")
    if emotion.lower() not in LABELS:
        wrong.append(f"emotion {emotion!r} is not one of {sorted(LABELS)}")
    if wrong:
        return None, "; ".join(wrong)
    fields = {
        "speaker": SPEAKERS[speaker],
        "word": word,
        "label": LABELS[emotion.lower()],
        "raw_label": emotion,
    }
    return fields, ""


def folder_problem(path: Path, fields: dict) -> str:
    """What a ``<speaker>_<emotion>`` folder says against the file's name, or ""."""
    folder = _FOLDER.match(path.parent.name)
    if not folder:
        return ""
    speaker, emotion = SPEAKERS[folder[1].lower()], LABELS.get(folder[2].lower())
    if emotion is None:
        return f"folder {path.parent.name!r}: emotion {folder[2]!r} is not one of {sorted(LABELS)}"
    if (speaker, emotion) != (fields["speaker"], fields["label"]):
        return (
            f"the name says {fields['speaker']} {fields['label']}, its folder {speaker} {emotion}"
        )
    return ""


def _read(path: Path) -> tuple[str, dict | None, str]:
    fields, problem = parse_name(path.stem)
    problem = problem or folder_problem(path, fields)
    if problem:
        return "", None, problem
    return f"{fields['speaker']} {fields['word']} {fields['label']}", fields, ""


def _build(path: Path, fields: dict, duration: float) -> Utterance:
    return Utterance(
        id=f"{NAME}/{path.stem}",
        audio_path=str(path.resolve()),
        label=fields["label"],
        transcript=CARRIER.format(word=fields["word"]),
        speaker=fields["speaker"],
        session=NAME,
        duration=duration,
        split="train",
        corpus=NAME,
        extra={
            "raw_label": fields["raw_label"],
            "gender": "female",
            "age_group": AGE_GROUPS[fields["speaker"]],
            "word": fields["word"],
        },
    )


def scan_tess(
    root: str | Path, labels: Iterable[str] = EMOTIONS
) -> tuple[list[Utterance], list[str]]:
    """(utterances with a label in ``labels``, every problem found); a problem-free scan with
    all of ``ACTED_LABELS`` gives the whole corpus (``CLIPS`` for the official release)."""
    return scan_tree(NAME, root, labels, _read, _build)


def load_tess(root: str | Path, labels: Iterable[str] = EMOTIONS) -> list[Utterance]:
    """Utterances of the TESS tree at ``root`` with a label in ``labels``; raises
    ``CorpusError`` listing every malformed name, disagreeing folder or unreadable file."""
    return load_tree(NAME, root, scan_tess(root, labels))
