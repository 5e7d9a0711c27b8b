"""Full-size rehearsal of the IEMOCAP recipe on a CPU machine.

A generated IEMOCAP tree of the real layout and size (5 sessions, 10 speakers, 5,531 4-class
utterances + 4,500 dropped turns; short synthetic audio), trained by the IEMOCAP preset's code
path under ``torchrun --nproc_per_node 2`` (gloo): the HuBERT-base architecture (random init,
LayerDrop 0.1 and time masking on, CNN frozen), 5 LOSO folds, cross-fitted teacher targets,
the ablation subset (``--variants``, ``--seeds``) and the refit on all non-test speakers.
Offline: the linguistic teacher is the shipped MiniLM (``minilm``). Step caps keep it short.

Midway, the whole process group is killed with SIGKILL in the middle of a training: once
``--kill-at`` trainings have logged their first epoch, at the first moment a training has saved
an epoch but not finished (its ``last/trainer.pt`` exists); the same command then resumes the
run, and the report says whether a training resumed from its saved epoch. At
the end it reports wall time and peak RSS per stage (every rank writes RUN/stages.jsonl) and
whether the students' peak memory grew with their number.

    python benchmarks/rehearsal.py                       # ~19 min on 2 idle CPU cores
    python benchmarks/rehearsal.py --root /tmp/rehearsal --seeds 0,1,2 --kill-at 0   # no kill
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from stat import S_ISREG

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# The caps: 1 epoch of 3 batches of 4 clips per rank and student, which score 128 validation and
# 128 test utterances per fold (scoring all ~2,300 took ~85% of a student's time); teachers 1
# epoch of at most 5 batches each, then scored on every utterance, as in a real run.
CAPS = [
    "--epochs=1", "--max_steps=3", "--batch_size=4", "--grad_accum=1", "--max_seconds=0.5",
    "--eval_batch_size=32", "--eval_max_utterances=128", "--ling_epochs=1",
    "--ling_batch_size=64", "--ling_max_tokens=10", "--teacher_max_steps=5",
    "--pros_epochs=1", "--pros_hidden=32", "--pros_max_frames=0", "--num_workers=0",
    "--threads=1", "--cpu",
]  # fmt: skip
RESUMED = re.compile(r"resuming after epoch")


def command(root: Path, variants: str, seeds: str, folds: str) -> list[str]:
    return [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "training.distill", "--preset", "iemocap",
        f"--data_path={root / 'IEMOCAP_full_release'}", f"--run_dir={root / 'run'}",
        f"--prosody_cache={root / 'prosody'}", "--ling_model=minilm",
        "--student_model=hubert-base", f"--folds={folds}", "--ablation",
        f"--variants={variants}", f"--seeds={seeds}", *CAPS,
    ]  # fmt: skip


def launch(cmd: list[str], log_path: Path) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "TQDM_MININTERVAL": "20"}  # fmt: skip
    handle = log_path.open("ab")
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip


def children(pid: int) -> list[int]:
    """The direct children of ``pid`` (torchrun's workers, which run in their own sessions)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def kill_all(proc: subprocess.Popen) -> list[int]:
    """SIGKILL torchrun and every worker at once, as a crash or an OOM killer would."""
    pids = [proc.pid, *children(proc.pid)]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
    return pids


def mid_training(run_dir: Path) -> bool:
    """A training has saved an epoch and not finished: a finished one deletes its trainer.pt."""
    try:
        return any(run_dir.glob("folds/*/**/last/trainer.pt"))
    except OSError:  # a checkpoint folder swapped while walking: look again next time
        return False


def first_epochs(run_dir: Path) -> int:
    log = run_dir / "log.txt"
    if not log.is_file():
        return 0
    return len(re.findall(r"(student|refit) \S+ s\d+ epoch 1/", log.read_text(errors="replace")))


def summarise(run_dir: Path, wall: dict) -> dict:
    from training.runs import read_stages

    records = read_stages(run_dir)
    # A resumed launch records what it found finished as skipped: no work, no memory to judge.
    stages = [s for s in records if not s.get("skipped")]
    kinds: dict[str, dict] = {}
    for s in records:
        if s.get("skipped") and s["rank"] == 0:
            kinds.setdefault(s["stage"], {"count": 0, "seconds": 0.0, "peak_rss_mb": {}})
            kinds[s["stage"]]["skipped_on_resume"] = (
                kinds[s["stage"]].get("skipped_on_resume", 0) + 1
            )
    for s in stages:
        k = kinds.setdefault(s["stage"], {"count": 0, "seconds": 0.0, "peak_rss_mb": {}})
        if s["rank"] == 0:
            k["count"] += 1
            k["seconds"] = round(k["seconds"] + s["seconds"], 1)
        peak = k["peak_rss_mb"]
        peak[str(s["rank"])] = max(peak.get(str(s["rank"]), 0), s["peak_rss_mb"] or 0)
    students = [s for s in stages if s["stage"] in ("student", "refit") and s["rank"] == 0]
    peaks = [s["peak_rss_mb"] for s in students]
    half = max(1, len(peaks) // 2)
    growth = {
        "trainings": len(peaks),
        "first_half_max_mb": max(peaks[:half]) if peaks else None,
        "second_half_max_mb": max(peaks[half:]) if peaks[half:] else None,
        "per_training_mb": peaks,
    }
    return {"wall_s": wall, "stages": kinds, "student_peak_rss_rank0": growth}


def disk_mb(folder: Path) -> float:
    """Space a folder takes on disk, each hard-linked file counted once (as `du -s`)."""
    seen, total = set(), 0
    for path in folder.rglob("*"):
        info = path.lstat()  # one stat per entry; a symlink is not a file here
        if S_ISREG(info.st_mode) and (info.st_dev, info.st_ino) not in seen:
            seen.add((info.st_dev, info.st_ino))
            total += info.st_blocks * 512
    return round(total / 2**20, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path("/tmp/emodistill-rehearsal"))
    parser.add_argument("--variants", default="ce_only,full")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--folds", default="all")
    parser.add_argument(
        "--kill-at",
        type=int,
        default=10,
        help="SIGKILL mid-training once N trainings logged their first epoch (0 = never)",
    )
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "rehearsal.json"
    )
    args = parser.parse_args(argv)
    root = args.root
    root.mkdir(parents=True, exist_ok=True)
    wall: dict[str, float] = {}
    started = time.monotonic()
    if not (root / "IEMOCAP_full_release" / "Session5").is_dir():
        from training.data.full_iemocap import make_full_iemocap

        t = time.monotonic()
        print(
            make_full_iemocap(
                root / "IEMOCAP_full_release", seconds=(0.04, 0.08), long_share=0.25, progress=False
            )
        )
        wall["corpus"] = round(time.monotonic() - t, 1)
    cmd = command(root, args.variants, args.seeds, args.folds)
    log_path = root / "torchrun.log"
    print("$", " ".join(cmd), f"\n(output: {log_path})", flush=True)
    t = time.monotonic()
    proc = launch(cmd, log_path)
    killed = False
    while proc.poll() is None:
        time.sleep(0.25)
        # Kill mid-training, after the N-th first epoch: an epoch is saved, the training is not
        # finished (a 1-epoch student scores for seconds after saving).
        if (
            args.kill_at
            and not killed
            and first_epochs(root / "run") >= args.kill_at
            and mid_training(root / "run")
        ):
            pids = kill_all(proc)
            killed = True
            wall["until_kill"] = round(time.monotonic() - t, 1)
            print(f"killed {pids} (SIGKILL) after {wall['until_kill']} s; resuming", flush=True)
            t2 = time.monotonic()
            proc = launch(cmd, log_path)
    if proc.returncode != 0:
        print(f"torchrun exited {proc.returncode}; see {log_path}", file=sys.stderr)
        return 1
    wall["after_resume" if killed else "run"] = round(time.monotonic() - (t2 if killed else t), 1)
    wall["total"] = round(time.monotonic() - started, 1)
    report = summarise(root / "run", wall)
    text = (root / "run" / "log.txt").read_text(errors="replace")
    report["killed_and_resumed"] = killed
    report["run_dir_disk_mb"] = disk_mb(root / "run")
    report["resumed_mid_training"] = bool(RESUMED.search(text))
    lines = text.splitlines()
    report["resume_lines"] = [line for line in lines if RESUMED.search(line)] + [
        line for line in lines if "done, skipped" in line
    ][:8]
    report["results_md"] = (root / "run" / "results.md").read_text()
    report["command"] = " ".join(cmd)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "results_md"}, indent=1))
    print(report["results_md"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
