"""The real-voices ablation: the voices preset's student as CE only, + prosodic teacher,
+ linguistic teacher, full, and full without augmentation, 3 seeds each, scored on the held-out
speakers (all, RAVDESS actors 21-24, the synthetic test voices, and the synthetic words-only and
prosody-only subsets); optionally the Whisper base student beside tiny.en (full, one seed), the
full student without each augmentation in turn (one seed), to choose each on validation, and the
full student without the linguistic teacher on the scripted corpora (one seed).

    python benchmarks/voices_ablation.py --base runs/demo-voices [--seeds 0 1 2] [--workers 2]
        [--whisper-base] [--each-augmentation] [--scripted]
    python benchmarks/voices_ablation.py --base runs/demo-voices --only aug/full \
        no_aug_telephone_p scripted --out benchmarks/results/voices_choices.json

``--only GROUP[/VARIANT] ...`` trains just those groups (or variants) for ``--seeds`` (a one-seed
group too). When ``--out`` exists, their seeds are merged into its rows, the other rows
unchanged, and the call is refused when the base run's teachers are not the ones that file was
measured with; otherwise ``--out`` is a new table of those rows only.

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
from benchmarks.tables_format import mean_std  # noqa: E402

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
# --scripted: the full student without the linguistic teacher's terms on RAVDESS and TESS, whose
# texts are fixed sentences spoken in every emotion (scripted_corpora).
SCRIPTED = {"scripted": (("full",), ["--scripted_corpora=ravdess,tess"])}
ONE_SEED_GROUPS = WHISPER_BASE | WITHOUT_EACH | SCRIPTED
ALL_GROUPS = GROUPS | ONE_SEED_GROUPS
ROWS = {
    ("aug", "ce_only"): "CE only",
    ("aug", "ce+pros"): "+ prosodic teacher",
    ("aug", "ce+ling"): "+ linguistic teacher",
    ("aug", "full"): "full (the preset)",
    ("no_aug", "full"): "full without augmentation",
    ("whisper_base", "full"): "full, Whisper base student",
    **{(f"no_{key}", "full"): f"full without {name}" for name, key in EACH_AUGMENTATION.items()},
    ("scripted", "full"): "full, no linguistic teacher on RAVDESS and TESS",
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


def picked_groups(only: list[str]) -> tuple[dict[str, tuple], str | None]:
    """``--only`` entries (GROUP or GROUP/VARIANT) as {group: (variants, extra)}, or why not."""
    groups: dict[str, tuple] = {}
    for entry in only:
        group, _, variant = entry.partition("/")
        if group not in ALL_GROUPS or (variant and variant not in ALL_GROUPS[group][0]):
            names = [*ALL_GROUPS, *(f"{g}/{v}" for g, (vs, _) in ALL_GROUPS.items() for v in vs)]
            return {}, f"unknown group {entry}: choose from {', '.join(names)}"
        variants, extra = ALL_GROUPS[group]
        chosen = (*groups.get(group, ((), extra))[0], *((variant,) if variant else variants))
        groups[group] = (tuple(dict.fromkeys(chosen)), extra)
    return groups, None


def merge_problem(out: Path, base: Path) -> str | None:
    """Why ``--only`` cannot merge into the results ``out``, or None: a base run whose teachers
    differ from those the results were measured with (their validation and test UA must be
    equal; merging students of other teachers would compare unlike with unlike)."""
    measured = json.loads(out.read_text(encoding="utf-8"))["teachers"]
    now = teachers(read_metrics(base))
    if now != measured:
        return (
            f"the teachers of {base} ({now}) are not those {out} was measured with "
            f"({measured}): rerun those groups into a new --out file"
        )
    return None


def merged(data: dict, rows: dict[str, dict], provenance: dict) -> dict:
    """The results ``data`` with ``rows``' seeds merged into its rows (a seed trained again
    replaces the old one), their summaries recomputed, and ``provenance`` appended to its
    updates."""
    out = {**data, "rows": dict(data["rows"]), "updates": [*data.get("updates", []), provenance]}
    for key, row in rows.items():
        old = out["rows"].get(key)
        seeds = {**(old["seeds"] if old else {}), **row["seeds"]}
        seeds = dict(sorted(seeds.items(), key=lambda item: int(item[0])))
        out["rows"][key] = {**row, "seeds": seeds, "summary": summarise(seeds)}
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
    parser.add_argument(
        "--scripted",
        action="store_true",
        help="also the full student without the linguistic teacher on RAVDESS and TESS (seed 0)",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="GROUP[/VARIANT]",
        help="train only these groups (or one variant of a group) for --seeds and merge them "
        "into --out when it exists (else write a new file): " + ", ".join(ALL_GROUPS),
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="the results file")
    args = parser.parse_args(argv)
    if not (args.base / "metrics.json").is_file():
        print(f"{args.base} is not a finished voices run (no metrics.json)", file=sys.stderr)
        return 2
    if args.only:
        groups, problem = picked_groups(args.only)
        if not problem and args.out.is_file():
            problem = merge_problem(args.out, args.base)
        if problem:
            print(problem, file=sys.stderr)
            return 2
        seeds_of = dict.fromkeys(groups, args.seeds)
    else:
        groups = dict(GROUPS)
        if args.whisper_base:
            groups |= WHISPER_BASE
        if args.each_augmentation:
            groups |= WITHOUT_EACH
        if args.scripted:
            groups |= SCRIPTED
        seeds_of = {g: args.seeds[:1] if g in ONE_SEED_GROUPS else args.seeds for g in groups}
    started = datetime.now(timezone.utc)
    load_before = os.getloadavg()
    # The one-seed students first (Whisper base is about 3 tiny.en students of work), so that
    # the workers finish together; then seed by seed, so that a stopped run leaves whole seeds.
    jobs = []
    for group, (variants, extra) in groups.items():
        if len(seeds_of[group]) == 1:
            jobs += [(group, variant, seeds_of[group][0], extra) for variant in variants]
    for seed in args.seeds:
        for group, (variants, extra) in groups.items():
            if len(seeds_of[group]) > 1:
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
        run_dir = args.runs / group
        run(
            command(run_dir, variants, seeds_of[group], extra, args.threads),
            args.runs / "logs" / "final.log",
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
    provenance = {
        "command": "python benchmarks/voices_ablation.py " + " ".join(argv or sys.argv[1:]),
        "created": started.isoformat(timespec="seconds"),
        "wall_seconds": round((datetime.now(timezone.utc) - started).total_seconds(), 1),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_avg_before": list(load_before),
            "load_avg_after": list(os.getloadavg()),
        },
    }
    if args.only and args.out.is_file():
        update = provenance | {"base": str(args.base), "seeds": args.seeds}
        result = merged(json.loads(args.out.read_text(encoding="utf-8")), rows, update)
    else:
        result = {
            **provenance,
            "preset": "voices",
            "base": str(args.base),
            "seeds": args.seeds,
            "workers": args.workers,
            "threads": args.threads,
            "teachers": teachers(read_metrics(args.runs / next(iter(groups)))),
            "rows": rows,
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    for row in (result["rows"][key] for key in rows):
        s = row["summary"]
        figures = ", ".join(f"{k[:-3]} {mean_std(v)}" for k, v in s.items() if k.endswith("_ua"))
        print(f"{row['label']}: {figures}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
