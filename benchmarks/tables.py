"""Writes the results tables of README.md and docs/*.md from the JSON in benchmarks/results/.

A generated table sits between two markers that name it and, by its first part, its source:
`<!-- table: bench_stream -->` ... `<!-- /table -->` is written from
`benchmarks/results/bench_stream.json`; `<!-- table: bench_model:ratios -->` is another view of
`bench_model.json`. Only the text between the markers is rewritten. `make tables` writes them;
`--check` changes nothing and exits 1, with a diff, when a page differs from what it would write.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MARKER = re.compile(
    r"(?P<open><!-- table: (?P<name>[\w.-]+(?::[\w.-]+)?) -->\n)(?P<body>.*?)(?P<close><!-- /table -->)",
    re.S,
)


def pages(root: Path = ROOT) -> list[Path]:
    """The markdown pages that may hold generated tables."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


# ---- formatting -------------------------------------------------------------------------------


def _f(value: float, digits: int = 1) -> str:
    return f"{value:.{digits}f}"


def _pct(share: float) -> str:
    return f"{share * 100:.0f}"


def _span(values: list[float], fmt: Callable[[float], str]) -> str:
    low, high = fmt(min(values)), fmt(max(values))
    return low if low == high else f"{low}-{high}"


def _load(values: list[float]) -> str:
    return _f(values[0])


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = [f"| {' | '.join(header)} |", f"|{'---|' * len(header)}"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return lines


# ---- bench_model.json -------------------------------------------------------------------------

_MODEL_PATHS = [
    ("pytorch_eager", "PyTorch eager", False),
    ("hf_pipeline", "transformers `pipeline` (`hf/`)", False),
    ("ort_fp32", "ONNX Runtime fp32 (shipped)", True),
    ("ort_fp32_dynamo", "ONNX Runtime fp32 (dynamo export)", False),
    ("ort_int8", "ONNX Runtime int8 (static, `--int8`)", True),
]


def _model_rows(name: str, entry: dict, paths: list[tuple[str, str, bool]]) -> list[list[str]]:
    gflop = entry["model_gflop_per_audio_s"]["total"]
    first = f"{name} ({entry['parameters'] / 1e6:.1f}M, {gflop:.2f})"
    rows = []
    for key, label, bold in paths:
        if key not in entry["paths"]:
            continue
        path = entry["paths"][key]
        speed = [_f(path["audio_s_per_s"][b]["median"]) for b in ("1", "8")]
        share = (
            "(int8)"
            if "int8" in key
            else " / ".join(_pct(path["share_of_ceiling"][b]["median"]) for b in ("1", "8"))
        )
        if bold:
            label, speed = f"**{label}**", [f"**{s}**" for s in speed]
        rows.append(["" if rows else first, label, *speed, share])
    return rows


def _shares(data: dict) -> dict[str, list[float]]:
    """Median share of the fp32 ceiling per kind of path, over every model and batch size."""
    kinds = {"ort_fp32": "ONNX Runtime fp32", "ort_fp32_dynamo": "ONNX Runtime fp32",
             "hf_pipeline": "the transformers pipeline", "pytorch_eager": "PyTorch eager"}  # fmt: skip
    entries = [data, *data.get("whisper", {}).values()]
    shares: dict[str, list[float]] = {}
    for entry in entries:
        for key, path in entry["paths"].items():
            if key in kinds:
                shares.setdefault(kinds[key], []).extend(
                    path["share_of_ceiling"][b]["median"] for b in ("1", "8")
                )
    return shares


def bench_model(data: dict) -> list[str]:
    whisper_paths = [
        ("ort_fp32", "ONNX Runtime fp32", False),
        ("ort_int8", "ONNX Runtime int8", False),
    ]
    rows = _model_rows(data["config"], data, _MODEL_PATHS)
    for name, entry in data.get("whisper", {}).items():
        rows += _model_rows(name, entry, whisper_paths)
    header = ["model (parameters, GFLOP per audio s)", "path", "audio-s/s, batch 1", "batch 8",
              "% of fp32 ceiling, b1 / b8"]  # fmt: skip
    machine = data["machine"]
    shares = ", ".join(f"{kind} {_span(values, _pct)}%" for kind, values in _shares(data).items())
    return [
        *_table(header, rows),
        "",
        f"{data['rounds']} interleaved rounds (medians), {data['threads']} threads, "
        f"{_f(data['clip_seconds'])} s clips, load average {_load(machine['load_avg_before'])} -> "
        f"{_load(machine['load_avg_after'])}. The ceiling is the best fp32 GEMM rate measured in "
        f"the same rounds ({data['matmul_gflops']['median']:.0f} GFLOP/s, median) divided by a "
        f"model's GFLOP per audio second. Share of it, batch 1 and 8: {shares}.",
    ]


_RATIO_NAMES = {
    "ort_fp32/pytorch_eager": "hubert-base: ONNX Runtime fp32 / PyTorch eager",
    "ort_int8/ort_fp32": "hubert-base: int8 / fp32",
    "ort_fp32/ort_fp32_dynamo": "hubert-base: TorchScript export / dynamo export (fp32)",
}


def _ratio_name(key: str) -> str:
    if key in _RATIO_NAMES:
        return _RATIO_NAMES[key]
    top, bottom = (part.split(":") for part in key.split("/"))
    if top[0] == bottom[0]:
        return f"{top[0]}: {top[1].removeprefix('ort_')} / {bottom[1].removeprefix('ort_')}"
    return f"{top[0]} / {bottom[0]} ({top[1].removeprefix('ort_')})"


def bench_model_ratios(data: dict) -> list[str]:
    ratios: dict[str, dict[str, float]] = {}
    for key, value in data["ratios"].items():
        name, batch = key.rsplit("@", 1)
        ratios.setdefault(name, {})[batch] = value
    rows = [
        [_ratio_name(name), *(f"{by[b]:.2f}x" for b in ("1", "8"))] for name, by in ratios.items()
    ]
    return _table(["ratio within rounds", "batch 1", "batch 8"], rows)


# ---- bench_server.json ------------------------------------------------------------------------


def _threads_label(threads: str, cpus: int) -> str:
    """bench_server's --threads value as words (0 = one per core)."""
    n = cpus if threads == "0" else int(threads)
    return f"{n} thread{'s' if n != 1 else ''}"


def bench_server(data: dict) -> list[str]:
    by = data["by_threads"]
    keys = list(by)
    med = {t: by[t]["median"] for t in keys}
    header = ["audio s / s", *(_threads_label(t, data["machine"]["cpus"]) for t in keys)]

    def speed(path: str) -> list[str]:
        return [_f(med[t][path]["audio_s_per_s"], 2) for t in keys]

    def served(kind: str) -> list[str]:
        cells = []
        for i, t in enumerate(keys):
            ratio = med[t]["ratios"][f"server_{kind}_vs_pipeline"]
            value = _f(med[t][f"server_{kind}"]["audio_s_per_s"], 2)
            cells.append(f"**{value} ({ratio:.2f}x{' pipeline' if i == 0 else ''})**")
        return cells

    def lone(kind: str) -> list[str]:
        cells = []
        for t in keys:
            lone = med[t][f"{kind}_lone_3s"]
            ratio = med[t]["ratios"][f"server_{kind}_lone_p50_vs_bare"]
            cells.append(
                f"{_f(lone['server_p50_ms'])} / {_f(lone['bare_p50_ms'])} ms = {ratio:.2f}x"
            )
        return cells

    batches = " / ".join(_f(med[t]["server_fp32"]["mean_batch_size"]) for t in keys)
    rows = [
        ['transformers `pipeline("audio-classification")`', *speed("pipeline")],
        ["bare ONNX Runtime fp32", *speed("bare_fp32")],
        [f"**server fp32** (mean batch {batches})", *served("fp32")],
        ["bare ONNX Runtime int8", *speed("bare_int8")],
        ["**server int8** (served unbatched, see export)", *served("int8")],
        ["lone 3 s request p50, server / bare (fp32)", *lone("fp32")],
        ["lone 3 s request p50, server / bare (int8)", *lone("int8")],
    ]
    rounds = data["config"]["rounds"]
    return [*_table(header, rows), "", f"Medians of {rounds} rounds; {_server_loads(data)}."]


def _server_loads(data: dict) -> str:
    return "; ".join(
        f"{_threads_label(t, data['machine']['cpus'])}: load average "
        f"{_load(entry['load_average_before'])} -> {_load(entry['load_average_after'])}"
        for t, entry in data["by_threads"].items()
    )


def bench_server_detail(data: dict) -> list[str]:
    by = data["by_threads"]
    paths = [
        ("pipeline", "transformers pipeline, sequential"),
        ("bare_fp32", "bare ORT fp32, sequential"),
        ("server_fp32", f"server fp32, {data['config']['concurrency']} clients"),
        ("bare_int8", "bare ORT int8, sequential"),
        ("server_int8", f"server int8, {data['config']['concurrency']} clients"),
    ]
    rows = []
    for t, entry in by.items():
        for key, label in paths:
            m = entry["median"][key]
            rows.append([
                _threads_label(t, data['machine']['cpus']), label, _f(m["audio_s_per_s"], 2), _f(m["audio_s_per_cpu_s"], 2),
                f"{m['p50_ms']:.0f} / {m['p95_ms']:.0f} / {m['p99_ms']:.0f}",
                _f(m.get("mean_batch_size", 1.0)),
            ])  # fmt: skip
    lone_rows = []
    for t, entry in by.items():
        for kind in ("fp32", "int8"):
            lone = entry["median"][f"{kind}_lone_3s"]
            ratio = entry["median"]["ratios"][f"server_{kind}_lone_p50_vs_bare"]
            lone_rows.append([f"{kind}, {_threads_label(t, data['machine']['cpus'])}", f"{_f(lone['bare_p50_ms'])} ms",
                              f"{_f(lone['server_p50_ms'])} ms", f"{ratio:.3f}"])  # fmt: skip
    goals = data["goals"]
    met = []
    for t, entry in by.items():
        rounds = entry["rounds"]
        ok = sum(
            r["ratios"]["server_fp32_vs_pipeline"] >= goals["fp32_vs_pipeline"]
            and r["ratios"]["server_int8_vs_pipeline"] >= goals["int8_vs_pipeline"]
            and r["ratios"]["server_fp32_lone_p50_vs_bare"] <= goals["lone_overhead_max"]
            and r["ratios"]["server_int8_lone_p50_vs_bare"] <= goals["lone_overhead_max"]
            for r in rounds
        )
        met.append(f"{ok} of {len(rounds)} rounds at {_threads_label(t, data['machine']['cpus'])}")
    header = ["threads", "path", "audio s / s", "audio s / CPU s", "p50 / p95 / p99 ms",
              "mean batch"]  # fmt: skip
    return [
        *_table(header, rows),
        "",
        *_table(["lone 3 s request, p50", "bare session", "server", "server / bare"], lone_rows),
        "",
        f"Goals (server fp32 >= {goals['fp32_vs_pipeline']}x and int8 >= "
        f"{goals['int8_vs_pipeline']}x the pipeline, lone-request overhead <= "
        f"{goals['lone_overhead_max']}x): met in {', '.join(met)}. {_server_loads(data)}.",
    ]


# ---- bench_stream.json ------------------------------------------------------------------------


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
        loads.append(
            f"{name} {_load(entry['load_avg_before'])} -> {_load(entry['load_avg_after'])}"
        )
        vad.append(f"{name} {one['after_vad_end_p50_s']:.3f} s")
        levels.append(f"{name} {', '.join(str(level['streams']) for level in entry['levels'])}")
    silence = data["method"]["min_silence_ms"]
    header = ["model", "model time, ~2 s utterance",
              "end of speech -> final, p50 / p95 (1 stream)",
              f"goal: p50 <= {silence:.0f} ms + 2 x model", "most streams with p95 < 1 s"]  # fmt: skip
    return [
        *_table(header, rows),
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
        return _span(values, lambda v: _f(v, digits))

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
    return _table(["model, streams", "before the redesign", "after (with guess promotion)"], rows)


# ---- reliability.json -------------------------------------------------------------------------


def reliability(data: dict) -> list[str]:
    rows = [[r["check"], r["measured"], r["goal"], r["verdict"]] for r in data["table"]]
    return [
        *_table(["check", "measured", "goal", ""], rows),
        "",
        f"Run {data['created'].replace('T', ' ')[:16]} UTC, {data['seconds']:.0f} s, load average "
        f"{_load(data['load_average_start'])} -> {_load(data['load_average_end'])}.",
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
    load, over = data["serving"]["load"], data["serving"]["overload"]
    http, streams, rss = load["http"], load["streams"], load["rss"]
    phase = over["phases"]["overload"]
    faults, training = data["faults"], data["training"]
    refused = "`503 " + ", ".join(streams["refusal_codes"]) + "` + `Retry-After`"
    failing = faults["failing_batch"]
    dirs = faults["bad_model_dirs"]
    sigterm, kill = faults["sigterm_under_load"], faults["kill_9_restart"]
    resume, manifest = training["kill_9_resume"], training["bad_manifest"]
    rows = [
        [f"load {load['seconds']:.0f} s: HTTP answers",
         f"{_statuses(http['by_status'])}; 5xx {http['http_5xx_other_than_503']}, lost {http['lost']}",
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
        *_table(["check", "measured", ""], rows),
        "",
        f"Run {data['created'].replace('T', ' ')[:16]} UTC, {data['seconds']:.0f} s, load average "
        f"{_load(data['load_average_start'])} -> {_load(data['load_average_end'])}; capacity "
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
        *_table(
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


# ---- the registry -----------------------------------------------------------------------------

TABLES: dict[str, Callable[[dict], list[str]]] = {
    "bench_model": bench_model,
    "bench_model:ratios": bench_model_ratios,
    "bench_server": bench_server,
    "bench_server:detail": bench_server_detail,
    "bench_stream": bench_stream,
    "bench_stream_issue14_idle": bench_stream_idle,
    "reliability": reliability,
    "reliability:summary": reliability_summary,
    "rehearsal": rehearsal,
}


def _wrap(line: str) -> list[str]:
    """Prose lines wrapped as the pages are (table rows stay whole)."""
    if line.startswith("|") or not line:
        return [line]
    return textwrap.wrap(line, 96, break_long_words=False, break_on_hyphens=False)


def render_table(name: str, results: Path = RESULTS) -> str:
    """The text a table's markers enclose, from its source JSON."""
    if name not in TABLES:
        raise KeyError(f"unknown table {name!r}; known: {', '.join(TABLES)}")
    source = results / f"{name.split(':')[0]}.json"
    data = json.loads(source.read_text(encoding="utf-8"))
    return "\n".join(out for line in TABLES[name](data) for out in _wrap(line)) + "\n"


def render(text: str, results: Path = RESULTS) -> str:
    """The page with every marked table rewritten."""
    return MARKER.sub(lambda m: m["open"] + render_table(m["name"], results) + m["close"], text)


def tables_in(text: str) -> list[str]:
    return [m["name"] for m in MARKER.finditer(text)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 on a difference"
    )
    parser.add_argument(
        "--root", type=Path, default=ROOT, help="the repository (default: this one)"
    )
    args = parser.parse_args(argv)
    stale = []
    for page in pages(args.root):
        text = page.read_text(encoding="utf-8")
        new = render(text, args.root / "benchmarks" / "results")
        if new == text:
            continue
        name = page.relative_to(args.root).as_posix()
        stale.append(name)
        if args.check:
            sys.stdout.writelines(
                difflib.unified_diff(
                    text.splitlines(True),
                    new.splitlines(True),
                    f"{name} (now)",
                    f"{name} (generated)",
                )
            )
        else:
            page.write_text(new, encoding="utf-8")
            print(f"wrote {name}")
    if args.check and stale:
        print(f"\nout of date: {', '.join(stale)}; run `make tables`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
