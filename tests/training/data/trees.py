"""Small RAVDESS and TESS trees in the official layouts (short sine or noise clips), for the
corpus adapter and download tests."""

from __future__ import annotations

from pathlib import Path

from tests.fixtures import write_clip

RAVDESS_CODES = ("01", "02", "03", "04", "05", "06", "07", "08")
TESS_EMOTIONS = ("angry", "disgust", "fear", "happy", "neutral", "ps", "sad")
# Folder spellings of the TESS release; the others are <speaker>_<emotion>.
TESS_FOLDERS = {
    ("OAF", "fear"): "OAF_Fear",
    ("OAF", "ps"): "OAF_Pleasant_surprise",
    ("OAF", "sad"): "OAF_Sad",
    ("YAF", "ps"): "YAF_pleasant_surprised",
}


def _clip(path: Path, index: int, seconds: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = path.suffix[1:]
    kind = "sine" if index % 2 else "noise"
    freq = 200.0 + 10 * (index % 7)
    return write_clip(path, fmt, seconds=seconds, kind=kind, freq=freq, seed=index)


def ravdess_name(emotion: str, intensity: str, statement: str, repetition: str, actor: int) -> str:
    return f"03-01-{emotion}-{intensity}-{statement}-{repetition}-{actor:02d}"


def make_ravdess(
    root: Path,
    actors=range(1, 25),
    emotions=RAVDESS_CODES,
    statements=("01",),
    repetitions=("01",),
    fmt: str = "wav",
    seconds: float = 0.05,
) -> Path:
    """Actor_NN/<name>.<fmt> for every combination, intensity 01 (and 02 for all but neutral)."""
    index = 0
    for actor in actors:
        for emotion in emotions:
            for intensity in ("01",) if emotion == "01" else ("01", "02"):
                for statement in statements:
                    for repetition in repetitions:
                        name = ravdess_name(emotion, intensity, statement, repetition, actor)
                        _clip(root / f"Actor_{actor:02d}" / f"{name}.{fmt}", index, seconds)
                        index += 1
    return root


def tess_name(speaker: str, word: str, emotion: str) -> str:
    """The release's file stem; its one odd name is OA_bite_neutral."""
    if (speaker, word, emotion) == ("OAF", "bite", "neutral"):
        return "OA_bite_neutral"
    return f"{speaker}_{word}_{emotion}"


def make_tess(
    root: Path,
    speakers=("OAF", "YAF"),
    words=("back", "bite", "chair"),
    emotions=TESS_EMOTIONS,
    fmt: str = "wav",
    seconds: float = 0.05,
) -> Path:
    index = 0
    for speaker in speakers:
        for emotion in emotions:
            folder = TESS_FOLDERS.get((speaker, emotion), f"{speaker}_{emotion}")
            for word in words:
                _clip(root / folder / f"{tess_name(speaker, word, emotion)}.{fmt}", index, seconds)
                index += 1
    return root
