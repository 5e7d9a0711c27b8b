"""Results-table views of the speed benchmarks: bench_model.json and bench_server.json."""

from __future__ import annotations

import numpy as np

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


def _run_line(data: dict) -> str:
    """How a benchmark's figures were made: the command, its date and commit, the load."""
    before, after = data["load_average"]
    commit = f" at commit {data['commit']}" if data.get("commit") else ""
    return (
        f"`{data['command']}`, run {data['date']}{commit}, {data['minutes']:g} min, "
        f"load average {load(before)} -> {load(after)} on {data['machine']['cpus']} cores"
    )


def _model_name(name: str, entry: dict, demo: str) -> str:
    return f"{name} ({'demo, ' if name == demo else ''}{entry['weights']})"


def bench_server(data: dict) -> list[str]:
    """Per model: the pipeline, bare sessions and the server, sequential and with clients."""
    config, demo = data["config"], data["demo"]
    clients = config["clients"]
    header = ["model", "path", "audio s / s, sequential", f"{clients} clients (bare: batch 8)",
              "x pipeline, sequential / clients"]  # fmt: skip
    rows = []
    for name, entry in data["models"].items():
        med = entry["median"]
        ratios = med["ratios"]
        first = _model_name(name, entry, demo)
        rows.append([first, 'transformers `pipeline("audio-classification")`',
                     num(med["pipeline"]["audio_s_per_s"]), "", "1.00x"])  # fmt: skip
        for variant in ("fp32", "int8"):
            rows.append([
                "", f"bare ONNX Runtime {variant}", num(med[f"bare_{variant}"]["audio_s_per_s"]),
                num(med[f"bare_{variant}_b8"]["audio_s_per_s"]),
                f"{ratios[f'bare_{variant}_vs_pipeline']:.2f}x / "
                f"{ratios[f'bare_{variant}_b8_vs_pipeline']:.2f}x",
            ])  # fmt: skip
            served = f"server {variant}"
            if variant == "int8":
                batched = "batched" if entry["int8_served_max_batch_size"] > 1 else "unbatched"
                served = f"**server int8** ({batched})"
            seq = num(med[f"server_{variant}_seq"]["audio_s_per_s"])
            many = num(med[f"server_{variant}_clients"]["audio_s_per_s"])
            ratio = (
                f"{ratios[f'server_{variant}_seq_vs_pipeline']:.2f}x / "
                f"{ratios[f'server_{variant}_clients_vs_pipeline']:.2f}x"
            )
            if variant == "int8":
                seq, many, ratio = f"**{seq}**", f"**{many}**", f"**{ratio}**"
            rows.append(["", served, seq, many, ratio])
    lone = []
    for name, entry in data["models"].items():
        for variant in ("fp32", "int8"):
            m = entry["median"][f"{variant}_lone_3s"]
            lone.append([name, variant, f"{num(m['bare_p50_ms'])} ms",
                         f"{num(m['server_p50_ms'])} ms", f"{m['overhead_ms']:+.1f} ms"])  # fmt: skip
    goals, met = data["goals"], data["models"][demo]["met"]
    rounds = data["models"][demo]["met_rounds"]

    def verdict(key: str) -> str:
        count = sum(r[key] for r in rounds)
        return f"{'met' if met[key] else 'missed'} ({count} of {len(rounds)} rounds)"

    return [
        *table(header, rows),
        "",
        *table(
            ["lone 3 s request, p50", "variant", "bare session", "server", "server - bare"], lone
        ),  # fmt: skip
        "",
        f"Goals for the demo model served as by default (int8, its export's gate passed): "
        f"{clients} clients >= {goals['clients_vs_pipeline']}x the pipeline: "
        f"{verdict('clients_vs_pipeline')}; sequential >= {goals['sequential_vs_pipeline']}x: "
        f"{verdict('sequential_vs_pipeline')}; a lone 3 s request within "
        f"{goals['lone_overhead_ms']:g} ms of a bare session: {verdict('lone_overhead_ms')}. "
        f"Medians of {config['rounds']} interleaved rounds, {config['threads']} ONNX Runtime and "
        f"torch threads, {num(config['seconds_per_measurement'], 0)} s per measurement. "
        f"{_run_line(data)}.",
    ]


def bench_server_detail(data: dict) -> list[str]:
    clients = data["config"]["clients"]
    paths = [("pipeline", "transformers pipeline, sequential")]
    for variant in ("fp32", "int8"):
        paths += [
            (f"bare_{variant}", f"bare ORT {variant}, batch 1"),
            (f"bare_{variant}_b8", f"bare ORT {variant}, batch 8"),
            (f"server_{variant}_seq", f"server {variant}, 1 client"),
            (f"server_{variant}_clients", f"server {variant}, {clients} clients"),
        ]
    rows = []
    for name, entry in data["models"].items():
        for key, label in paths:
            m = entry["median"][key]
            rows.append([
                name if key == "pipeline" else "", label, num(m["audio_s_per_s"]),
                num(m["audio_s_per_cpu_s"]),
                f"{m['p50_ms']:.1f} / {m['p95_ms']:.1f} / {m['p99_ms']:.1f}",
                num(m.get("mean_batch_size", 8.0 if key.endswith("_b8") else 1.0)),
            ])  # fmt: skip
    header = ["model", "path", "audio s / s", "audio s / CPU s", "p50 / p95 / p99 ms",
              "mean batch"]  # fmt: skip
    return [
        *table(header, rows),
        "",
        "Audio s / CPU s counts the server's and the client process's CPU time (the bare and "
        f"pipeline paths: this process's). {_run_line(data)}.",
    ]


# ---- profile_request.json -----------------------------------------------------------------------


def profile_request(data: dict) -> list[str]:
    """One lone request, stage by stage: the profiles side by side (before, after)."""
    profiles = data["profiles"]
    labels = list(profiles)
    stages = list(next(iter(profiles.values()))["stages_p50_ms"])
    rows = [[stage, *(f"{p['stages_p50_ms'][stage]:.3f}" for p in profiles.values())]
            for stage in stages]  # fmt: skip
    rows += [
        ["**client latency, p50**", *(f"**{p['client_p50_ms']:.2f}**" for p in profiles.values())],
        ["bare ONNX Runtime session, p50", *(f"{p['bare_p50_ms']:.2f}" for p in profiles.values())],
        ["**latency - bare session**",
         *(f"**{p['overhead_p50_ms']:+.2f}**" for p in profiles.values())],
    ]  # fmt: skip
    notes = []
    for label, p in profiles.items():
        commit = f"commit {p['commit']}, " if p.get("commit") else ""
        notes.append(
            f"{label}: {commit}{p['model_dir']} ({p['backbone']}, {p['variant']}), "
            f"{p['threads']} threads, {p['requests']} requests, {p['date']}, load average "
            f"{load(p['load_average'][0])} -> {load(p['load_average'][1])}"
        )
    return [
        *table(["stage (p50 ms)", *labels], rows),
        "",
        f"{'; '.join(notes)}. Stage medians do not add up to the latency's median exactly.",
    ]


# ---- int8_accuracy.json / int8_sensitivity.json -------------------------------------------------


def _pct1(share: float) -> str:
    return f"{share * 100:.1f}"


def _met(ok: bool) -> str:
    return "met" if ok else "missed"


def int8_accuracy(data: dict) -> list[str]:
    """A trained student's int8 against fp32 on its test speakers, and the export's gate."""
    fp32, int8, goals, met = data["fp32"], data["int8"], data["goals"], data["met"]
    rows = [
        ["UA %", _pct1(fp32["ua"]), _pct1(int8["ua"]),
         f"within {goals['ua_drop_points']:g} point: {_met(met['ua'])} "
         f"({data['ua_drop_points']:.2f})"],
        ["WA %", _pct1(fp32["wa"]), _pct1(int8["wa"]), ""],
        ["same label as fp32 %", "", _pct1(data["argmax_agreement"]), ""],
    ]  # fmt: skip
    names = data.get("dimension_names") or []
    for i, name in enumerate(names if "ccc" in fp32 else []):
        rows.append([f"CCC {name}", f"{fp32['ccc'][i]:.3f}", f"{int8['ccc'][i]:.3f}", ""])
    if "dimensions_max_abs_diff" in data:
        ccc = f"; CCC {data['ccc_drop_max']:.3f}" if "ccc_drop_max" in data else ""
        rows.append([
            "dimensions: largest / mean difference from fp32", "",
            f"{data['dimensions_max_abs_diff']:.3f} / {data['dimensions_mean_abs_diff']:.3f}",
            f"within {goals['dimensions_max_abs_diff']:g} or CCC within {goals['ccc_drop']:g}: "
            f"{_met(met['dimensions'])} ({data['dimensions_max_abs_diff']:.3f}{ccc})",
        ])  # fmt: skip
    rows.append([
        "int8 in padded batches: largest difference from alone", "",
        f"{data['int8_batched_max_abs_diff']:.3g}",
        f"within {goals['batched_tolerance']:g}: {_met(met['batched_exactly'])}",
    ])  # fmt: skip
    gate = data["export_gate"]
    verdict = "accepted" if gate["accepted"] else f"refused ({gate.get('reason')})"
    ccc_gate = ""
    if "dimensions_ccc_fp32" in gate:
        drop = max(
            a - b
            for a, b in zip(gate["dimensions_ccc_fp32"], gate["dimensions_ccc_int8"], strict=True)
        )
        ccc_gate = f", CCC down by at most {drop:.3f}"
    dims_gate = (
        f", dimensions moved by up to {gate['dimensions_max_abs_diff']:.3f}{ccc_gate}"
        if "dimensions_max_abs_diff" in gate
        else ""
    )
    served = "batched" if gate["batch_invariant"] else "one clip at a time (exact answers)"
    return [
        *table(["test speakers", "fp32", "int8", "goal"], rows),
        "",
        f"{data['backbone']} student `{data['model']}`, fold {data['fold']}: "
        f"{data['test_clips']} test clips of {', '.join(data['test_speakers'])}. The export's "
        f"gate on {gate['evaluated_on']} validation clips of "
        f"{', '.join(gate.get('evaluation_speakers', []))}: UA {_pct1(gate['ua_fp32'])} -> "
        f"{_pct1(gate['ua_int8'])}%{dims_gate}, batching drift "
        f"{gate['batching_max_abs_diff']:.3g}: int8 {verdict}, served {served}. "
        f"`{data['command']}`, run {data['date']} at commit {data['commit']}, "
        f"{data['seconds']:g} s, load average {load(data['load_average'][0])} -> "
        f"{load(data['load_average'][1])}.",
    ]


def int8_sensitivity(data: dict) -> list[str]:
    """The int8 recipe's variants against fp32 on the check clips, and the batching drift of
    equal-length batches."""
    rows = []
    for name, v in data["variants"].items():
        dims = (
            f"{v['dimensions_max_abs_diff']:.3f} / {v['dimensions_mean_abs_diff']:.4f}"
            if "dimensions_max_abs_diff" in v
            else ""
        )
        rows.append([name, dims, f"{v['logits_max_abs_diff']:.3f}", pct(v["argmax_agreement"])])
    snr = [v["snr_db"] for v in data["input_snr"].values()]
    ratios = list(data["layernorm_max_over_median"].values())
    drift = [
        [name, f"{d['max_abs_diff']:.2g}", f"{d['rows_identical']} of {d['rows']}"]
        for name, d in data["equal_length_batches"].items()
    ]
    rows_per = next(iter(data["equal_length_batches"].values()))
    return [
        *table(
            [
                "int8 recipe",
                "dimensions: largest / mean difference",
                "logits: largest",
                "same label %",
            ],
            rows,
        ),  # fmt: skip
        "",
        f"{data['backbone']} student `{data['model']}`: {data['calibration_clips']} calibration "
        f"clips, {data['check_clips']} check clips (the export's own sets). Quantised inputs' "
        f"signal to uint8-rounding-noise ratio {min(snr):.1f}-{max(snr):.1f} dB (median "
        f"{float(np.median(snr)):.1f}); LayerNorm outputs' largest channel / median channel "
        f"{min(ratios):.1f}-{max(ratios):.1f}.",
        "",
        *table(
            [
                f"batches of 8 clips of {rows_per['samples']} samples",
                "largest difference from alone",
                "rows equal bit for bit",
            ],
            drift,
        ),  # fmt: skip
        "",
        f"`{data['command']}`, run {data['date']} at commit {data['commit']}, "
        f"{data['minutes']:g} min, load average {load(data['load_average'][0])} -> "
        f"{load(data['load_average'][1])}.",
    ]
