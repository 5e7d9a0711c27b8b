"""Results-table views of the speed benchmarks: bench_model.json and bench_server.json."""

from __future__ import annotations

from benchmarks.tables_format import load, num, pct, span, table

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
        speed = [num(path["audio_s_per_s"][b]["median"]) for b in ("1", "8")]
        share = (
            "(int8)"
            if "int8" in key
            else " / ".join(pct(path["share_of_ceiling"][b]["median"]) for b in ("1", "8"))
        )
        if bold:
            label, speed = f"**{label}**", [f"**{s}**" for s in speed]
        rows.append(["" if rows else first, label, *speed, share])
    return rows


def _shares(data: dict) -> dict[str, list[float]]:
    """Median share of the fp32 ceiling per kind of path, over every model and batch size."""
    kinds = {"ort_fp32": "ONNX Runtime fp32", "ort_fp32_dynamo": "ONNX Runtime fp32",
             "hf_pipeline": "the transformers pipeline",
             "pytorch_eager": "PyTorch eager"}  # fmt: skip
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
    shares = ", ".join(f"{kind} {span(values, pct)}%" for kind, values in _shares(data).items())
    return [
        *table(header, rows),
        "",
        f"{data['rounds']} interleaved rounds (medians), {data['threads']} threads, "
        f"{num(data['clip_seconds'])} s clips, load average {load(machine['load_avg_before'])} -> "
        f"{load(machine['load_avg_after'])}. The ceiling is the best fp32 GEMM rate measured in "
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
    return table(["ratio within rounds", "batch 1", "batch 8"], rows)


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
        return [num(med[t][path]["audio_s_per_s"], 2) for t in keys]

    def served(kind: str) -> list[str]:
        cells = []
        for i, t in enumerate(keys):
            ratio = med[t]["ratios"][f"server_{kind}_vs_pipeline"]
            value = num(med[t][f"server_{kind}"]["audio_s_per_s"], 2)
            cells.append(f"**{value} ({ratio:.2f}x{' pipeline' if i == 0 else ''})**")
        return cells

    def lone(kind: str) -> list[str]:
        cells = []
        for t in keys:
            lone = med[t][f"{kind}_lone_3s"]
            ratio = med[t]["ratios"][f"server_{kind}_lone_p50_vs_bare"]
            cells.append(
                f"{num(lone['server_p50_ms'])} / {num(lone['bare_p50_ms'])} ms = {ratio:.2f}x"
            )
        return cells

    batches = " / ".join(num(med[t]["server_fp32"]["mean_batch_size"]) for t in keys)
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
    return [*table(header, rows), "", f"Medians of {rounds} rounds; {_server_loads(data)}."]


def _server_loads(data: dict) -> str:
    return "; ".join(
        f"{_threads_label(t, data['machine']['cpus'])}: load average "
        f"{load(entry['load_average_before'])} -> {load(entry['load_average_after'])}"
        for t, entry in data["by_threads"].items()
    )


def bench_server_detail(data: dict) -> list[str]:
    by, cpus = data["by_threads"], data["machine"]["cpus"]
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
                _threads_label(t, cpus), label, num(m["audio_s_per_s"], 2),
                num(m["audio_s_per_cpu_s"], 2),
                f"{m['p50_ms']:.0f} / {m['p95_ms']:.0f} / {m['p99_ms']:.0f}",
                num(m.get("mean_batch_size", 1.0)),
            ])  # fmt: skip
    lone_rows = []
    for t, entry in by.items():
        for kind in ("fp32", "int8"):
            lone = entry["median"][f"{kind}_lone_3s"]
            ratio = entry["median"]["ratios"][f"server_{kind}_lone_p50_vs_bare"]
            lone_rows.append([f"{kind}, {_threads_label(t, cpus)}",
                              f"{num(lone['bare_p50_ms'])} ms",
                              f"{num(lone['server_p50_ms'])} ms", f"{ratio:.3f}"])  # fmt: skip
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
        met.append(f"{ok} of {len(rounds)} rounds at {_threads_label(t, cpus)}")
    header = ["threads", "path", "audio s / s", "audio s / CPU s", "p50 / p95 / p99 ms",
              "mean batch"]  # fmt: skip
    return [
        *table(header, rows),
        "",
        *table(["lone 3 s request, p50", "bare session", "server", "server / bare"], lone_rows),
        "",
        f"Goals (server fp32 >= {goals['fp32_vs_pipeline']}x and int8 >= "
        f"{goals['int8_vs_pipeline']}x the pipeline, lone-request overhead <= "
        f"{goals['lone_overhead_max']}x): met in {', '.join(met)}. {_server_loads(data)}.",
    ]
