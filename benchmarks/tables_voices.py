"""Results-table views of real_voices.json: the real-voices demo run and its exported model."""

from __future__ import annotations

from benchmarks.tables_format import load, mean_std, num, pct, table


def _ran(data: dict) -> str:
    """The closing line of every view: the command and when (and on what) it ran."""
    machine, commit = data["machine"], data["git"]["commit"] or "unknown"
    return (
        f"`{data['command']}`, run {data['created'].replace('T', ' ')[:16]} UTC at commit "
        f"{commit[:10]}, load average {load(machine['load_avg_before'])} -> "
        f"{load(machine['load_avg_after'])}, {data['seconds']:.0f} s."
    )


def _ua_wa(scores: dict | None) -> str:
    return "-" if not scores else f"{pct(scores['ua'])} / {pct(scores['wa'])}"


def _actors(names: list[str]) -> str:
    """["Actor_21", ..., "Actor_24"] -> "21-24" (a comma list when not a run of numbers)."""
    numbers = [int(name.rsplit("_", 1)[-1]) for name in names]
    if numbers == list(range(numbers[0], numbers[0] + len(numbers))) and len(numbers) > 2:
        return f"{numbers[0]}-{numbers[-1]}"
    return ", ".join(map(str, numbers))


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 60 else f"{seconds / 60:.1f} min"


def real_voices(data: dict) -> list[str]:
    run, ravdess = data["run"], data["ravdess"]
    best, last = run["test_best"], run["test_last"]
    rows = [["student, all test speakers", _ua_wa(best), _ua_wa(last), str(best["n"])]]
    for corpus, scores in run["corpora_best"].items():
        rows.append([
            f"student, {corpus}", _ua_wa(scores), _ua_wa(run["corpora_last"].get(corpus)),
            str(scores["n"]),
        ])  # fmt: skip
    if run["refit_test"]:
        rows.append(["refit on train + valid speakers", "", _ua_wa(run["refit_test"]),
                     str(run["refit_test"]["n"])])  # fmt: skip
    exported = "refit" if data["model"]["training"].get("refit") else "best valid epoch"
    rows.append([
        f"model.onnx ({exported}), RAVDESS actors {_actors(ravdess['actors'])}",
        _ua_wa(ravdess), "", str(ravdess["clips"]),
    ])  # fmt: skip
    for name, teacher in run["teachers"].items():
        rows.append([f"{name} teacher", _ua_wa({"ua": teacher["test_ua"],
                                                "wa": teacher["test_wa"]}), "", ""])  # fmt: skip
    stages = ", ".join(f"{name} {_minutes(s['seconds'])}" for name, s in run["stages"].items())
    return [
        *table(["test part", "UA / WA %, best valid epoch", "last epoch", "clips"], rows),
        "",
        f"Preset {run['preset'] or '(none matches)'}: {run['dataset']} "
        f"({run['data_path']}), protocol {run['protocol']} (fold {run['fold']}), student "
        f"{run['student_model']}, {run['epochs']} epochs (best validation epoch "
        f"{run['best_epoch']}). Run time {_minutes(run['seconds'])} ({stages}). The model row "
        f"is the exported model on ONNX Runtime (CPU), as served.",
        "",
        _ran(data),
    ]


def _confusion(title: str, labels: list[str], matrix: list[list[int]]) -> list[str]:
    rows = [[label, *map(str, counts)] for label, counts in zip(labels, matrix, strict=True)]
    return [title, "", *table(["true \\ predicted", *labels], rows), ""]


def real_voices_confusion(data: dict) -> list[str]:
    run, ravdess, labels = data["run"], data["ravdess"], data["model"]["labels"]
    lines = _confusion(
        "Student, all test speakers (best validation epoch):",
        run["labels"], run["test_best"]["confusion"],
    )  # fmt: skip
    for corpus, scores in run["corpora_best"].items():
        lines += _confusion(f"Student, {corpus}:", run["labels"], scores["confusion"])
    lines += _confusion(
        f"model.onnx, RAVDESS actors {_actors(ravdess['actors'])}:", labels, ravdess["confusion"]
    )
    return [*lines, _ran(data)]


def real_voices_ravdess(data: dict) -> list[str]:
    ravdess, goal = data["ravdess"], data["goals"]["max_class_share"]
    rows = [
        [label, pct(ravdess["recall"][label]), str(share["count"]), pct(share["share"])]
        for label, share in ravdess["predicted"].items()
    ]
    verdict = "met" if ravdess["max_class_share"] <= goal else "missed"
    return [
        *table(["class", "recall %", "clips predicted", "share %"], rows),
        "",
        f"model.onnx on RAVDESS actors {_actors(ravdess['actors'])} ({ravdess['clips']} clips): UA "
        f"{pct(ravdess['ua'])}%, WA {pct(ravdess['wa'])}%, mean confidence "
        f"{num(ravdess['mean_confidence'], 2)}; largest predicted share "
        f"{pct(ravdess['max_class_share'])}% (goal: no class above {pct(goal)}%: {verdict}).",
        "",
        _ran(data),
    ]


def real_voices_calibration(data: dict) -> list[str]:
    run = data["run"]
    parts = [("all test speakers", run["calibration"], run["test_best"]["n"])]
    parts += [
        (corpus, report, run["corpora_best"].get(corpus, {}).get("n", "-"))
        for corpus, report in run["calibration_corpora"].items()
    ]
    rows = [
        [name, str(n), num(report["test_ece_before"], 3), num(report["test_ece_after"], 3),
         num(report["test_nll_before"], 3), num(report["test_nll_after"], 3)]
        for name, report, n in parts
        if report
    ]  # fmt: skip
    temperature = run["calibration"].get("temperature")
    return [
        *table(["test part", "clips", "ECE before", "ECE after", "NLL before", "NLL after"], rows),
        "",
        f"One temperature T = {num(temperature, 2) if temperature else '-'}, fitted on the "
        "validation speakers (minimum NLL) and folded into the exported logits; before = T 1.",
        "",
        _ran(data),
    ]


def real_voices_gain(data: dict) -> list[str]:
    gain, goals = data["gain"], data["goals"]
    rows = []
    for name, result in gain["by_gain"].items():
        met = (
            result["same_label"] >= goals["gain_same_label"]
            and result["max_abs_diff"] <= goals["gain_max_abs_diff"]
        )
        rows.append([
            f"x{name}", pct(result["same_label"]), num(result["max_abs_diff"], 3),
            num(result["mean_abs_diff"], 4), "met" if met else "missed",
        ])  # fmt: skip
    return [
        *table(["gain", "same label as x1 %", "max abs prob. diff", "mean", "goal"], rows),
        "",
        f"{gain['clips']} RAVDESS test clips, each decoded clip's samples times the gain; goal: "
        f"the x1 label and every probability within {goals['gain_max_abs_diff']:g} of x1's.",
        "",
        _ran(data),
    ]


def real_voices_asterisk(data: dict) -> list[str]:
    asterisk = data["asterisk"]
    if not asterisk:
        return ["Not measured: no Asterisk prompts were installed.", "", _ran(data)]
    confidence = asterisk["mean_confidence_by_label"]
    rows = [
        [label, str(share["count"]), pct(share["share"]),
         num(confidence[label], 2) if label in confidence else "-"]
        for label, share in asterisk["predicted"].items()
    ]  # fmt: skip
    cut, left = asterisk["cut_to_max_samples"], len(asterisk["left_out"])
    return [
        *table(["predicted", "prompts", "share %", "mean confidence"], rows),
        "",
        f"{asterisk['clips']} Asterisk prompts (asterisk-core-sounds-en-wav: calm, friendly "
        f"telephone speech at 8 kHz, {_minutes(asterisk['audio_seconds'])} of audio), mean "
        f"confidence {num(asterisk['mean_confidence'], 2)}; {cut} cut to the model's longest "
        f"input, {left} left out.",
        "",
        _ran(data),
    ]


def real_voices_loco(data: dict) -> list[str]:
    if not data["loco"]:
        return ["No leave-one-corpus-out runs were given (`--loco`).", "", _ran(data)]
    rows = [
        [" + ".join(row["train"]), row["test"], _ua_wa(row["test_best"]),
         _ua_wa(row["test_last"]), str(row["test_best"]["n"])]
        for row in data["loco"]
    ]  # fmt: skip
    first = data["loco"][0]
    return [
        *table(
            ["trained on", "tested on", "UA / WA %, best valid epoch", "last epoch", "clips"], rows
        ),  # fmt: skip
        "",
        "Each fold of `--protocol=loso` over the corpora holds one corpus out for test; "
        + (
            "validation speakers come from the training corpus. "
            if first.get("valid_speakers", 2)
            else "no validation speakers (`--valid_speakers=0`): the last epoch is the model. "
        )
        + f"Student {first['student_model']}, {first['epochs']} epochs.",
        "",
        _ran(data),
    ]


def real_voices_stages(data: dict) -> list[str]:
    run = data["run"]
    rows = [
        [name, str(stage["runs"]) + (f" (+{stage['skipped']} skipped)" if stage["skipped"] else ""),
         _minutes(stage["seconds"]),
         "-" if stage["peak_rss_mb"] is None else f"{stage['peak_rss_mb'] / 1024:.2f} GiB"]
        for name, stage in run["stages"].items()
    ]  # fmt: skip
    return [
        *table(["stage (rank 0)", "runs", "time", "peak RSS"], rows),
        "",
        f"Run total {_minutes(run['seconds'])} (the stages: {_minutes(run['stage_seconds'])}).",
        "",
        _ran(data),
    ]


def _mean_std(summary: dict, key: str) -> str:
    return mean_std(summary[key]) if key in summary else "-"


def voices_ablation(data: dict) -> list[str]:
    """Per student of the voices ablation (voices_ablation.json): validation UA, test UA over
    all held-out speakers, per corpus and on the synthetic words-only / prosody-only subsets,
    ECE after calibration, and the student's training time, mean ± std over seeds."""
    columns = [
        ("valid UA", "valid_ua"), ("test UA, all", "test_ua"), ("RAVDESS 21-24", "ravdess_ua"),
        ("synthetic", "synthetic_ua"), ("words-only", "words_only_ua"),
        ("prosody-only", "prosody_only_ua"), ("ECE, calibrated", "test_ece_after"),
    ]  # fmt: skip
    rows = []
    for row in data["rows"].values():
        s = row["summary"]
        seconds = s.get("student_seconds", [0.0])[0]
        rows.append([
            f"{row['label']} ({len(row['seeds'])} seed{'s' * (len(row['seeds']) > 1)})",
            *[_mean_std(s, key) for _, key in columns], _minutes(seconds),
        ])  # fmt: skip
    for name, teacher in data["teachers"].items():
        valid = teacher.get("valid_ua")
        rows.append([f"{name} teacher", "-" if valid is None else num(100 * valid),
                     num(100 * teacher["test_ua"]), *["" for _ in columns[2:]], ""])  # fmt: skip
    machine = data["machine"]
    return [
        *table(["student", *[name for name, _ in columns], "student time"], rows),
        "",
        f"% (ECE too), mean ± std over seeds {', '.join(map(str, data['seeds']))}, at the "
        "epoch the validation speakers choose (RAVDESS actors 17-20 and 2 synthetic voices). "
        "Test: RAVDESS actors 21-24 and 2 synthetic voices; words-only / prosody-only are the "
        "synthetic test utterances whose emotion only the words / only the prosody carry. "
        "Every student has the same teachers and targets. Student time: one student, "
        f"{data['workers']} trained at once with {data['threads']} thread(s) each, except the "
        f"preset's seed {data['seeds'][0]}: the base run's own student ({data['base']}), "
        "trained alone on all cores. "
        f"`{data['command']}`, run {data['created'].replace('T', ' ')[:16]} UTC, "
        f"{machine['cpus']} CPU cores, load average {load(machine['load_avg_before'])} -> "
        f"{load(machine['load_avg_after'])}, {data['wall_seconds'] / 60:.0f} min in all."
        + "".join(_update(u) for u in data.get("updates", [])),
    ]


def _update(update: dict) -> str:
    """A later ``--only`` call that merged seeds into some rows, as a sentence."""
    machine = update["machine"]
    return (
        f" Then `{update['command']}` (seeds {', '.join(map(str, update['seeds']))} of its "
        f"groups, merged into their rows), run {update['created'].replace('T', ' ')[:16]} UTC, "
        f"load average {load(machine['load_avg_before'])} -> {load(machine['load_avg_after'])}, "
        f"{update['wall_seconds'] / 60:.0f} min."
    )


def calibration(data: dict) -> list[str]:
    """calibration.json: per way of fitting T and per test part, ECE before and after it, the
    floor a perfectly calibrated model shows on the same clips, and the goal."""
    goal = data["goal_ece"]
    rows = []
    for fit, report in data["fits"].items():
        for part, r in report["test"].items():
            floor = r["floor_after"]
            inside = floor["p5"] <= r["ece_after"] <= floor["p95"]
            rows.append([
                f"{fit} ({report['valid_clips']} clips)", num(report["temperature"], 2), part,
                str(r["clips"]), num(100 * r["ece_before"]), num(100 * r["ece_after"]),
                f"{num(100 * floor['mean'])} ({num(100 * floor['p5'])}-{num(100 * floor['p95'])})",
                "yes" if inside else "no", "met" if r["ece_after"] <= goal else "missed",
            ])  # fmt: skip
    header = [
        "T fitted on", "T", "test part", "clips", "ECE before %", "ECE after %",
        "perfectly calibrated: mean (5-95th pct) %", "within it", f"goal <= {100 * goal:.0f}%",
    ]  # fmt: skip
    machine = data["machine"]
    return [
        *table(header, rows),
        "",
        "The exported model (ONNX Runtime, CPU) on its run's validation and test speakers; "
        'before = T 1, after = the temperature of the row. "Perfectly calibrated": the ECE of '
        "a model whose every answer is right with exactly its calibrated confidence, on the "
        f"same clips and bins ({data['draws']} draws): a measured ECE within its 5-95th "
        "percentile range is what perfect calibration would look like on this many clips.",
        "",
        f"`{data['command']}`, run {data['created'].replace('T', ' ')[:16]} UTC at commit "
        f"{(data['git']['commit'] or 'unknown')[:10]}, load average "
        f"{load(machine['load_avg_before'])} -> {load(machine['load_avg_after'])}, "
        f"{data['seconds']:.0f} s.",
    ]
