"""``make reliability``: load, overload, faults and recovery, training faults; one table.

    PYTHONPATH=. python benchmarks/reliability.py                    # a few minutes
    PYTHONPATH=. python benchmarks/reliability.py --soak-minutes 5   # + a soak: RSS growth
    PYTHONPATH=. python benchmarks/reliability.py --only faults,training

Parts (each bounded in count and time, loopback only):
  load      capacity of the HTTP mix (closed loop), then --http-clients clients offered
            --load x that capacity plus --streams real-time streams for --seconds
            (benchmarks/load.py); with --soak-minutes the same for that long
  overload  0.5x, then --overload-factor x, then 0.5x the measured capacity: refusals, latency of
            what is accepted, recovery after the drop; a PNG curve
  faults    a model that raises for some inputs, missing / corrupt / wrong-version model dirs,
            a client gone while queued, SIGTERM under load, kill -9 and a restart
            (tests/server/faults.py, the scenarios the tests run on the tiny model)
  training  kill -9 during a student's epoch then the same command, against an uninterrupted
            run; a manifest with missing files and unknown labels (tests/training/faults.py)

Load and overload use the HuBERT-base-architecture student (random weights, exported once, as
benchmarks/bench_stream.py does); the fault cases that test behaviour rather than speed use the
tiny one, SIGTERM and kill -9 use HuBERT-base. The machine may be shared: capacity is measured
in the same run and the load average is recorded at start and end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import load  # noqa: E402
from benchmarks.bench_stream import build_model  # noqa: E402
from tests.server import faults  # noqa: E402
from tests.server.live_server import serve  # noqa: E402
from tests.training import faults as training_faults  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "reliability.json"
PLOT = ROOT / "benchmarks" / "results" / "reliability_overload.png"
PARTS = ("load", "overload", "faults", "training")


def run_load(args, model_dir: Path, bodies) -> dict:
    """Capacity, the load run, the soak (optional) and the overload, on one server process."""
    out: dict = {}
    settings = dict(
        threads=0,
        stream_max_streams=args.streams + 4,
        stream_max_streams_per_client=args.streams + 4,
    )
    with (
        tempfile.TemporaryFile("w+") as log,
        serve(model_dir, start_timeout_s=300, output=log, **settings) as (process, url),
    ):
        out["capacity"] = load.capacity(url, bodies, args.capacity_seconds)
        rps = out["capacity"]["requests_per_s"]
        print(f"capacity: {out['capacity']}", flush=True)
        if "load" in args.only:
            out["load"] = load.load_run(
                url,
                process.pid,
                bodies,
                seconds=args.seconds,
                http_rate=args.load * rps,
                http_clients=args.http_clients,
                stream_count=args.streams,
            )
            print(f"load: {json.dumps(out['load'])[:400]}...", flush=True)
            if args.soak_minutes:
                out["soak"] = load.load_run(
                    url,
                    process.pid,
                    bodies,
                    seconds=60 * args.soak_minutes,
                    http_rate=args.load * rps,
                    http_clients=args.http_clients,
                    stream_count=args.streams,
                )
        if "overload" in args.only:
            out["overload"] = load.overload_run(
                url,
                bodies,
                rps,
                normal_s=args.overload_seconds / 4,
                over_s=args.overload_seconds / 2,
                after_s=args.overload_seconds / 4,
                factor=args.overload_factor,
            )
            load.plot_overload(out["overload"], args.plot)
            out["overload"]["plot"] = str(args.plot.relative_to(ROOT))
        log.seek(0)
        out["server_log_errors"] = [
            line for line in log.read().splitlines() if " ERROR " in line or "Traceback" in line
        ][:20]
    return out


def run_faults(model_dir: Path, tiny_dir: Path, work: Path) -> dict:
    out: dict = {"failing_batch": faults.failing_batch(tiny_dir, work / "faulty")}
    starts = {}
    for name, path in faults.bad_model_dirs(tiny_dir, work / "bad").items():
        failure = faults.start_failure(path)
        starts[name] = {
            "exit_code": failure.returncode,
            "seconds": round(failure.seconds, 1),
            "line": failure.line,
            "traceback": "Traceback" in failure.stderr,
        }
    out["bad_model_dirs"] = starts
    out["client_gone_while_queued"] = faults.client_gone_while_queued(tiny_dir)
    drain = faults.sigterm_under_load(
        model_dir, http_clients=16, streams=8, grace_s=30, start_timeout_s=300
    )
    out["sigterm_under_load"] = asdict(drain) | {"ok": drain.ok}
    out["kill_9_restart"] = asdict(
        faults.kill_and_restart(model_dir, http_clients=8, start_timeout_s=300)
    )
    return out


def run_training(work: Path) -> dict:
    return {
        "kill_9_resume": training_faults.compare(work / "resume"),
        "bad_manifest": training_faults.bad_manifest(work / "manifest"),
    }


def attempt(part) -> dict:
    """Run one part; a part that crashes is reported (and fails the table), the others run."""
    try:
        return part()
    except Exception:
        import traceback

        text = traceback.format_exc()
        print(text, file=sys.stderr)
        return {"crashed": text[-3000:]}


def verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("ok" if ok else "FAIL")


def table(report: dict) -> list[tuple[str, str, str, str]]:
    """(check, measured, goal, verdict) rows for what was run."""
    rows = [
        (f"{part}: crashed", value["crashed"].strip().splitlines()[-1][:120], "runs", "FAIL")
        for part, value in report.items()
        if isinstance(value, dict) and "crashed" in value
    ]
    serving = report.get("serving", {})
    if "load" in serving:
        rows += _load_rows("load", serving["load"])
    if "soak" in serving:
        rows += _load_rows("soak", serving["soak"])
        growth = serving["soak"]["rss"].get("growth_first_to_last_minute")
        if growth is not None:
            rows.append(
                (
                    "soak: RSS, first to last minute",
                    f"{100 * growth:+.1f}%",
                    "< +10%",
                    verdict(growth < 0.10),
                )
            )
    if "overload" in serving:
        o = serving["overload"]
        refused = o["phases"]["overload"]["by_status"].get("503", 0)
        lost = sum(o["phases"][p]["lost"] for p in o["phases"])
        rows += [
            (
                f"overload {o['factor']:g}x: offered / served / refused",
                f"{o['phases']['overload']['requests']} / {o['phases']['overload']['served']}"
                f" / {refused}; lost {lost}",
                "refuses, loses none",
                verdict(refused > 0 and lost == 0),
            ),
            (
                "overload: first 503 after / 503 p99",
                f"{_s(o['first_refusal_after_s'])} / {_s(o['refusal_p99_s'])}",
                "within seconds",
                verdict(o["refusal_p99_s"] is not None and o["refusal_p99_s"] < 5),
            ),
            (
                "overload: p99 accepted (normal phase p99)",
                f"{_s(o['accepted_p99_s'])} ({_s(o['normal_p99_s'])})",
                "bounded (< request timeout 30 s)",
                verdict(o["accepted_p99_s"] is not None and o["accepted_p99_s"] < 30),
            ),
            (
                "overload: queue back to normal after the drop",
                _s(o["recovery_s"]),
                "within seconds",
                verdict(o["recovery_s"] is not None and o["recovery_s"] < 15),
            ),
        ]
    f = report.get("faults")
    if f and "crashed" not in f:
        fb = f["failing_batch"]
        rows.append(
            (
                "model raises for some inputs",
                f"statuses {fb['statuses']}, batch id in log {fb['batch_id_in_log']}, /ready "
                f"{fb['ready_after_one_failure']} -> {fb['ready_after_repeated']} -> "
                f"{fb['ready_after_a_success']}",
                "only that batch fails; id logged; readiness follows",
                verdict(
                    fb["statuses"] == [200, 500, 200, 200]
                    and fb["batch_id_in_log"]
                    and (fb["ready_after_repeated"], fb["ready_after_a_success"]) == (503, 200)
                ),
            )
        )
        for name, start in f["bad_model_dirs"].items():
            rows.append(
                (
                    f"model dir {name.replace('_', ' ')}",
                    f"exit {start['exit_code']} in {start['seconds']} s: {start['line'][:60]}",
                    "one clear line, non-zero exit",
                    verdict(start["exit_code"] != 0 and not start["traceback"]),
                )
            )
        gone = f["client_gone_while_queued"]
        rows.append(
            (
                "client gone while queued",
                f"dropped {gone['dropped_cancelled']:g}, inferred {gone['utterances_inferred']:g}"
                " (of the 2 sent)",
                "costs no inference",
                verdict(gone["dropped_cancelled"] == 1 and gone["utterances_inferred"] == 1),
            )
        )
        d = f["sigterm_under_load"]
        rows.append(
            (
                "SIGTERM under load",
                f"exit {d['exit_code']} in {d['exit_s']} s; HTTP {_counts(d['http_status'])}; "
                f"finals {d['finals_received']}/{d['finals_expected']}, closes "
                f"{_counts(d['stream_close_codes'])}",
                "in flight answered, finals, 1001, exit 0 in grace",
                verdict(d["ok"]),
            )
        )
        k = f["kill_9_restart"]
        rows.append(
            (
                "kill -9 under load, restart",
                f"in flight: {k['killed_answers']}; ready again in {k['ready_s']} s; "
                f"then {k['served_after']}",
                "restarts and serves",
                verdict(k["served_after"] == 200),
            )
        )
    t = report.get("training")
    if t and "crashed" not in t:
        r = t["kill_9_resume"]
        rows.append(
            (
                "training: kill -9 in an epoch, resume",
                f"resume exit {r['resume_exit_code']}, "
                f"resumed after epoch {r['resumed_after_epoch']}, max |diff| "
                f"{r['max_abs_difference']:.2g} (uninterrupted {r['uninterrupted_s']} s)",
                f"same final metrics (<= {r['tolerance']:g})",
                verdict(
                    r["killed_mid_student"]
                    and r["resume_exit_code"] == 0
                    and r["max_abs_difference"] <= r["tolerance"]
                ),
            )
        )
        m = t["bad_manifest"]
        rows.append(
            (
                "training: bad manifest",
                f"exit {m['exit_code']} in {m['seconds']} s, {m['problems_listed']}/"
                f"{m['problems']} problems listed, trained nothing: {not m['trained_anything']}",
                "fails before training, lists all",
                verdict(
                    m["exit_code"] != 0
                    and m["problems_listed"] == m["problems"]
                    and not m["traceback"]
                    and not m["trained_anything"]
                ),
            )
        )
    return rows


def _load_rows(name: str, run: dict) -> list[tuple[str, str, str, str]]:
    http, streams, rss = run["http"], run["streams"], run["rss"]
    kinds = ", ".join(
        f"{kind} {_s(v['p50_s'])}/{_s(v['p99_s'])}" for kind, v in http["latency_by_kind"].items()
    )
    return [
        (
            f"{name} {run['seconds']:.0f} s: HTTP answers",
            f"{http['requests']} ({http['by_status']}); 5xx {http['http_5xx_other_than_503']}, "
            f"lost {http['lost']}",
            "no 5xx, none lost",
            verdict(http["http_5xx_other_than_503"] == 0 and http["lost"] == 0),
        ),
        (f"{name}: HTTP p50/p99 by kind", kinds, "-", "-"),
        (
            f"{name}: streams admitted / refused at the handshake",
            f"{streams['streams'] - streams['refused_at_handshake']} / "
            f"{streams['refused_at_handshake']} ({', '.join(streams['refusal_codes']) or '-'})",
            "refusals are 503 + Retry-After",
            verdict(streams["refused_without_503_retry_after"] == 0),
        ),
        (
            f"{name}: stream finals / utterances spoken (admitted streams)",
            f"{streams['finals']}/{streams['utterances_spoken']} (refused with an error "
            f"{streams['refused_with_error']}, lost {streams['lost']}); final delay p50/p99 "
            f"{_s(streams['final_delay_p50_s'])}/{_s(streams['final_delay_p99_s'])}",
            "every utterance finaled",
            verdict(streams["finals"] == streams["utterances_spoken"]),
        ),
        (
            f"{name}: server RSS start / peak / end",
            f"{rss['start_mib']:.0f} / {rss['peak_mib']:.0f} / {rss['end_mib']:.0f} MiB",
            "-",
            "-",
        ),
    ]


def _s(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.2f} s"


def _counts(values: list) -> str:
    counts: dict[str, int] = {}
    for value in values:
        counts[str(value)] = counts.get(str(value), 0) + 1
    return ", ".join(f"{k} x{n}" for k, n in sorted(counts.items()))


def markdown(rows: list[tuple[str, str, str, str]]) -> str:
    lines = ["| check | measured | goal | |", "| --- | --- | --- | --- |"]
    lines += [f"| {' | '.join(cell.replace('|', '/') for cell in row)} |" for row in rows]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", default=",".join(PARTS), help=f"comma-separated: {PARTS}")
    parser.add_argument("--backbone", default="hubert-base")
    parser.add_argument("--seconds", type=float, default=60.0, help="the load run")
    parser.add_argument("--soak-minutes", type=float, default=0.0, help="0: no soak")
    parser.add_argument("--http-clients", type=int, default=64)
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--load", type=float, default=0.5, help="HTTP offered, x capacity")
    parser.add_argument("--capacity-seconds", type=float, default=20.0)
    parser.add_argument("--overload-seconds", type=float, default=60.0, help="all three phases")
    parser.add_argument("--overload-factor", type=float, default=2.0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--plot", type=Path, default=PLOT)
    args = parser.parse_args()
    args.only = {part.strip() for part in args.only.split(",")}
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    started = time.monotonic()
    report: dict = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python benchmarks/reliability.py " + " ".join(sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "load_average_start": load.load_average(),
        "config": {k: v for k, v in vars(args).items() if k not in ("out", "plot", "only")}
        | {"only": sorted(args.only)},
    }
    model_dir = build_model(args.backbone)
    with tempfile.TemporaryDirectory(prefix="reliability-") as scratch:
        work = Path(scratch)
        if args.only & {"load", "overload"}:
            bodies = load.make_bodies(load.speech_pool())
            report["serving"] = attempt(lambda: run_load(args, model_dir, bodies))
        if "faults" in args.only:
            report["faults"] = attempt(lambda: run_faults(model_dir, build_model("tiny"), work))
        if "training" in args.only:
            report["training"] = attempt(lambda: run_training(work))
    report["load_average_end"] = load.load_average()
    report["seconds"] = round(time.monotonic() - started, 1)
    rows = table(report)
    report["table"] = [
        dict(zip(("check", "measured", "goal", "verdict"), r, strict=True)) for r in rows
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(
        f"\nreliability, {report['created']}, {report['seconds']:.0f} s, load average "
        f"{report['load_average_start']} -> {report['load_average_end']} "
        f"({report['machine']['cpus']} CPUs)\n"
    )
    print(markdown(rows))
    return 0 if all(row[3] != "FAIL" for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
