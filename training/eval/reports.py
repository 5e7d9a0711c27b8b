"""Scores and reports: student metrics, the results table, confusion and training-curve PNGs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from training.data.utterance import DIMENSIONS
from training.eval.metrics import ccc_per_dimension, compute_metrics, plot_confusion

SUMMARY_KEYS = ("ua", "wa", "macro_f1")
# (column title, result key, metric) of the results table, in order.
COLUMNS = (
    ("test UA (best valid)", "test_best", "ua"),
    ("test WA (best valid)", "test_best", "wa"),
    ("test UA (last epoch)", "test_last", "ua"),
    ("test WA (last epoch)", "test_last", "wa"),
    ("valid UA (best)", "valid_best", "ua"),
)


def scorer(labels: Sequence[str]):
    """``score(y_true_indices, logits) -> compute_metrics(...)`` with label names."""

    def score(y_true: np.ndarray, logits: np.ndarray) -> dict:
        names = list(labels)
        return compute_metrics(
            [names[i] for i in y_true], [names[i] for i in np.asarray(logits).argmax(-1)], names
        )

    return score


def ccc_scores(pred: np.ndarray, rated: np.ndarray) -> dict | None:
    """{dimension: CCC} over the rated utterances (``rated`` [N, 3], NaN rows unrated);
    None when fewer than 2 are rated."""
    if (~np.isnan(rated).any(-1)).sum() < 2:
        return None
    return dict(zip(DIMENSIONS, ccc_per_dimension(pred, rated), strict=True))


def brief(metrics: dict) -> dict:
    return {k: metrics[k] for k in SUMMARY_KEYS}


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def fmt(values: Sequence[float]) -> str:
    if not values:
        return "-"
    mean, std = mean_std(values)
    return f"{100 * mean:.1f} ± {100 * std:.1f}"


# (column title, result key) of the dimension columns: CCC per dimension on the test speakers
# (best-validation checkpoint), and the mean over the dimensions on validation.
CCC_COLUMNS = (
    *((f"test CCC {d[0].upper()} (best valid)", "test_best", d) for d in DIMENSIONS),
    ("valid CCC mean (best)", "valid_best", "mean"),
)


def ccc_values(runs: Sequence[dict], part: str, dimension: str) -> list[float]:
    """The runs' CCC of ``dimension`` ("mean": over the 3) on ``part``; runs without it skipped."""
    out = []
    for r in runs:
        scores = (r.get(part) or {}).get("ccc")
        if scores:
            out.append(
                float(np.mean(list(scores.values()))) if dimension == "mean" else scores[dimension]
            )
    return out


def fmt_ccc(values: Sequence[float]) -> str:
    if not values:
        return "-"
    mean, std = mean_std(values)
    return f"{mean:.3f} ± {std:.3f}"


def scores_of(runs: Sequence[dict], part: str, metric: str) -> list[float]:
    """``metric`` of ``part`` over the runs that have that part (a run without validation
    speakers has no validation scores)."""
    return [r[part][metric] for r in runs if r.get(part)]


def aggregate(students: Sequence[dict], teachers: Sequence[dict]) -> dict:
    """Mean/std over (fold, seed) runs per variant (CCC per dimension too, for students with
    dimensions), and over folds per teacher."""
    out: dict = {"students": {}, "teachers": {}}
    for variant in dict.fromkeys(s["variant"] for s in students):
        runs = [s for s in students if s["variant"] == variant]
        out["students"][variant] = {
            "runs": len(runs),
            **{
                f"{part}_{m}": dict(zip(("mean", "std"), mean_std(values), strict=True))
                for _, part, m in COLUMNS
                if (values := scores_of(runs, part, m))
            },
            **{
                f"{part}_ccc_{d}": dict(zip(("mean", "std"), mean_std(values), strict=True))
                for _, part, d in CCC_COLUMNS
                if (values := ccc_values(runs, part, d))
            },
        }
    for name in ("ling", "pros"):
        runs = [t[name] for t in teachers if name in t]
        if runs:
            out["teachers"][name] = {
                f"{part}_{m}": dict(zip(("mean", "std"), mean_std(values), strict=True))
                for part in ("test", "valid")
                for m in SUMMARY_KEYS
                if (values := scores_of(runs, part, m))
            }
    return out


TEACHER_NAMES = {
    "ling": "linguistic teacher (transcript)",
    "pros": "prosodic teacher (eGeMAPS LLDs)",
}


def results_table(students: Sequence[dict], teachers: Sequence[dict], title: str = "") -> str:
    """Markdown: one row per teacher and per student variant, UA/WA in % (mean ± std), and
    beside them CCC per dimension when some student predicts dimensions."""
    dims = bool(ccc_values(students, "test_best", "mean"))
    extra = CCC_COLUMNS if dims else ()
    head = "| model | runs | " + " | ".join(c[0] for c in (*COLUMNS, *extra)) + " |"
    lines = [f"### {title}", ""] if title else []
    lines += [head, "|" + " --- |" * (len(COLUMNS) + len(extra) + 2)]
    for name, label in TEACHER_NAMES.items():
        runs = [t[name] for t in teachers if name in t]
        if runs:
            cells = [
                fmt(scores_of(runs, "test", m)) if part == "test_best" else
                fmt(scores_of(runs, "valid", m)) if part == "valid_best" else "-"
                for _, part, m in COLUMNS
            ]  # fmt: skip
            cells += ["-"] * len(extra)
            lines.append(f"| {label} | {len(runs)} | " + " | ".join(cells) + " |")
    for variant in dict.fromkeys(s["variant"] for s in students):
        runs = [s for s in students if s["variant"] == variant]
        cells = [fmt(scores_of(runs, part, m)) for _, part, m in COLUMNS]
        cells += [fmt_ccc(ccc_values(runs, part, d)) for _, part, d in extra]
        lines.append(f"| student: {variant} | {len(runs)} | " + " | ".join(cells) + " |")
    base = [s for s in students if s["variant"] == "ce_only"]
    full = [s for s in students if s["variant"] == "full"]
    if base and full:
        cells = [
            f"{100 * (mean_std(scores_of(full, p, m))[0] - mean_std(scores_of(base, p, m))[0]):+.1f}"
            if scores_of(full, p, m) and scores_of(base, p, m) else "-"
            for _, p, m in COLUMNS
        ]  # fmt: skip
        cells += ["-"] * len(extra)
        lines.append("| full - ce_only (points) | | " + " | ".join(cells) + " |")
    if dims:
        lines.append(
            "\nCCC: Lin's concordance correlation of the predicted and rated arousal (A), "
            "valence (V) and dominance (D), 1 = perfect, mean ± std over runs."
        )
    return "\n".join(lines) + "\n"


def plot_curves(histories: dict[str, list[dict]], path: Path) -> Path:
    """Training loss and validation UA per epoch, one line per named run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_ua) = plt.subplots(1, 2, figsize=(11, 4))
    for name, history in histories.items():
        epochs = [h["epoch"] for h in history]
        ax_loss.plot(epochs, [h["loss"] for h in history], marker=".", label=name)
        ax_ua.plot(epochs, [h["valid_ua"] for h in history], marker=".", label=name)
    ax_loss.set(xlabel="epoch", ylabel="training loss (all terms)", title="training loss")
    ax_ua.set(xlabel="epoch", ylabel="UA", title="validation UA")
    ax_ua.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def confusion_png(metrics: dict, labels: Sequence[str], path: Path, title: str) -> Path:
    return plot_confusion(metrics["confusion"], list(labels), path, title=title)


SUBSET_NAMES = {
    "words_only": "only the words carry the label",
    "prosody_only": "only the prosody carries the label",
}


def subset_table(students: Sequence[dict]) -> str:
    """Markdown: test UA per student variant on the subsets where one modality alone carries
    the label (empty when the corpus does not record it)."""
    names = [n for n in SUBSET_NAMES if any(n in s.get("subsets_best", {}) for s in students)]
    if not names:
        return ""
    cols = [(n, which) for n in names for which in ("best", "last")]
    lines = [
        "",
        "Test UA in % on subsets: "
        + "; ".join(f"{n} = {SUBSET_NAMES[n]}" for n in names)
        + f" (utterances: {', '.join(str(students[0]['subsets_best'][n]['n']) for n in names)}).",
        "",
        "| model | " + " | ".join(f"{n} UA ({w})" for n, w in cols) + " |",
        "|" + " --- |" * (len(cols) + 1),
    ]
    for variant in dict.fromkeys(s["variant"] for s in students):
        runs = [s for s in students if s["variant"] == variant and "subsets_best" in s]
        cells = [fmt([r[f"subsets_{w}"][n]["ua"] for r in runs]) for n, w in cols]
        lines.append(f"| student: {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


PROBE_PARTS = {
    "seen": "the labelled corpus's words and frames",
    "transfer": "words and frames spoken only in the unlabelled transfer set",
    "novel": "words and frames in no training data",
}


def probe_table(students: Sequence[dict]) -> str:
    """Markdown: words-only UA on the vocabulary probe's parts per student variant (best
    validation checkpoint), with the linguistic teacher on the same utterances' transcripts
    (empty without a probe)."""
    runs = [s for s in students if "probe_best" in s]
    if not runs:
        return ""
    parts = [p for p in PROBE_PARTS if p in runs[0]["probe_best"]]
    sizes = ", ".join(f"{p} {runs[0]['probe_best'][p]['n']}" for p in parts)
    lines = [
        "",
        "Words-only UA in % on the vocabulary probe (held-out voices; each utterance's words "
        "carry its label and its prosody another emotion's): "
        + "; ".join(f"{p} = {PROBE_PARTS[p]}" for p in parts)
        + f" (utterances: {sizes}).",
        "",
        "| model | " + " | ".join(f"{p} UA" for p in parts) + " |",
        "|" + " --- |" * (len(parts) + 1),
    ]
    # one reference per fold's teacher (every student of a fold records the same one)
    teacher = {s["fold"]: s["probe_teacher"] for s in runs if s.get("probe_teacher")}
    if teacher:
        cells = [fmt([t[p]["ua"] for t in teacher.values()]) for p in parts]
        lines.append("| linguistic teacher (transcript) | " + " | ".join(cells) + " |")
    for variant in dict.fromkeys(s["variant"] for s in runs):
        mine = [s for s in runs if s["variant"] == variant]
        cells = [fmt([r["probe_best"][p]["ua"] for r in mine]) for p in parts]
        lines.append(f"| student: {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def corpus_table(students: Sequence[dict]) -> str:
    """Markdown: test UA and WA per corpus and student variant (best-validation and last
    checkpoints), and each corpus's test ECE before and after the temperature fitted on the
    validation speakers of all corpora (empty when the test speakers come from one corpus)."""
    runs = [s for s in students if "corpora_best" in s]
    if not runs:
        return ""
    corpora = list(dict.fromkeys(c for s in runs for c in s["corpora_best"]))
    counts = ", ".join(f"{c} {runs[0]['corpora_best'][c]['n']}" for c in corpora)
    lines = [
        "",
        f"Per corpus, test speakers (utterances: {counts}); UA / WA in %, ECE in % (15 bins).",
        "",
        "| model | corpus | UA (best valid) | WA (best valid) | UA (last) | ECE before | ECE after |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for variant in dict.fromkeys(s["variant"] for s in runs):
        mine = [s for s in runs if s["variant"] == variant]
        for c in corpora:

            def values(key: str, metric: str, mine=mine, c=c) -> list[float]:
                return [s[key][c][metric] for s in mine if c in s.get(key, {})]

            cells = [
                fmt(values("corpora_best", "ua")),
                fmt(values("corpora_best", "wa")),
                fmt(values("corpora_last", "ua") or values("corpora_best", "ua")),
                fmt(values("calibration_corpora", "test_ece_before")),
                fmt(values("calibration_corpora", "test_ece_after")),
            ]
            lines.append(f"| student: {variant} | {c} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


CALIBRATION_COLUMNS = (
    ("T", "temperature", 1.0),
    ("test ECE before", "test_ece_before", 100.0),
    ("test ECE after", "test_ece_after", 100.0),
    ("test NLL before", "test_nll_before", 1.0),
    ("test NLL after", "test_nll_after", 1.0),
)


def calibration_table(students: Sequence[dict]) -> str:
    """Markdown: the temperature fitted on validation per variant, and test ECE (%, 15 bins)
    and NLL before and after it (best-validation checkpoints, mean ± std)."""
    runs = [s for s in students if "calibration" in s]
    if not runs:
        return ""
    lines = [
        "",
        "Calibration of the best-validation checkpoints: temperature T fitted on the "
        "validation speakers (NLL); ECE in % (15 bins) and NLL on the test speakers.",
        "",
        "| model | " + " | ".join(c[0] for c in CALIBRATION_COLUMNS) + " |",
        "|" + " --- |" * (len(CALIBRATION_COLUMNS) + 1),
    ]
    for variant in dict.fromkeys(s["variant"] for s in runs):
        mine = [s["calibration"] for s in runs if s["variant"] == variant]
        cells = []
        for _, key, scale in CALIBRATION_COLUMNS:
            mean, std = mean_std([scale * c[key] for c in mine])
            cells.append(f"{mean:.2f} ± {std:.2f}")
        lines.append(f"| student: {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_layer_weights(students: Sequence[dict], path: Path) -> Path:
    """The learned share of each encoder layer in the pooled representation, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for s in students:
        weights = s["layer_weights"]
        ax.plot(range(len(weights)), weights, marker=".", alpha=0.7,
                label=f"{s['variant']} s{s['seed']} ({s['fold']})")  # fmt: skip
    ax.set(xlabel="layer (0 = input embeddings)", ylabel="softmax weight",
           title="learned layer weights (best checkpoint)")  # fmt: skip
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def refit_table(students: Sequence[dict]) -> str:
    """Markdown: test UA/WA of the students retrained on all non-test speakers for the epoch
    count the validation speakers chose, next to the validation-selected students."""
    runs = [s for s in students if s.get("refit")]
    if not runs:
        return ""
    lines = [
        "",
        "Retrained on all non-test speakers (train + valid) for the chosen number of epochs "
        "(`refit`), test UA/WA in %:",
        "",
        "| model | runs | epochs (chosen on valid) | train utterances | test UA (refit) | "
        "test WA (refit) | test UA (best valid, fewer speakers) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for variant in dict.fromkeys(s["variant"] for s in runs):
        rs = [s for s in runs if s["variant"] == variant]
        epochs = ", ".join(str(s["refit"]["epochs"]) for s in rs)
        utts = ", ".join(sorted({str(s["refit"]["train_utterances"]) for s in rs}))
        cells = [
            fmt([s["refit"]["test"]["ua"] for s in rs]),
            fmt([s["refit"]["test"]["wa"] for s in rs]),
            fmt([s["test_best"]["ua"] for s in rs]),
        ]
        lines.append(
            f"| student: {variant} | {len(rs)} | {epochs} | {utts} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines) + "\n"


def speakers_table(students: Sequence[dict]) -> str:
    """Markdown: which speakers trained, validated and tested each fold's students (and the
    refit students, when any)."""
    folds: dict[str, dict] = {}
    for s in students:
        if s.get("speakers"):
            folds.setdefault(s["fold"], s)
    if not folds:
        return ""
    lines = ["", "Speakers per fold:", "", "| fold | model | train | valid | test |"]
    lines.append("| --- | --- | --- | --- | --- |")

    def cell(names: Sequence[str]) -> str:
        return f"{len(names)}: {', '.join(names)}" if names else "-"

    for fold, s in folds.items():
        sp = s["speakers"]
        lines.append(
            f"| {fold} | selected on valid | {cell(sp['train'])} | {cell(sp['valid'])} | "
            f"{cell(sp['test'])} |"
        )
        if s.get("refit"):
            rs = s["refit"]["speakers"]
            lines.append(f"| {fold} | refit | {cell(rs['train'])} | - | {cell(rs['test'])} |")
    return "\n".join(lines) + "\n"
