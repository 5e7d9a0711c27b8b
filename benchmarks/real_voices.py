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

Clips are decoded to 16 kHz mono (emocore.audio.load_audio), cut to the model's longest input
(model.json max_samples; the count is recorded) and scored in batches of clips of similar
length. The JSON (default benchmarks/results/real_voices.json) records the command line, the
date, the load average and the git commit; benchmarks/tables_voices.py renders it.

    python benchmarks/real_voices.py --run runs/demo-voices --model models/demo-voices \\
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

from emocore.audio import SAMPLE_RATE, AudioError, load_audio  # noqa: E402
from emocore.scoring import softmax  # noqa: E402
from server.inference.runtime import Runtime  # noqa: E402
from training.data.corpora import corpus_names, find_corpora, not_found  # noqa: E402
from training.data.ravdess import scan_ravdess  # noqa: E402
from training.eval.metrics import compute_metrics  # noqa: E402
from training.runs import read_stages  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "real_voices.json"
ASTERISK = Path("/usr/share/asterisk/sounds/en")
GAINS = (0.1, 0.3, 1.0, 3.0, 10.0)
GOALS = {"max_class_share": 0.40, "gain_same_label": 1.0, "gain_max_abs_diff": 0.02}
SCORE_KEYS = ("ua", "wa", "macro_f1", "confusion", "n")
CALIBRATION_KEYS = (
    "temperature", "test_ece_before", "test_ece_after", "test_nll_before", "test_nll_after",
)  # fmt: skip


class Failure(RuntimeError):
    """An input the measurement cannot use; the message says which and why."""


# ---- the training run -------------------------------------------------------------------------


def read_json(path: Path) -> dict:
    if not path.is_file():
        raise Failure(f"{path} is missing: not a finished training run")
    return json.loads(path.read_text(encoding="utf-8"))


def preset_of(config: dict) -> str | None:
    """The most specific preset whose every key but run_dir the run's config holds (presets do
    not record themselves in config.json); None when none does."""
    from training.config import preset_names, preset_values

    matches = []
    for name in preset_names():
        values = {k: v for k, v in preset_values(name).items() if k != "run_dir"}
        if all(config.get(key) == value for key, value in values.items()):
            matches.append((len(values), name))
    return max(matches)[1] if matches else None


def main_students(metrics: dict) -> list[dict]:
    """The configured (variant, seed) student of every fold, in fold order."""
    config = metrics["config"]
    return [
        s
        for s in metrics["students"]
        if s["variant"] == config["variant"] and s["seed"] == config["seed"] and "test_best" in s
    ]


def scores(result: dict) -> dict:
    return {key: result[key] for key in SCORE_KEYS if key in result}


def stage_times(run_dir: Path) -> dict:
    """Rank 0's stages: runs, seconds of work (resumed-over stages count as skipped) and the
    highest peak RSS, in the order they first ran."""
    out: dict[str, dict] = {}
    for record in read_stages(run_dir):
        if record.get("rank", 0) != 0:
            continue
        entry = out.setdefault(
            record["stage"], {"runs": 0, "skipped": 0, "seconds": 0.0, "peak_rss_mb": None}
        )
        if record.get("skipped"):
            entry["skipped"] += 1
            continue
        entry["runs"] += 1
        entry["seconds"] = round(entry["seconds"] + record["seconds"], 2)
        peak = record.get("peak_rss_mb")
        if peak is not None:
            entry["peak_rss_mb"] = max(entry["peak_rss_mb"] or 0.0, peak)
    return out


def run_summary(run_dir: Path) -> dict:
    metrics = read_json(run_dir / "metrics.json")
    config = metrics["config"]
    found = main_students(metrics)
    if not found:
        raise Failure(f"{run_dir}/metrics.json has no scored {config['variant']} student")
    student = found[0]  # the first fold's: the one export reads
    fold_index = metrics["folds"].index(student["fold"])
    teachers = metrics["teachers"][fold_index] if fold_index < len(metrics["teachers"]) else {}
    calibration = student.get("calibration") or {}
    stages = stage_times(run_dir)
    return {
        "dir": str(run_dir),
        "preset": preset_of(config),
        "dataset": config["dataset"],
        "data_path": config["data_path"],
        "protocol": config["protocol"],
        "student_model": config["student_model"],
        "epochs": config["epochs"],
        "labels": config["labels"],
        "fold": student["fold"],
        "variant": student["variant"],
        "seed": student["seed"],
        "best_epoch": student["best_epoch"],
        "speakers": student.get("speakers", {}),
        "test_best": scores(student["test_best"]),
        "test_last": scores(student["test_last"]),
        "corpora_best": {c: scores(r) for c, r in student.get("corpora_best", {}).items()},
        "corpora_last": {c: scores(r) for c, r in student.get("corpora_last", {}).items()},
        "teachers": {
            name: {"test_ua": t["test"]["ua"], "test_wa": t["test"]["wa"]}
            for name, t in teachers.items()
            if t.get("test")
        },
        "calibration": {key: calibration[key] for key in CALIBRATION_KEYS if key in calibration},
        "calibration_corpora": {
            corpus: {key: report[key] for key in CALIBRATION_KEYS if key in report}
            for corpus, report in student.get("calibration_corpora", {}).items()
        },
        "refit_test": scores(student["refit"]["test"]) if student.get("refit") else None,
        "seconds": metrics["seconds"],
        "stages": stages,
        "stage_seconds": round(sum(s["seconds"] for s in stages.values()), 1),
    }


def loco_rows(run_dirs: Sequence[Path]) -> list[dict]:
    """One row per leave-one-corpus-out fold: trained on the run's other corpora."""
    rows = []
    for run_dir in run_dirs:
        metrics = read_json(run_dir / "metrics.json")
        config = metrics["config"]
        corpora = corpus_names(config["dataset"], config["data_path"])
        if config["protocol"] != "loso" or len(corpora) < 2:
            raise Failure(
                f"{run_dir}: protocol {config['protocol']} over {corpora or config['dataset']}; "
                "a leave-one-corpus-out run is --dataset=corpora --protocol=loso over >= 2 corpora"
            )
        for student in main_students(metrics):
            rows.append({
                "run": str(run_dir),
                "train": [c for c in corpora if c != student["fold"]],
                "test": student["fold"],
                "student_model": config["student_model"],
                "epochs": config["epochs"],
                "best_epoch": student["best_epoch"],
                "test_best": scores(student["test_best"]),
                "test_last": scores(student["test_last"]),
            })  # fmt: skip
    return rows


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

    def probabilities(self, clips: Sequence[np.ndarray]) -> np.ndarray:
        out = np.zeros((len(clips), len(self.labels)), dtype=np.float64)
        order = sorted(range(len(clips)), key=lambda i: len(clips[i]))
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            logits = self.runtime.run_clips([clips[i] for i in rows]).logits
            out[rows] = softmax(logits.astype(np.float64))
        return out


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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="the training run directory")
    parser.add_argument("--model", type=Path, required=True, help="the exported model directory")
    parser.add_argument(
        "--corpora", type=Path, help="searched first for ravdess/ (then $EMODISTILL_CORPORA)"
    )
    parser.add_argument("--asterisk", type=Path, default=ASTERISK, help=f"default {ASTERISK}")
    parser.add_argument(
        "--loco", type=Path, nargs="*", default=[], help="leave-one-corpus-out run directories"
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0: all)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def report_lines(report: dict) -> list[str]:
    run, ravdess, gain = report["run"], report["ravdess"], report["gain"]
    lines = [
        f"run {run['dir']}: preset {run['preset']}, {run['dataset']} ({run['data_path']}), "
        f"protocol {run['protocol']}, {run['student_model']}, {run['epochs']} epochs, "
        f"{run['seconds'] / 60:.1f} min",
        f"  student test UA/WA best valid {run['test_best']['ua']:.3f}/"
        f"{run['test_best']['wa']:.3f}, last {run['test_last']['ua']:.3f}/"
        f"{run['test_last']['wa']:.3f}",
    ]
    for corpus, result in run["corpora_best"].items():
        lines.append(f"  {corpus}: UA {result['ua']:.3f} WA {result['wa']:.3f} (n {result['n']})")
    shares = ", ".join(f"{k} {v['share']:.0%}" for k, v in ravdess["predicted"].items())
    lines += [
        f"model on RAVDESS {','.join(ravdess['actors'])}: UA {ravdess['ua']:.3f} WA "
        f"{ravdess['wa']:.3f}, {ravdess['clips']} clips, predicted {shares}, mean confidence "
        f"{ravdess['mean_confidence']:.2f}",
        "gain sweep: "
        + "; ".join(
            f"x{g}: same {v['same_label']:.0%}, max diff {v['max_abs_diff']:.3f}"
            for g, v in gain["by_gain"].items()
        ),
    ]
    if report["asterisk"]:
        spread = report["asterisk"]["predicted"]
        lines.append(
            f"Asterisk prompts ({report['asterisk']['clips']}): "
            + ", ".join(f"{k} {v['count']} ({v['share']:.0%})" for k, v in spread.items())
            + f", mean confidence {report['asterisk']['mean_confidence']:.2f}"
        )
    for row in report["loco"]:
        lines.append(
            f"loco {'+'.join(row['train'])} -> {row['test']}: UA {row['test_best']['ua']:.3f} "
            f"WA {row['test_best']['wa']:.3f}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    command = "python benchmarks/real_voices.py " + shlex.join(
        sys.argv[1:] if argv is None else argv
    )
    report: dict = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "git": git_commit(),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_avg_before": list(os.getloadavg()),
        },
        "goals": GOALS,
    }
    try:
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
    report["machine"]["load_avg_after"] = list(os.getloadavg())
    report["seconds"] = round(time.monotonic() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print("\n".join(report_lines(report)))
    print(f"wrote {args.out} ({report['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
