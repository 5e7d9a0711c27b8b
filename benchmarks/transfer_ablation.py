"""The transfer-set ablation: the demo recipe's full student without a transfer set and with it
at two sizes, 3 seeds each, scored on the test voices (overall, words-only, prosody-only) and on
the vocabulary probe (words-only on seen, transfer-only and novel vocabulary, held-out voices),
beside the linguistic teacher on the same probe transcripts.

    python benchmarks/transfer_ablation.py [--sizes 480 1440] [--mix 0.5] [--seeds 0 1 2]

The runs share their teachers: the first (no transfer set) trains them; each transfer run
starts from hard links to its fold's teachers and labelled targets (the same files: the
teachers never see the transfer set's labels), so only the transfer set, its targets and the
students are new work. Writes ``benchmarks/results/transfer_ablation.json``; ``make tables``
renders it into docs/training.md and the README.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.run_links import link_folds  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "transfer_ablation.json"


def train(run_dir: Path, args: argparse.Namespace, extra: list[str]) -> float:
    """One ``python -m training.distill`` run; its wall-clock seconds."""
    command = [
        sys.executable, "-m", "training.distill", "--preset", "demo", f"--run_dir={run_dir}",
        "--ablation", "--variants=full", f"--seeds={','.join(map(str, args.seeds))}",
        f"--probe_n={args.probe_n}", f"--threads={args.threads}", *extra,
    ]  # fmt: skip
    print("$", " ".join(command), flush=True)
    started = time.monotonic()
    subprocess.run(command, cwd=ROOT, check=True)
    return time.monotonic() - started


def collect(run_dir: Path) -> dict:
    """Per seed: test UA (best validation epoch), the words-only and prosody-only subsets, the
    probe's parts and the student's seconds; the linguistic teacher's probe scores."""
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    students = [s for s in metrics["students"] if "test_best" in s]
    seeds = {}
    for s in students:
        seeds[str(s["seed"])] = {
            "valid_ua": s["valid_best"]["ua"],
            "test_ua": s["test_best"]["ua"],
            "words_only_ua": s["subsets_best"]["words_only"]["ua"],
            "prosody_only_ua": s["subsets_best"]["prosody_only"]["ua"],
            "probe": {p: v["ua"] for p, v in s["probe_best"].items()},
            "student_seconds": s["seconds"],
        }
    teacher = students[0].get("probe_teacher", {})
    return {
        "seeds": seeds,
        "probe_teacher": {p: v["ua"] for p, v in teacher.items()},
        "subset_n": {k: v["n"] for k, v in students[0]["subsets_best"].items()},
        "probe_n": {p: v["n"] for p, v in students[0]["probe_best"].items()},
    }


def summarise(rows: dict) -> dict:
    """mean and std (ddof 1) over seeds of each figure."""
    seeds = list(rows["seeds"].values())
    keys = ["valid_ua", "test_ua", "words_only_ua", "prosody_only_ua", "student_seconds"]
    out = {}
    for key in keys:
        values = np.array([s[key] for s in seeds], dtype=float)
        out[key] = [float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0]
    for part in seeds[0]["probe"]:
        values = np.array([s["probe"][part] for s in seeds], dtype=float)
        out[f"probe_{part}"] = [float(values.mean()), float(values.std(ddof=1))]
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[480, 1440])
    parser.add_argument("--mix", type=float, default=0.5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--probe-n", type=int, default=96, help="probe utterances per part")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "transfer-ablation")
    args = parser.parse_args(argv)

    configs: dict[str, dict] = {}
    base = args.runs / "none"
    seconds = train(base, args, [])
    configs["none"] = {"transfer_n": 0, "wall_seconds": round(seconds, 1), **collect(base)}
    for size in args.sizes:
        run_dir = args.runs / f"t{size}"
        link_folds(base, run_dir, skip=("transfer-*",))
        extra = [f"--transfer_n={size}", f"--transfer_mix={args.mix}"]
        seconds = train(run_dir, args, extra)
        configs[f"t{size}"] = {
            "transfer_n": size, "transfer_mix": args.mix, "wall_seconds": round(seconds, 1),
            **collect(run_dir),
        }  # fmt: skip
    for row in configs.values():
        row["summary"] = summarise(row)
    result = {
        "command": "python benchmarks/transfer_ablation.py " + " ".join(argv or sys.argv[1:]),
        "date": date.today().isoformat(),
        "machine": f"{os.cpu_count()} CPU cores, {platform.machine()}",
        "preset": "demo",
        "seeds": args.seeds,
        "configs": configs,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    for name, row in configs.items():
        s = row["summary"]
        print(
            f"{name}: test UA {100 * s['test_ua'][0]:.1f} ± {100 * s['test_ua'][1]:.1f}, "
            f"words-only {100 * s['words_only_ua'][0]:.1f}, prosody-only "
            f"{100 * s['prosody_only_ua'][0]:.1f}, probe "
            + ", ".join(f"{p} {100 * s[f'probe_{p}'][0]:.1f}" for p in row["probe_n"])
            + f" (teacher: {row['probe_teacher']}), {row['wall_seconds']:.0f} s"
        )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
