"""The transfer-set ablation's table (benchmarks/transfer_ablation.py -> transfer_ablation.json)."""

from __future__ import annotations

from benchmarks.tables_format import mean_std, table


def _label(name: str, row: dict) -> str:
    if not row["transfer_n"]:
        return "no transfer set"
    return f"transfer set {row['transfer_n']} (mix {row['transfer_mix']:g})"


def transfer_ablation(data: dict) -> list[str]:
    """Per configuration: UA on the test voices (all, words-only, prosody-only), words-only
    UA on the probe's seen / transfer / novel vocabulary, the linguistic teacher on the same
    probe transcripts, and the run's wall-clock time."""
    configs = data["configs"]
    first = next(iter(configs.values()))
    parts = list(first["probe_n"])
    header = [
        "students (full, 3 seeds)", "valid UA", "test UA", "words-only", "prosody-only",
        *[f"probe: {p}" for p in parts], "run time",
    ]  # fmt: skip
    rows = []
    for name, row in configs.items():
        s = row["summary"]
        rows.append(
            [_label(name, row), mean_std(s["valid_ua"]), mean_std(s["test_ua"]), mean_std(s["words_only_ua"]),
             mean_std(s["prosody_only_ua"]), *[mean_std(s[f"probe_{p}"]) for p in parts],
             f"{row['wall_seconds'] / 60:.1f} min"]
        )  # fmt: skip
    teacher = first["probe_teacher"]
    rows.append(
        ["linguistic teacher (transcripts)", "", "", "", "",
         *[f"{100 * teacher[p]:.1f}" for p in parts], ""]
    )  # fmt: skip
    n = first["subset_n"]
    note = (
        f"UA in %, mean ± std over seeds {', '.join(map(str, data['seeds']))}, at the epoch "
        f"the validation voices choose. Test voices: the demo corpus's 2 held-out voices "
        f"(words-only {n['words_only']} and prosody-only {n['prosody_only']} of them). Probe: "
        f"{first['probe_n'][parts[0]]} words-only utterances per part by 4 voices of other "
        "accents that no training corpus has; seen = the labelled words and frames, transfer "
        "= words and frames only the transfer set speaks, novel = in no training data. Run "
        "time: the whole run with its 3 students (the first also trains the shared teachers "
        f"and synthesises the corpus). {data['machine']}, {data['date']}; `{data['command']}`."
    )
    return [*table(header, rows), "", note]
