"""IEMOCAP adapter, from the release layout:

    SessionN/dialog/EmoEvaluation/<dialog>.txt     "[start - end]\\tutt_id\\tlabel\\t[v, a, d]"
    SessionN/dialog/transcriptions/<dialog>.txt    "utt_id [start-end]: text"
    SessionN/sentences/wav/<dialog>/<utt_id>.wav

The 4-class set: neutral, happy (hap + exc), angry, sad; other labels are dropped. The
evaluators' mean ratings ``[V, A, D]`` (valence, activation = arousal, dominance; 1-5) become
the utterance's ``dimensions`` in the model's order (arousal, valence, dominance), as the file
gives them (a rating a little outside 1-5 is kept, not clipped); a line whose ratings are not
three numbers is listed as a problem.
"""

from __future__ import annotations

import re
from pathlib import Path

from training.data.utterance import Utterance, check_dimensions

LABEL_MAP = {"neu": "neutral", "hap": "happy", "exc": "happy", "ang": "angry", "sad": "sad"}
SESSIONS = tuple(f"Session{i}" for i in range(1, 6))
_EVAL_LINE = re.compile(
    r"^\[(?P<start>[\d.]+)\s*-\s*(?P<end>[\d.]+)\]\t(?P<id>\S+)\t(?P<label>\S+)\t\[(?P<vad>[^\]]*)\]"
)
_TRANSCRIPT_LINE = re.compile(r"^(?P<id>Ses\S+)\s+\[[^\]]*\]:\s*(?P<text>.*)$")


class IemocapError(ValueError):
    """A release tree that does not match the layout, with every problem listed."""


def speaker_of(utt_id: str) -> str:
    """``Ses01F_impro01_M012`` -> ``Ses01M``: the session plus the gender of the last id part
    (the speaker of that turn, not the dialog's first speaker)."""
    return utt_id[:5] + utt_id.rsplit("_", 1)[-1][0]


def session_of(utt_id: str) -> str:
    return utt_id[:5]


def parse_vad(text: str) -> tuple[tuple[float, float, float] | None, str]:
    """``"2.5000, 3.0000, 2.0000"`` (the file's [V, A, D]) -> ((arousal, valence, dominance), "")
    or (None, the problem)."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 3:
        return None, f"ratings [{text}] are not three values [V, A, D]"
    valence, arousal, dominance = parts
    named = {"arousal": arousal, "valence": valence, "dominance": dominance}
    return check_dimensions(named, bounded=False)


def _transcripts(session_dir: Path) -> dict[str, str]:
    texts: dict[str, str] = {}
    for path in sorted((session_dir / "dialog" / "transcriptions").glob("*.txt")):
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            match = _TRANSCRIPT_LINE.match(line.strip())
            if match:
                texts[match["id"]] = match["text"].strip()
    return texts


def load_iemocap(root: str | Path) -> list[Utterance]:
    """4-class utterances of all sessions under ``root``; raises ``IemocapError`` listing
    missing folders and wav files rather than returning a silently smaller dataset."""
    root = Path(root)
    sessions = [root / s for s in SESSIONS if (root / s).is_dir()]
    if not sessions:
        raise IemocapError(f"no Session1..Session5 folders under {root}")
    problems: list[str] = []
    utterances: list[Utterance] = []
    for session_dir in sessions:
        eval_dir = session_dir / "dialog" / "EmoEvaluation"
        eval_files = sorted(eval_dir.glob("*.txt"))
        if not eval_files:
            problems.append(f"no evaluation files in {eval_dir}")
            continue
        texts = _transcripts(session_dir)
        for eval_file in eval_files:
            dialog = eval_file.stem
            for line in eval_file.read_text(encoding="utf-8", errors="replace").splitlines():
                match = _EVAL_LINE.match(line)
                if not match or match["label"] not in LABEL_MAP:
                    continue
                utt_id = match["id"]
                wav = session_dir / "sentences" / "wav" / dialog / f"{utt_id}.wav"
                if not wav.is_file():
                    problems.append(f"missing audio {wav}")
                    continue
                dimensions, problem = parse_vad(match["vad"])
                if problem:
                    problems.append(f"{eval_file}: {utt_id}: {problem}")
                    continue
                utterances.append(
                    Utterance(
                        id=utt_id,
                        audio_path=str(wav.resolve()),
                        label=LABEL_MAP[match["label"]],
                        transcript=texts.get(utt_id, ""),
                        speaker=speaker_of(utt_id),
                        session=session_of(utt_id),
                        duration=round(float(match["end"]) - float(match["start"]), 4),
                        dimensions=dimensions,
                        corpus="iemocap",
                        extra={"raw_label": match["label"], "dialog": dialog},
                    )
                )
    if problems:
        shown = "\n".join(f"  - {p}" for p in problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise IemocapError(f"IEMOCAP tree {root}: {len(problems)} problem(s):\n{shown}{more}")
    return utterances
