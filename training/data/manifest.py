"""Generic dataset adapter: a CSV or JSONL manifest with
``path,label[,text,speaker,session,split,id,corpus,text_source]``
and optionally ``arousal,valence,dominance`` (dimensional affect on the 1-5 scale: all three or
none per row; a row may leave all three blank). ``text`` may be left out or blank: the
transcribe stage of ``training.distill`` fills it in (``text_source`` then says
``asr:<model>``), and ``write_manifest`` writes such a manifest back.

Paths are relative to the manifest's folder. Every problem (missing columns, missing files,
unknown labels, bad splits) is collected and reported at once in one ``ManifestError``:
a dataset is never silently smaller than its manifest.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

import soundfile as sf

from training.data.utterance import DIMENSIONS, EMOTIONS, Utterance, check_dimensions

REQUIRED_COLUMNS = ("path", "label")
OPTIONAL_COLUMNS = (
    "text",
    "speaker",
    "session",
    "split",
    "id",
    "corpus",
    "text_source",
    *DIMENSIONS,
)
# The columns write_manifest writes, in order.
WRITTEN_COLUMNS = ("path", "label", "text", "text_source", "speaker", "session", "split", "id",
                   "corpus", *DIMENSIONS)  # fmt: skip
VALID_SPLITS = ("", "train", "valid", "test")
MAX_LISTED_PROBLEMS = 20


class ManifestError(ValueError):
    """A manifest with problems; ``problems`` lists every one of them."""

    def __init__(self, path: Path, problems: list[str]):
        self.path = path
        self.problems = problems
        shown = problems[:MAX_LISTED_PROBLEMS]
        more = len(problems) - len(shown)
        lines = "\n".join(f"  - {p}" for p in shown) + (f"\n  ... and {more} more" if more else "")
        super().__init__(f"manifest {path}: {len(problems)} problem(s):\n{lines}")


def _read_rows(path: Path) -> list[dict[str, str]]:
    if path.suffix.lower() in (".jsonl", ".json"):
        rows = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ManifestError(path, [f"line {number}: not JSON ({exc})"]) from exc
            if not isinstance(row, dict):
                raise ManifestError(path, [f"line {number}: not a JSON object"])
            rows.append({k: "" if v is None else str(v) for k, v in row.items()})
        return rows
    with path.open(newline="", encoding="utf-8") as handle:
        return [
            {k: (v or "").strip() for k, v in row.items() if k} for row in csv.DictReader(handle)
        ]


def load_manifest(
    path: str | Path, labels: Sequence[str] = EMOTIONS, unlabelled: bool = False
) -> list[Utterance]:
    """Utterances in manifest order; raises ``ManifestError`` listing all problems.
    ``unlabelled``: speech for the transfer set (``path,text[,speaker,id]``): no label column,
    and every row needs its text (the teachers label it from its words and its prosody)."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(path, ["the manifest file does not exist"])
    rows = _read_rows(path)
    if not rows:
        raise ManifestError(path, ["the manifest has no rows"])
    columns = set().union(*(row.keys() for row in rows))
    required = ("path", "text") if unlabelled else REQUIRED_COLUMNS
    missing_columns = [c for c in required if c not in columns]
    if missing_columns:
        raise ManifestError(path, [f"missing column(s) {missing_columns}; found {sorted(columns)}"])

    problems: list[str] = []
    utterances: list[Utterance] = []
    seen_ids: dict[str, int] = {}
    for number, row in enumerate(rows, start=1):
        where = f"row {number} ({row.get('path', '')!r})"
        audio = Path(row.get("path", ""))
        audio = audio if audio.is_absolute() else path.parent / audio
        label = row.get("label", "")
        split = row.get("split", "")
        ok = True
        if unlabelled:
            label = ""
            if not row.get("text"):
                problems.append(f"{where}: no text (the transfer set's rows need their words)")
                ok = False
        elif label not in labels:
            problems.append(f"{where}: unknown label {label!r}; expected one of {list(labels)}")
            ok = False
        if split not in VALID_SPLITS:
            problems.append(f"{where}: unknown split {split!r}; expected one of {VALID_SPLITS[1:]}")
            ok = False
        dimensions, problem = check_dimensions({d: row.get(d, "") for d in DIMENSIONS})
        if problem:
            problems.append(f"{where}: {problem}")
            ok = False
        if not row.get("path") or not audio.is_file():
            problems.append(f"{where}: audio file not found at {audio}")
            continue
        try:
            duration = sf.info(str(audio)).duration
        except (sf.LibsndfileError, RuntimeError) as exc:
            problems.append(f"{where}: unreadable audio ({exc})")
            continue
        # The path without its suffix is unique where stems alone may repeat across folders.
        utt_id = row.get("id") or Path(row["path"]).with_suffix("").as_posix()
        if utt_id in seen_ids:
            problems.append(f"{where}: duplicate id {utt_id!r} (also row {seen_ids[utt_id]})")
            ok = False
        seen_ids[utt_id] = number
        if ok:
            utterances.append(
                Utterance(
                    id=utt_id,
                    audio_path=str(audio.resolve()),
                    label=label,
                    transcript=row.get("text", ""),
                    speaker=row.get("speaker", ""),
                    session=row.get("session", ""),
                    duration=float(duration),
                    split=split,
                    dimensions=dimensions,
                    corpus=row.get("corpus", ""),
                    text_source=row.get("text_source", ""),
                )
            )
    if problems:
        raise ManifestError(path, problems)
    return utterances


def write_manifest(utterances: Sequence[Utterance], path: str | Path) -> None:
    """A CSV manifest of ``utterances`` (``WRITTEN_COLUMNS``, absolute audio paths) that
    ``load_manifest`` reads back as the same utterances (without their ``extra``)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=WRITTEN_COLUMNS)
        writer.writeheader()
        for u in utterances:
            dims = dict(zip(DIMENSIONS, u.dimensions, strict=True)) if u.dimensions else {}
            writer.writerow({
                "path": u.audio_path, "label": u.label, "text": u.transcript,
                "text_source": u.text_source, "speaker": u.speaker, "session": u.session,
                "split": u.split, "id": u.id, "corpus": u.corpus,
                **{d: str(dims[d]) if dims else "" for d in DIMENSIONS},
            })  # fmt: skip
    tmp.replace(path)
