"""A tiny fake IEMOCAP release tree in the exact layout, for tests (real, short wav files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from emocore.audio import SAMPLE_RATE
from training.data.utterance import DIMENSION_MEANS

# Raw labels written per speaker and class; "hap"/"exc" alternate for happy so both map.
_RAW = {"neutral": ("neu",), "happy": ("hap", "exc"), "angry": ("ang",), "sad": ("sad",)}
# Labels the adapter must drop, written once per speaker.
DROPPED_LABELS = ("fru", "xxx")
_TONES_HZ = {"neutral": 150.0, "happy": 220.0, "angry": 180.0, "sad": 110.0}


EVAL_HEADER = ("% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", "")


RATERS = 2  # evaluators per turn whose integer 1-5 scores the file averages


def rated_vad(label: str, rng: np.random.Generator) -> tuple[float, float, float]:
    """(V, A, D) as the release writes them: the mean of ``RATERS`` integer 1-5 scores, each
    the label's typical value (DIMENSION_MEANS; neutral's for other labels) plus rater noise."""
    arousal, valence, dominance = DIMENSION_MEANS.get(label, DIMENSION_MEANS["neutral"])
    scores = np.array([valence, arousal, dominance]) + rng.normal(0, 0.7, (RATERS, 3))
    return tuple(float(v) for v in np.clip(np.rint(scores), 1, 5).mean(0))


def eval_lines(
    start: float, end: float, utt_id: str, raw: str, vad: tuple[float, float, float]
) -> list[str]:
    """One turn of an EmoEvaluation file, as the release writes it (``vad`` = [V, A, D])."""
    v, a, d = vad
    return [
        f"[{start:.4f} - {end:.4f}]\t{utt_id}\t{raw}\t[{v:.4f}, {a:.4f}, {d:.4f}]",
        f"C-E1:\t{raw.capitalize()};\t()",
        "",
    ]


def write_dialog_files(
    session_dir: Path, dialog: str, evaluation: list[str], transcription: list[str]
) -> None:
    """``dialog/EmoEvaluation/<dialog>.txt`` and ``dialog/transcriptions/<dialog>.txt``."""
    for sub, lines in (("EmoEvaluation", evaluation), ("transcriptions", transcription)):
        folder = session_dir / "dialog" / sub
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{dialog}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _clip(label: str, seconds: float, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    tone = 0.3 * np.sin(2 * np.pi * _TONES_HZ.get(label, 130.0) * t)
    return (tone + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def make_fake_iemocap(
    root: str | Path, per_class: int = 2, seconds: float = 0.3, sessions: int = 5, seed: int = 0
) -> Path:
    """Write ``sessions`` sessions, each with one improvised and one scripted dialog and two
    speakers (F and M), ``per_class`` utterances per speaker and 4-class label, plus
    utterances with dropped labels. Returns ``root``.

    Expected after loading: sessions * 2 speakers * 4 classes * per_class utterances.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    ratings = np.random.default_rng([seed, 7])  # its own stream: the audio is as before
    for s in range(1, sessions + 1):
        session_dir = root / f"Session{s}"
        dialogs = {f"Ses{s:02d}F_impro01": [], f"Ses{s:02d}M_script01_1": []}
        names = list(dialogs)
        counter = 0
        for gender in ("F", "M"):
            plan = [(c, _RAW[c][k % len(_RAW[c])]) for c in _RAW for k in range(per_class)]
            plan += [("dropped", raw) for raw in DROPPED_LABELS]
            for label, raw in plan:
                dialog = names[counter % len(names)]
                utt_id = f"{dialog}_{gender}{counter:03d}"
                dialogs[dialog].append((utt_id, label, raw))
                counter += 1
        for dialog, turns in dialogs.items():
            wav_dir = session_dir / "sentences" / "wav" / dialog
            wav_dir.mkdir(parents=True, exist_ok=True)
            evaluation, text_lines = list(EVAL_HEADER), []
            start = 1.0
            for utt_id, label, raw in turns:
                end = start + seconds
                sf.write(wav_dir / f"{utt_id}.wav", _clip(label, seconds, rng), SAMPLE_RATE)
                evaluation += eval_lines(start, end, utt_id, raw, rated_vad(label, ratings))
                text_lines.append(f"{utt_id} [{start:08.4f}-{end:08.4f}]: I feel {label} today.")
                start = end + 0.5
            write_dialog_files(session_dir, dialog, evaluation, text_lines)
    return root
