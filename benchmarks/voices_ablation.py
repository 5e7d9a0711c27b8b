"""The real-voices ablation: the voices preset's student as CE only, + prosodic teacher,
+ linguistic teacher, full, and full without augmentation, 3 seeds each, scored on the held-out
speakers (all, RAVDESS actors 21-24, the synthetic test voices, and the synthetic words-only and
prosody-only subsets); optionally the Whisper base student beside tiny.en (full, one seed) and
the full student without each augmentation in turn (one seed), to choose each on validation.

    python benchmarks/voices_ablation.py --base runs/demo-voices [--seeds 0 1 2] [--workers 2]
        [--whisper-base] [--each-augmentation]

``--base`` is a finished voices run (``make demo-model`` with the corpora leaves one in
runs/demo-voices): every group starts from hard links to its fold files, teachers and targets
(the teachers never see augmentation, so the same files serve every group), and the "aug" group
also to its main student (full, seed 0). Each student is one ``python -m training.distill`` call
(``--ablation --variants=V --seeds=S``), ``--workers`` of them at a time, one thread each, seed 0
of every variant first; a killed benchmark resumes where it stopped. Writes
``benchmarks/results/voices_ablation.json``; ``make tables`` renders it into docs/training.md
and the README.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.run_links import FOLD_FILES, link_folds  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "voices_ablation.json"
# Every augmentation of the preset off: the "no_aug" group.
NO_AUG = [
    "--speed_perturb=0", "--aug_reverb_p=0", "--aug_noise_p=0", "--aug_babble_p=0",
    "--aug_telephone_p=0", "--aug_codec_p=0",
]  # fmt: skip
# group -> (variants, extra distill arguments); the rows of the table, in order.
GROUPS: dict[str, tuple[tuple[str, ...], list[str]]] = {
    "aug": (("ce_only", "ce+pros", "ce+ling", "full"), []),
    "no_aug": (("full",), NO_AUG),
}
WHISPER_BASE = {"whisper_base": (("full",), ["--student_model=whisper-base"])}
# --each-augmentation: the full student without one transform of the preset at a time (seed 0),
# to choose each transform on the validation speakers.
EACH_AUGMENTATION = {
    "speed perturbation": "speed_perturb", "rooms": "aug_reverb_p",
    "coloured noise": "aug_noise_p", "babble": "aug_babble_p",
    "telephone band": "aug_telephone_p", "MP3": "aug_codec_p",
}  # fmt: skip
WITHOUT_EACH = {f"no_{key}": (("full",), [f"--{key}=0"]) for key in EACH_AUGMENTATION.values()}
ONE_SEED_GROUPS = WHISPER_BASE | WITHOUT_EACH
ROWS = {
    ("aug", "ce_only"): "CE only",
    ("aug", "ce+pros"): "+ prosodic teacher",
    ("aug", "ce+ling"): "+ linguistic teacher",
    ("aug", "full"): "full (the preset)",
    ("no_aug", "full"): "full without augmentation",
    ("whisper_base", "full"): "full, Whisper base student",
    **{(f"no_{key}", "full"): f"full without {name}" for name, key in EACH_AUGMENTATION.items()},
}


class Failed(RuntimeError):
    """A training call failed; the message holds the end of its log."""


def command(run_dir: Path, variants: tuple[str, ...], seeds: list[int], extra: list[str],
            threads: int) -> list[str]:  # fmt: skip
    return [
        sys.executable, "-m", "training.distill", "--preset", "voices", f"--run_dir={run_dir}",
        "--ablation", f"--variants={','.join(variants)}", f"--seeds={','.join(map(str, seeds))}",
        f"--threads={threads}", *extra,
    ]  # fmt: skip


def run(cmd: list[str], log: Path) -> float:
    """One training call, its output to ``log``; its wall-clock seconds."""
    print("$", " ".join(cmd[1:]), f"> {log}", flush=True)
    started = time.monotonic()
    with log.open("a", encoding="utf-8") as out:
        status = subprocess.run(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT).returncode
    if status:
        tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-6:]
        raise Failed(f"exit status {status}: {' '.join(cmd[1:])}\n" + "\n".join(tail))
    seconds = time.monotonic() - started
    print(f"  done in {seconds / 60:.1f} min: {' '.join(cmd[5:8])}", flush=True)
    return seconds


def ua(result: dict | None) -> float | None:
    return None if not result else result.get("ua")


def read_metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))


def collect(metrics: dict, variant: str) -> dict[str, dict]:
    """Per seed: validation UA, test UA over all test speakers, per corpus and per synthetic
    subset (best validation epoch), best epoch and the student's seconds."""
    seeds = {}
    for s in metrics["students"]:
        if s["variant"] != variant or "test_best" not in s:
            continue
        row = {
            "valid_ua": ua(s.get("valid_best")),
            "test_ua": ua(s["test_best"]),
            "test_wa": s["test_best"].get("wa"),
            "best_epoch": s.get("best_epoch"),
            "student_seconds": s.get("seconds"),
        }
        for corpus, result in s.get("corpora_best", {}).items():
            row[f"{corpus}_ua"] = ua(result)
        for subset, result in s.get("subsets_best", {}).items():
            row[f"{subset}_ua"] = ua(result)
        calibration = s.get("calibration") or {}
        for key in ("test_ece_before", "test_ece_after"):
            if key in calibration:
                row[key] = calibration[key]
        seeds[str(s["seed"])] = row
    return seeds


def summarise(seeds: dict[str, dict]) -> dict[str, list[float]]:
    """mean and std (ddof 1; 0 for one seed) over seeds of every figure all seeds have."""
    rows = list(seeds.values())
    keys = [k for k in rows[0] if all(r.get(k) is not None for r in rows)]
    out = {}
    for key in keys:
        values = np.array([r[key] for r in rows], dtype=float)
        out[key] = [float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0]
    return out


def teachers(metrics: dict) -> dict[str, dict]:
    first = metrics["teachers"][0] if metrics.get("teachers") else {}
    out = {}
    for name, t in first.items():
        if t.get("test"):
            out[name] = {"test_ua": t["test"]["ua"], "valid_ua": (t.get("valid") or {}).get("ua")}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=Path, default=ROOT / "runs" / "demo-voices")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--workers", type=int, default=2, help="students trained at once")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per student")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "voices-ablation")
    parser.add_argument(
        "--whisper-base", action="store_true", help="also the Whisper base student (seed 0)"
    )
    parser.add_argument(
        "--each-augmentation",
        action="store_true",
        help="also the full student without each transform in turn (seed 0)",
    )
    args = parser.parse_args(argv)
    if not (args.base / "metrics.json").is_file():
        print(f"{args.base} is not a finished voices run (no metrics.json)", file=sys.stderr)
        return 2
    groups = dict(GROUPS)
    if args.whisper_base:
        groups |= WHISPER_BASE
    if args.each_augmentation:
        groups |= WITHOUT_EACH
    started = datetime.now(timezone.utc)
    load_before = os.getloadavg()
    # The one-seed students first (Whisper base is about 3 tiny.en students of work), so that
    # the workers finish together; then seed by seed, so that a stopped run leaves whole seeds.
    jobs = []
    for group, (variants, extra) in groups.items():
        if group in ONE_SEED_GROUPS:
            jobs += [(group, variant, args.seeds[0], extra) for variant in variants]
    for seed in args.seeds:
        for group, (variants, extra) in GROUPS.items():
            jobs += [(group, variant, seed, extra) for variant in variants]
    for group in groups:
        student = ("student",) if group == "aug" else ()
        link_folds(args.base, args.runs / group, (*FOLD_FILES, *student))
    (args.runs / "logs").mkdir(parents=True, exist_ok=True)

    stop = threading.Event()  # set by a failed call: the queued ones do not start

    def job(item: tuple[str, str, int, list[str]]) -> float:
        if stop.is_set():
            return 0.0
        group, variant, seed, extra = item
        log = args.runs / "logs" / f"{group}-{variant}-seed{seed}.log"
        cmd = command(args.runs / group, (variant,), [seed], extra, args.threads)
        try:
            return run(cmd, log)
        except Failed:
            stop.set()
            raise

    pool = ThreadPoolExecutor(args.workers)
    try:
        list(pool.map(job, jobs))
    except Failed as error:
        pool.shutdown(wait=True, cancel_futures=True)
        print(f"a training call failed, the rest cancelled: {error}", file=sys.stderr)
        return 1
    pool.shutdown()
    # One call per group over all its students (all finished: it only writes metrics.json).
    rows = {}
    for group, (variants, extra) in groups.items():
        seeds = [args.seeds[0]] if group in ONE_SEED_GROUPS else args.seeds
        run_dir = args.runs / group
        run(
            command(run_dir, variants, seeds, extra, args.threads), args.runs / "logs" / "final.log"
        )
        metrics = read_metrics(run_dir)
        for variant in variants:
            per_seed = collect(metrics, variant)
            rows[f"{group}/{variant}"] = {
                "label": ROWS[(group, variant)],
                "group": group,
                "variant": variant,
                "seeds": per_seed,
                "summary": summarise(per_seed),
            }
    result = {
        "command": "python benchmarks/voices_ablation.py " + " ".join(argv or sys.argv[1:]),
        "created": started.isoformat(timespec="seconds"),
        "wall_seconds": round((datetime.now(timezone.utc) - started).total_seconds(), 1),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_avg_before": list(load_before),
            "load_avg_after": list(os.getloadavg()),
        },
        "preset": "voices",
        "base": str(args.base),
        "seeds": args.seeds,
        "workers": args.workers,
        "threads": args.threads,
        "teachers": teachers(read_metrics(args.runs / "aug")),
        "rows": rows,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    for row in rows.values():
        s = row["summary"]
        figures = ", ".join(
            f"{k[:-3]} {100 * v[0]:.1f} ± {100 * v[1]:.1f}"
            for k, v in s.items()
            if k.endswith("_ua")
        )
        print(f"{row['label']}: {figures}")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
