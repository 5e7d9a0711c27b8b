"""What the real-voices demo model measures: its training run's figures and the exported model
scored with ONNX Runtime on held-out real voices, telephone prompts and a gain sweep.

From the run directory (``python -m training.distill --preset voices``): the configuration,
the main student's test UA/WA at the best-validation and the last epoch, overall and per corpus
with confusion matrices, the teachers' test UA, the calibration (T, test ECE before / after,
overall and per corpus) and the run's total and per-stage times (``stages.jsonl``, rank 0).

From the model directory (``python -m export``; ONNX Runtime on the CPU, the probabilities
``softmax(logits)`` as served):

- RAVDESS actors 21-24 (the corpus protocol's test actors; the corpus is looked up under
  ``--corpora``, ``$EMODISTILL_CORPORA`` or data/corpora): UA, WA, confusion, the share of clips
  predicted per class (goal: none above 40%) and the mean confidence (top probability);
- the Asterisk prompts (Debian package asterisk-core-sounds-en-wav, 8 kHz calm telephone
  prompts): the predicted label distribution and the mean confidence;
- a gain sweep over the RAVDESS test clips: each decoded clip times 0.1, 0.3, 3 and 10 against
  x1: the share of clips keeping their x1 label and the max / mean absolute probability
  difference (goal: the same label, within 0.02).

``--loco RUN ...``: leave-one-corpus-out runs (``--dataset=corpora --data_path=ravdess,tess
--protocol=loso``; a fold is named after its test corpus): train corpora -> test corpus, UA/WA.
``--loco-only --loco RUN ... --out FILE`` writes that table alone (no ``--run`` or ``--model``).

Clips are decoded to 16 kHz mono (emocore.audio.load_audio), cut to the model's longest input
(model.json max_samples; the count is recorded) and scored in batches of clips of similar
length. The JSON (default benchmarks/results/real_voices.json) records the command line, the
date, the load average and the git commit; benchmarks/tables_voices.py renders it. The run's
figures are read by benchmarks/real_voices_run.py.

    python benchmarks/real_voices.py --run runs/demo-voices --model models/demo \\
        --loco runs/loco-ravdess runs/loco-tess
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.real_voices_run import Failure, loco_rows, run_summary, scores  # noqa: E402
from emocore.audio import SAMPLE_RATE, AudioError, load_audio  # noqa: E402
from emocore.scoring import softmax  # noqa: E402
from server.inference.runtime import Runtime  # noqa: E402
from training.data.corpora import find_corpora, not_found  # noqa: E402
from training.data.ravdess import scan_ravdess  # noqa: E402
from training.eval.metrics import compute_metrics  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "real_voices.json"
ASTERISK = Path("/usr/share/asterisk/sounds/en")
GAINS = (0.1, 0.3, 1.0, 3.0, 10.0)
GOALS = {"max_class_share": 0.40, "gain_same_label": 1.0, "gain_max_abs_diff": 0.02}


# ---- the exported model -----------------------------------------------------------------------


class Scorer:
    """The model directory on ONNX Runtime (CPU): clips -> probabilities, scored in batches of
    clips of similar length (sorted by length; the fp32 export is exact under padding)."""

    def __init__(self, model_dir: Path, batch_size: int, threads: int):
        self.runtime = Runtime.load(model_dir, device="cpu", threads=threads)
        self.batch_size = batch_size
        self.labels = self.runtime.labels
        model = self.runtime.model
        self.max_samples = model.max_samples
        self.min_samples = model.min_samples

    def fit(self, clip: np.ndarray) -> tuple[np.ndarray | None, bool]:
        """(the clip cut to the longest input, whether it was cut); None when too short."""
        if len(clip) < self.min_samples:
            return None, False
        if self.max_samples is not None and len(clip) > self.max_samples:
            return clip[: self.max_samples], True
        return clip, False

    def logits(self, clips: Sequence[np.ndarray]) -> np.ndarray:
        """The model's (calibrated) logits, one row per clip."""
        out = np.zeros((len(clips), len(self.labels)), dtype=np.float64)
        order = sorted(range(len(clips)), key=lambda i: len(clips[i]))
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            out[rows] = self.runtime.run_clips([clips[i] for i in rows]).logits
        return out

    def probabilities(self, clips: Sequence[np.ndarray]) -> np.ndarray:
        return softmax(self.logits(clips))


def decode(scorer: Scorer, paths: Sequence[Path]) -> tuple[list[np.ndarray], list[int], dict]:
    """(clips, the indices of ``paths`` kept, the count of clips cut and the clips left out,
    each with why: undecodable or shorter than the model's shortest input)."""
    clips, kept, cut, left_out = [], [], 0, {}
    for index, path in enumerate(paths):
        try:
            clip, was_cut = scorer.fit(load_audio(path))
        except AudioError as exc:
            left_out[str(path)] = str(exc)
            continue
        if clip is None:
            left_out[str(path)] = f"shorter than min_samples {scorer.min_samples}"
            continue
        clips.append(clip)
        kept.append(index)
        cut += was_cut
    return clips, kept, {"cut_to_max_samples": cut, "left_out": left_out}


def distribution(labels: Sequence[str], predicted: np.ndarray) -> dict:
    counts = np.bincount(predicted, minlength=len(labels))
    total = max(int(counts.sum()), 1)
    return {
        label: {"count": int(n), "share": float(n / total)}
        for label, n in zip(labels, counts, strict=True)
    }


def ravdess_test(
    scorer: Scorer, corpora_dir: Path | None
) -> tuple[dict, tuple[list[np.ndarray], np.ndarray]]:
    """The test actors' clips: the scores, and (the decoded clips, their probabilities)."""
    root = find_corpora(["ravdess"], corpora_dir)["ravdess"]
    if root is None:
        raise Failure(not_found("ravdess", corpora_dir))
    utterances, problems = scan_ravdess(root, scorer.labels)
    test = [u for u in utterances if u.split == "test"]
    if not test:
        raise Failure(f"{root}: no clip of the test actors with a label in {scorer.labels}")
    started = time.monotonic()
    clips, kept, decoding = decode(scorer, [Path(u.audio_path) for u in test])
    probs = scorer.probabilities(clips)
    truth = [test[i].label for i in kept]
    predicted = probs.argmax(-1)
    result = compute_metrics(truth, [scorer.labels[i] for i in predicted], scorer.labels)
    shares = distribution(scorer.labels, predicted)
    return {
        "root": str(root),
        "actors": sorted({u.speaker for u in test}),
        "clips": len(clips),
        "scan_problems": len(problems),
        **decoding,
        **scores(result),
        "recall": result["recall"],
        "predicted": shares,
        "max_class_share": max(s["share"] for s in shares.values()),
        "mean_confidence": float(probs.max(-1).mean()),
        "seconds": round(time.monotonic() - started, 1),
    }, (clips, probs)


def asterisk_prompts(scorer: Scorer, root: Path) -> dict | None:
    """The prompts' predicted labels; None (and a line saying so) where none are installed."""
    paths = sorted(root.rglob("*.wav"))
    if not paths:
        print(f"no Asterisk prompts under {root} (apt install asterisk-core-sounds-en-wav)")
        return None
    started = time.monotonic()
    clips, kept, decoding = decode(scorer, paths)
    probs = scorer.probabilities(clips)
    predicted = probs.argmax(-1)
    return {
        "root": str(root),
        "clips": len(clips),
        "audio_seconds": round(sum(len(c) for c in clips) / SAMPLE_RATE, 1),
        **decoding,
        "predicted": distribution(scorer.labels, predicted),
        "mean_confidence": float(probs.max(-1).mean()),
        "mean_confidence_by_label": {
            label: float(probs[predicted == i].max(-1).mean())
            for i, label in enumerate(scorer.labels)
            if (predicted == i).any()
        },
        "seconds": round(time.monotonic() - started, 1),
    }


def gain_sweep(scorer: Scorer, clips: list[np.ndarray], reference: np.ndarray) -> dict:
    """Each gain's answers against x1's (``reference``, the probabilities of ``clips``)."""
    started = time.monotonic()
    by_gain = {}
    for gain in GAINS:
        probs = (
            reference
            if gain == 1.0
            else scorer.probabilities([(clip * np.float32(gain)) for clip in clips])
        )
        diff = np.abs(probs - reference)
        by_gain[f"{gain:g}"] = {
            "same_label": float((probs.argmax(-1) == reference.argmax(-1)).mean()),
            "max_abs_diff": float(diff.max()),
            "mean_abs_diff": float(diff.mean()),
        }
    return {
        "gains": list(GAINS),
        "clips": len(clips),
        "by_gain": by_gain,
        "seconds": round(time.monotonic() - started, 1),
    }


def model_summary(scorer: Scorer, model_dir: Path) -> dict:
    meta = scorer.runtime.meta
    training = meta.get("training") or {}
    return {
        "dir": str(model_dir),
        "backbone": meta.get("backbone"),
        "labels": scorer.labels,
        "temperature": meta.get("temperature"),
        "max_samples": scorer.max_samples,
        "sha256": meta["files"]["model.onnx"]["sha256"],
        "training": {
            key: training.get(key)
            for key in ("dataset", "protocol", "fold", "variant", "seed", "epoch", "refit")
        },
        "usage": meta.get("usage"),
    }


# ---- the record -------------------------------------------------------------------------------


def git_commit() -> dict:
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    return {"commit": git("rev-parse", "HEAD") or None, "dirty": bool(git("status", "--short"))}


def record_header(command: str) -> dict:
    """What every record of a measurement starts with: when, the command, the commit, the
    machine and its load average before (``load_avg_after`` is added at the end)."""
    return {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "git": git_commit(),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_avg_before": list(os.getloadavg()),
        },
    }


def write_record(report: dict, out: Path, started: float) -> None:
    """Close a record opened by ``record_header`` (the load average after, the seconds since
    ``started``, a ``time.monotonic()`` value) and write it to ``out`` as JSON."""
    report["machine"]["load_avg_after"] = list(os.getloadavg())
    report["seconds"] = round(time.monotonic() - started, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, help="the training run directory")
    parser.add_argument("--model", type=Path, help="the exported model directory")
    parser.add_argument(
        "--corpora", type=Path, help="searched first for ravdess/ (then $EMODISTILL_CORPORA)"
    )
    parser.add_argument("--asterisk", type=Path, default=ASTERISK, help=f"default {ASTERISK}")
    parser.add_argument(
        "--loco", type=Path, nargs="*", default=[], help="leave-one-corpus-out run directories"
    )
    parser.add_argument(
        "--loco-only",
        action="store_true",
        help="only the --loco runs' table (no --run or --model), into --out",
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0: all)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.loco_only and not args.loco:
        parser.error("--loco-only needs --loco RUN ...")
    if not args.loco_only and (args.run is None or args.model is None):
        parser.error("--run and --model are required (or --loco-only with --loco RUN ...)")
    return args


def print_views(report: dict) -> None:
    """The tables `make tables` writes from the JSON, each without the closing line they share."""
    from benchmarks import tables_voices as views

    shown = [views.real_voices, views.real_voices_ravdess, views.real_voices_gain,
             views.real_voices_asterisk, views.real_voices_loco, views.real_voices_calibration]  # fmt: skip
    for view in shown:
        print("\n".join(view(report)[:-2]), end="\n\n")
    print(views.real_voices(report)[-1])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    command = "python benchmarks/real_voices.py " + shlex.join(
        sys.argv[1:] if argv is None else argv
    )
    report: dict = record_header(command)
    try:
        if args.loco_only:  # the leave-one-corpus-out table alone
            report["loco"] = loco_rows(args.loco)
        else:
            report["goals"] = GOALS
            report["run"] = run_summary(args.run)
            report["loco"] = loco_rows(args.loco)
            scorer = Scorer(args.model, args.batch_size, args.threads)
            report["model"] = model_summary(scorer, args.model)
            report["ravdess"], (clips, probs) = ravdess_test(scorer, args.corpora)
            report["gain"] = gain_sweep(scorer, clips, probs)
            report["asterisk"] = asterisk_prompts(scorer, args.asterisk)
    except Failure as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    write_record(report, args.out, started)
    if args.loco_only:
        from benchmarks.tables_voices import real_voices_loco

        print("\n".join(real_voices_loco(report)))
    else:
        print_views(report)
    print(f"wrote {args.out} ({report['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
