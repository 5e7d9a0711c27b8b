"""What the corpora named by their file names (RAVDESS, TESS) share: the label names, the
chosen-label check, the scan of a tree (``scan_tree``) and the error that lists every problem.

Each corpus maps its own labels onto ``ACTED_LABELS`` (training/data/ravdess.py,
training/data/tess.py); a load keeps the utterances whose label is among the chosen ones
(default ``EMOTIONS``: neutral, happy, angry, sad) and drops the others, as the IEMOCAP
adapter drops its other labels. A malformed file name is a problem, never a silent skip.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import soundfile as sf

from training.data.utterance import EMOTIONS, Utterance

# A corpus's reading of one file: (the recording's key for duplicate detection, its fields
# with at least "label", "") or ("", None, the problem with its name or place).
Read = Callable[[Path], tuple[str, dict | None, str]]
# Its utterance from a file, the fields read and the clip's duration.
Build = Callable[[Path, dict, float], Utterance]

# Every label a corpus here can give: the 4-class set first, then the other acted emotions.
ACTED_LABELS: tuple[str, ...] = (*EMOTIONS, "calm", "fearful", "disgust", "surprised")
AUDIO_SUFFIXES = (".wav", ".flac")
MAX_LISTED_PROBLEMS = 20


class CorpusError(ValueError):
    """A corpus tree with problems; ``problems`` lists every one of them."""

    def __init__(self, name: str, root: Path | str, problems: list[str]):
        self.name = name
        self.root = Path(root)
        self.problems = problems
        shown = problems[:MAX_LISTED_PROBLEMS]
        more = len(problems) - len(shown)
        lines = "\n".join(f"  - {p}" for p in shown) + (f"\n  ... and {more} more" if more else "")
        super().__init__(f"{name} tree {root}: {len(problems)} problem(s):\n{lines}")


def chosen_labels(name: str, root: Path | str, labels: Iterable[str]) -> tuple[str, ...]:
    """``labels`` as a tuple, or ``CorpusError`` naming those outside ``ACTED_LABELS``."""
    labels = tuple(labels)
    unknown = [label for label in labels if label not in ACTED_LABELS]
    if unknown:
        raise CorpusError(
            name, root, [f"unknown label(s) {unknown}; the corpora give {list(ACTED_LABELS)}"]
        )
    return labels


def audio_files(name: str, root: Path | str) -> list[Path]:
    """The ``.wav``/``.flac`` files under ``root`` (any depth, any case of the suffix), sorted;
    ``CorpusError`` when ``root`` is not a folder or holds none."""
    root = Path(root)
    if not root.is_dir():
        raise CorpusError(name, root, ["the folder does not exist"])
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
    if not files:
        raise CorpusError(name, root, [f"no {' or '.join(AUDIO_SUFFIXES)} files"])
    return files


def clip_duration(path: Path) -> tuple[float, str]:
    """(seconds, "") or (0.0, the problem) for an audio file."""
    try:
        return float(sf.info(str(path)).duration), ""
    except (sf.LibsndfileError, RuntimeError) as exc:
        return 0.0, f"{path}: unreadable audio ({exc})"


def duplicates(keys: Sequence[tuple[str, Path]]) -> list[str]:
    """Problems for keys given by more than one file: ``[(key, path), ...]``."""
    first: dict[str, Path] = {}
    problems = []
    for key, path in keys:
        if key in first:
            problems.append(f"{path}: the same recording as {first[key]} ({key})")
        else:
            first[key] = path
    return problems


def scan_tree(
    name: str, root: str | Path, labels: Iterable[str], read: Read, build: Build
) -> tuple[list[Utterance], list[str]]:
    """(the utterances with a label in ``labels``, every problem found) of the corpus tree at
    ``root``: each audio file is read by its name and place, a recording given twice is a
    problem, and an unreadable clip of a chosen label is one too."""
    root = Path(root)
    labels = chosen_labels(name, root, labels)
    problems: list[str] = []
    utterances: list[Utterance] = []
    keys = []
    for path in audio_files(name, root):
        key, fields, problem = read(path)
        if problem or fields is None:
            problems.append(f"{path}: {problem}")
            continue
        keys.append((key, path))
        if fields["label"] not in labels:
            continue
        duration, problem = clip_duration(path)
        if problem:
            problems.append(problem)
            continue
        utterances.append(build(path, fields, duration))
    return utterances, problems + duplicates(keys)


def load_tree(
    name: str, root: str | Path, scanned: tuple[list[Utterance], list[str]]
) -> list[Utterance]:
    """The utterances of a scan, or ``CorpusError`` listing its problems."""
    utterances, problems = scanned
    if problems:
        raise CorpusError(name, root, problems)
    return utterances
