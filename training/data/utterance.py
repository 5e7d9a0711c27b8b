"""The utterance record every dataset adapter yields, the 4-class label set, and the
dimensional affect scale (arousal, valence, dominance, 1-5, as IEMOCAP's EmoEvaluation rates)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

# IEMOCAP 4-class set (happy = happy + excited), in model output order.
EMOTIONS: tuple[str, ...] = ("neutral", "happy", "angry", "sad")
# Dimensional affect: names in model output order and the scale's range (the model directory's
# "dimensions" contract, docs/export.md). IEMOCAP's files give them as [V, A, D].
DIMENSIONS: tuple[str, ...] = ("arousal", "valence", "dominance")
DIMENSION_SCALE: tuple[float, float] = (1.0, 5.0)
# Each emotion's typical (arousal, valence, dominance), near IEMOCAP's class means: the anchors
# of the synthetic corpus and of the generated IEMOCAP trees.
DIMENSION_MEANS: dict[str, tuple[float, float, float]] = {
    "neutral": (2.6, 3.0, 2.8),
    "happy": (3.5, 4.2, 3.3),
    "angry": (3.9, 1.8, 4.0),
    "sad": (1.8, 1.9, 2.1),
}


def check_dimensions(
    values: dict[str, str], bounded: bool = True
) -> tuple[tuple[float, float, float] | None, str]:
    """``{name: text}`` for the three DIMENSIONS -> ((arousal, valence, dominance), "") when all
    are numbers (on DIMENSION_SCALE when ``bounded``; finite in any case), (None, "") when all
    are blank, else (None, the problem)."""
    given = {k: str(v).strip() for k, v in values.items() if str(v).strip()}
    if not given:
        return None, ""
    missing = [d for d in DIMENSIONS if d not in given]
    if missing:
        return None, f"dimensions need all of {list(DIMENSIONS)} or none; missing {missing}"
    low, high = DIMENSION_SCALE
    out, bad = [], []
    for name in DIMENSIONS:
        try:
            value = float(given[name])
        except ValueError:
            bad.append(f"{name} {given[name]!r} is not a number")
            continue
        if not math.isfinite(value):
            bad.append(f"{name} {given[name]!r} is not a finite number")
        elif bounded and not low <= value <= high:
            bad.append(f"{name} {value:g} is outside {low:g}-{high:g}")
        out.append(value)
    if bad:
        return None, "; ".join(bad)
    return (out[0], out[1], out[2]), ""


@dataclass(frozen=True)
class Utterance:
    id: str
    audio_path: str
    label: str
    transcript: str = ""
    speaker: str = ""
    session: str = ""
    duration: float = 0.0
    split: str = ""  # optional fixed split from a manifest or a corpus ("train" / "valid" / "test")
    # (arousal, valence, dominance) on DIMENSION_SCALE, or None when the dataset has none
    dimensions: tuple[float, float, float] | None = None
    corpus: str = ""  # the corpus it comes from ("iemocap", "ravdess", "tess"; "" = unnamed)
    # where the transcript comes from: "given" (the dataset) or "asr:<model>" (the transcribe
    # stage); "" before that stage
    text_source: str = ""
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)

    @classmethod
    def from_json(cls, line: str) -> Utterance:
        data = json.loads(line)
        if data.get("dimensions") is not None:
            data["dimensions"] = tuple(float(v) for v in data["dimensions"])
        return cls(**data)


def dimension_array(utterances: list[Utterance]):
    """[N, 3] float32 (arousal, valence, dominance), NaN rows for unrated utterances."""
    import numpy as np

    nan = (float("nan"),) * len(DIMENSIONS)
    return np.array([u.dimensions or nan for u in utterances], dtype=np.float32).reshape(-1, 3)


def write_jsonl(utterances: list[Utterance], path: str | Path) -> None:
    Path(path).write_text("".join(u.to_json() + "\n" for u in utterances), encoding="utf-8")


def read_jsonl(path: str | Path) -> list[Utterance]:
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [Utterance.from_json(line) for line in lines if line.strip()]
