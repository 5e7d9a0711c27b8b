"""A generated IEMOCAP release tree of the real layout and size, for rehearsals (no real audio).

5 sessions, 10 speakers (F and M per session), 4-class utterances per session as in the
release (1085, 1023, 1151, 1031, 1241 = 5,531: neutral 1,708, happy + excited 1,636, angry
1,103, sad 1,084), plus turns with labels the adapter drops (frustrated, surprised, xxx, ...),
spread over 28 dialogs per session (impro01-08 and script01_1 ... script03_2, once led by the
F and once by the M speaker). Files as ``training.data.iemocap`` reads them:

    SessionN/sentences/wav/<dialog>/<utt_id>.wav
    SessionN/dialog/EmoEvaluation/<dialog>.txt   ("[start - end]\\tutt_id\\tlabel\\t[v, a, d]")
    SessionN/dialog/transcriptions/<dialog>.txt  ("utt_id [start-end]: text")

The audio is short (``seconds``, default 0.1-0.3 s): a tone whose pitch and loudness follow
the label, plus noise; transcripts say an emotion word for about half of the turns; the
[V, A, D] ratings are the mean of two raters' integer scores around the label's typical values
(``fake_iemocap.rated_vad``).

    python -m training.data.full_iemocap --out data/IEMOCAP_rehearsal
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import soundfile as sf

from emocore.audio import SAMPLE_RATE
from training.data.fake_iemocap import EVAL_HEADER, eval_lines, rated_vad, write_dialog_files

PER_SESSION = (1085, 1023, 1151, 1031, 1241)
CLASS_TOTALS = {"neutral": 1708, "happy": 1636, "angry": 1103, "sad": 1084}
RAW = {"neutral": ("neu",), "happy": ("hap", "exc"), "angry": ("ang",), "sad": ("sad",)}
DROPPED = ("fru", "sur", "fea", "dis", "oth", "xxx")
DROPPED_PER_SESSION = 900  # the release has ~10,000 turns in all
DIALOGS = [f"impro0{i}" for i in range(1, 9)] + [
    f"script0{i}_{j}" for i in range(1, 4) for j in (1, 2)
]
TONE = {"neutral": 150.0, "happy": 230.0, "angry": 190.0, "sad": 110.0}
LOUD = {"neutral": 0.2, "happy": 0.35, "angry": 0.5, "sad": 0.12}
WORDS = {
    "neutral": "okay", "happy": "wonderful", "angry": "furious", "sad": "miserable",
}  # fmt: skip


def _labels(rng: np.random.Generator) -> list[list[str]]:
    """Per session, the 4-class labels in a random order, class totals as in the release."""
    pool = [c for c, n in CLASS_TOTALS.items() for _ in range(n)]
    rng.shuffle(pool)
    out, start = [], 0
    for n in PER_SESSION:
        out.append(pool[start : start + n])
        start += n
    return out


def _clip(label: str, seconds: float, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    f0 = TONE.get(label, 140.0) * rng.uniform(0.85, 1.15)
    tone = LOUD.get(label, 0.2) * np.sin(2 * np.pi * f0 * t)
    return (tone + 0.02 * rng.standard_normal(t.size)).astype(np.float32)


def make_full_iemocap(
    root: str | Path,
    seconds: tuple[float, float] = (0.1, 0.3),
    seed: int = 0,
    progress: bool = True,
    long_share: float = 0.0,
    long_seconds: tuple[float, float] = (0.25, 0.35),
) -> dict:
    """Write the tree; returns counts {"utterances" (4-class), "dropped", "files"}.
    Clip lengths are uniform in ``seconds``, or in ``long_seconds`` for a ``long_share`` of
    them (so some batches are long enough for HuBERT's 10-frame time-mask spans)."""
    from tqdm.auto import tqdm

    root = Path(root)
    rng = np.random.default_rng(seed)
    ratings = np.random.default_rng([seed, 7])  # its own stream: the audio is as before
    labels = _labels(rng)
    total = sum(PER_SESSION) + 5 * DROPPED_PER_SESSION
    bar = tqdm(total=total, desc="IEMOCAP tree", unit="utt", disable=not progress)
    kept = dropped = 0
    for s in range(1, 6):
        session = root / f"Session{s}"
        turns = [(lab, RAW[lab][int(rng.integers(len(RAW[lab])))]) for lab in labels[s - 1]]
        turns += [("dropped", str(rng.choice(DROPPED))) for _ in range(DROPPED_PER_SESSION)]
        order = rng.permutation(len(turns))
        dialogs = [f"Ses{s:02d}{lead}_{d}" for d in DIALOGS for lead in ("F", "M")]
        by_dialog: dict[str, list[tuple[str, str]]] = {d: [] for d in dialogs}
        for k, i in enumerate(order):
            by_dialog[dialogs[k % len(dialogs)]].append(turns[i])
        for dialog, items in by_dialog.items():
            wav_dir = session / "sentences" / "wav" / dialog
            wav_dir.mkdir(parents=True, exist_ok=True)
            evals = list(EVAL_HEADER)
            texts = []
            start = 2.0
            counters = {"F": 0, "M": 0}
            for label, raw in items:
                gender = "F" if rng.random() < 0.5 else "M"
                utt_id = f"{dialog}_{gender}{counters[gender]:03d}"
                counters[gender] += 1
                secs = float(rng.uniform(*(long_seconds if rng.random() < long_share else seconds)))
                end = start + secs
                sf.write(wav_dir / f"{utt_id}.wav", _clip(label, secs, rng), SAMPLE_RATE)
                evals += eval_lines(start, end, utt_id, raw, rated_vad(label, ratings))
                word = WORDS.get(label, "well") if rng.random() < 0.5 else "so"
                texts.append(f"{utt_id} [{start:08.4f}-{end:08.4f}]: I am {word} about this.")
                start = end + 0.4
                kept += label != "dropped"
                dropped += label == "dropped"
                bar.update()
            write_dialog_files(session, dialog, evals, texts)
    bar.close()
    return {"utterances": kept, "dropped": dropped, "files": kept + dropped}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(make_full_iemocap(args.out, seed=args.seed))


if __name__ == "__main__":
    main()
