"""Results-table views of bench_stream*.json, reliability.json and rehearsal.json."""

from __future__ import annotations

from pathlib import Path

from benchmarks.tables_format import load, num, span, table


def _model_name(model: dict) -> str:
    return Path(model["dir"]).name.removeprefix("bench-")


def _ms(seconds: float) -> str:
    ms = seconds * 1000
    return f"{ms:,.0f} ms" if ms >= 100 else f"{ms:.1f} ms"


def bench_stream(data: dict) -> list[str]:
    rows, loads, vad, levels = [], [], [], []
    for entry in data["models"]:
        name, one = _model_name(entry["model"]), entry["levels"][0]
        limit = entry["goal"]["p50_limit_s"]
        gap = one["latency_p50_s"] - limit
        goal = f"{limit:.3f} s: " + ("met" if gap <= 0 else f"missed by {gap * 1000:.0f} ms")
        most = str(entry["max_sustained_streams"])
        if entry["max_sustained_streams"] == 0:
            most += f" (1 stream: p95 {one['latency_p95_s']:.2f} s)"
        rows.append([
            name, _ms(entry["model_time_s"]),
            f"{one['latency_p50_s']:.3f} / {one['latency_p95_s']:.3f} s", goal, most,
        ])  # fmt: skip
        loads.append(f"{name} {load(entry['load_avg_before'])} -> {load(entry['load_avg_after'])}")
        vad.append(f"{name} {one['after_vad_end_p50_s']:.3f} s")
        levels.append(f"{name} {', '.join(str(level['streams']) for level in entry['levels'])}")
    silence = data["method"]["min_silence_ms"]
    header = ["model", "model time, ~2 s utterance",
              "end of speech -> final, p50 / p95 (1 stream)",
              f"goal: p50 <= {silence:.0f} ms + 2 x model",
              "most streams with p95 < 1 s"]  # fmt: skip
    return [
        *table(header, rows),
        "",
        f"Run {data['created'].replace('T', ' ')[:16]} UTC; load average {'; '.join(loads)}; "
        f"levels run: {'; '.join(levels)} (a level not sustained ends the sweep); p50 from the "
        f"VAD's own end of speech at 1 stream: {', '.join(vad)}.",
    ]


def bench_stream_idle(data: dict) -> list[str]:
    by: dict[tuple[str, int], dict[str, list[dict]]] = {}
    model_time: dict[str, list[float]] = {}
    for key, run in data["runs"].items():
        version = key.split("-")[1]
        for entry in run["models"]:
            name = _model_name(entry["model"])
            model_time.setdefault(name, []).append(entry["model_time_s"])
            for level in entry["levels"]:
                by.setdefault((name, level["streams"]), {}).setdefault(version, []).append(level)

    def seconds(values: list[float]) -> str:
        digits = 3 if max(values) < 1.1 else 2
        return span(values, lambda v: num(v, digits))

    def cell(levels: list[dict]) -> str:
        p50 = seconds([lv["latency_p50_s"] for lv in levels])
        p95 = seconds([lv["latency_p95_s"] for lv in levels])
        return f"{p50} / {p95} s" + (" (1 round)" if len(levels) == 1 else "")

    rows = []
    faster_first = sorted(by, key=lambda k: (min(model_time[k[0]]), k[1]))
    for name, streams in faster_first:
        versions = by[name, streams]
        over = not any(lv["sustained"] for side in versions.values() for lv in side)
        label = f"{name}, {streams}" + (" (over capacity in both)" if over else "")
        rows.append([label, cell(versions["before"]), cell(versions["after"])])
    return table(["model, streams", "before the redesign", "after (with guess promotion)"], rows)


# ---- reliability.json -------------------------------------------------------------------------


def reliability(data: dict) -> list[str]:
    rows = [[r["check"], r["measured"], r["goal"], r["verdict"]] for r in data["table"]]
    return [
        *table(["check", "measured", "goal", ""], rows),
        "",
        f"Run {data['created'].replace('T', ' ')[:16]} UTC, {data['seconds']:.0f} s, load average "
        f"{load(data['load_average_start'])} -> {load(data['load_average_end'])}.",
    ]


def _verdict(data: dict, *prefixes: str) -> str:
    found = [r["verdict"] for r in data["table"] if r["check"].startswith(prefixes)]
    if not found:
        raise KeyError(f"reliability.json has no check starting with {prefixes}")
    if "FAIL" in found:
        return "FAIL"
    return "ok" if "ok" in found else "-"


def _statuses(by_status: dict) -> str:
    return ", ".join(f"{n} x {status}" for status, n in sorted(by_status.items()))


def reliability_summary(data: dict) -> list[str]:
    steady, over = data["serving"]["load"], data["serving"]["overload"]
    http, streams, rss = steady["http"], steady["streams"], steady["rss"]
    phase = over["phases"]["overload"]
    faults, training = data["faults"], data["training"]
    refused = "`503 " + ", ".join(streams["refusal_codes"]) + "` + `Retry-After`"
    failing = faults["failing_batch"]
    dirs = faults["bad_model_dirs"]
    sigterm, kill = faults["sigterm_under_load"], faults["kill_9_restart"]
    resume, manifest = training["kill_9_resume"], training["bad_manifest"]
    rows = [
        [f"load {steady['seconds']:.0f} s: HTTP answers",
         f"{_statuses(http['by_status'])}; 5xx {http['http_5xx_other_than_503']}, "
         f"lost {http['lost']}",
         _verdict(data, "load ")],
        ["load: streams admitted / refused at the handshake",
         f"{streams['streams'] - streams['refused_at_handshake']} / "
         f"{streams['refused_at_handshake']} ({refused})",
         _verdict(data, "load: streams admitted")],
        ["load: stream finals / utterances spoken (admitted streams)",
         f"{streams['finals']}/{streams['utterances_spoken']}, refused "
         f"{streams['refused_with_error']}, lost {streams['lost']}; final delay p50 "
         f"{streams['final_delay_p50_s']:.2f} s, p99 {streams['final_delay_p99_s']:.2f} s",
         _verdict(data, "load: stream finals")],
        ["load: server RSS start / peak / end",
         f"{rss['start_mib']:.0f} / {rss['peak_mib']:.0f} / {rss['end_mib']:.0f} MiB",
         _verdict(data, "load: server RSS")],
        [f"overload {over['factor']:.0f}x: offered / served / refused",
         f"{phase['requests']} / {phase['served']} / {phase['requests'] - phase['served']} "
         f"(`503` + `Retry-After`), lost {phase['lost']}; first 503 "
         f"{over['first_refusal_after_s']:.1f} s into the overload, 503 p99 "
         f"{over['refusal_p99_s']:.2f} s",
         _verdict(data, "overload ", "overload: first")],
        ["overload: p99 of accepted requests",
         f"{over['accepted_p99_s']:.1f} s ({over['normal_p99_s']:.1f} s before the overload)",
         _verdict(data, "overload: p99")],
        ["overload: queue back to normal after the drop", f"{over['recovery_s']:.1f} s",
         _verdict(data, "overload: queue")],
        ["model raises for some inputs",
         f"statuses {failing['statuses']}, batch id in log: {failing['batch_id_in_log']}; "
         f"`/ready` {failing['ready_after_one_failure']} -> {failing['ready_after_repeated']} -> "
         f"{failing['ready_after_a_success']}",
         _verdict(data, "model raises")],
        ["missing / corrupt / wrong-version model dir",
         " / ".join(dict.fromkeys(f"exit {d['exit_code']} in {d['seconds']:.1f} s"
                                  for d in dirs.values()))
         + ", each one `emodistill: cannot start: ...` line",
         _verdict(data, "model dir")],
        ["client gone while queued",
         f"dropped {faults['client_gone_while_queued']['dropped_cancelled']:.0f}, inferred "
         f"{faults['client_gone_while_queued']['utterances_inferred']:.0f} (of the 2 sent)",
         _verdict(data, "client gone")],
        [f"SIGTERM under load ({len(sigterm['http_status'])} requests, "
         f"{len(sigterm['stream_close_codes'])} streams)",
         f"exit {sigterm['exit_code']} in {sigterm['exit_s']:.1f} s; "
         f"{sigterm['http_status'].count(200)}/{len(sigterm['http_status'])} requests 200; finals "
         f"{sigterm['finals_received']}/{sigterm['finals_expected']}, close "
         f"{'/'.join(sorted({str(c) for c in sigterm['stream_close_codes']}))}",
         _verdict(data, "SIGTERM")],
        ["`kill -9` under load, restart",
         f"ready again in {kill['ready_s']:.1f} s on the same port, then {kill['served_after']}",
         _verdict(data, "kill -9")],
        ["training: `kill -9` in a student's epoch, resume",
         f"resumed after epoch {resume['resumed_after_epoch']}; final metrics max difference "
         f"{resume['max_abs_difference']:g} from the uninterrupted run (tolerance "
         f"{resume['tolerance']:g})",
         _verdict(data, "training: kill")],
        ["training: manifest with missing files and unknown labels",
         f"exit {manifest['exit_code']} before training, {manifest['problems_listed']}/"
         f"{manifest['problems']} problems listed",
         _verdict(data, "training: bad manifest")],
    ]  # fmt: skip
    return [
        *table(["check", "measured", ""], rows),
        "",
        f"Run {data['created'].replace('T', ' ')[:16]} UTC, {data['seconds']:.0f} s, load average "
        f"{load(data['load_average_start'])} -> {load(data['load_average_end'])}; capacity "
        f"measured first: {data['serving']['capacity']['audio_s_per_s']:.1f} audio s/s of the mix.",
    ]


# ---- rehearsal.json ---------------------------------------------------------------------------

_STAGES = [
    ("data", "data (load the utterances, 5 folds)"),
    ("teachers", "prosody + teachers + cross-fitted targets, per fold"),
    ("student", "student (train, score the capped valid + test sets, save)"),
    ("refit", "refit on the 8 non-test speakers + score the capped test set"),
]


def _seconds(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 60 else f"{seconds / 60:.1f} min"


def rehearsal(data: dict) -> list[str]:
    rows = [["corpus (generate the tree)", "1", _seconds(data["wall_s"]["corpus"]), "", ""]]
    for key, label in _STAGES:
        stage = data["stages"][key]
        rss = stage["peak_rss_mb"]
        rows.append([
            label, str(stage["count"]), _seconds(stage["seconds"]),
            _seconds(stage["seconds"] / stage["count"]),
            f"{rss['0'] / 1024:.2f} / {rss['1'] / 1024:.2f} GiB",
        ])  # fmt: skip
    wall, peaks = data["wall_s"], data["student_peak_rss_rank0"]
    return [
        *table(
            ["stage (rank 0)", "runs", "wall time", "mean per run", "peak RSS rank 0 / rank 1"],
            rows,
        ),  # fmt: skip
        "",
        f"Wall time {wall['total'] / 60:.1f} min end to end (corpus {wall['corpus']:.0f} s, first "
        f"launch {wall['until_kill']:.0f} s, resumed launch {wall['after_resume']:.0f} s); rank "
        f"0's highest peak RSS in the first and the second half of its {peaks['trainings']} "
        f"trainings: {peaks['first_half_max_mb'] / 1024:.2f} / "
        f"{peaks['second_half_max_mb'] / 1024:.2f} GiB; run folder "
        f"{data['run_dir_disk_mb'] / 1024:.1f} GiB.",
    ]
