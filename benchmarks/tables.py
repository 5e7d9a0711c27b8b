"""Writes the results tables of README.md and docs/*.md from the JSON in benchmarks/results/.

A generated table sits between two markers that name it and, by its first part, its source:
`<!-- table: bench_stream -->` ... `<!-- /table -->` is written from
`benchmarks/results/bench_stream.json`; `<!-- table: bench_model:ratios -->` is another view of
`bench_model.json`. Only the text between the markers is rewritten. `make tables` (`python -m
benchmarks.tables`) writes them; `--check` changes nothing and exits 1, with a diff, when a page
differs from what it would write. The views live in tables_speed.py, tables_runs.py,
tables_voices.py and tables_transcribe.py.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

from benchmarks.tables_format import wrap
from benchmarks.tables_runs import (
    bench_stream,
    bench_stream_idle,
    rehearsal,
    reliability,
    reliability_summary,
)
from benchmarks.tables_speed import (
    bench_model,
    bench_model_ratios,
    bench_server,
    bench_server_detail,
    int8_accuracy,
    int8_sensitivity,
    profile_request,
)
from benchmarks.tables_transcribe import (
    transcribe_distill,
    transcribe_engines,
    transcribe_wer,
)
from benchmarks.tables_vocab import transfer_ablation
from benchmarks.tables_voices import (
    calibration,
    real_voices,
    real_voices_asterisk,
    real_voices_calibration,
    real_voices_confusion,
    real_voices_gain,
    real_voices_loco,
    real_voices_ravdess,
    real_voices_stages,
    voices_ablation,
)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MARKER = re.compile(
    r"(?P<open><!-- table: (?P<name>[\w.-]+(?::[\w.-]+)?) -->\n)"
    r"(?P<body>.*?)(?P<close><!-- /table -->)",
    re.S,
)


def pages(root: Path = ROOT) -> list[Path]:
    """The markdown pages that may hold generated tables."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


TABLES: dict[str, Callable[[dict], list[str]]] = {
    "bench_model": bench_model,
    "bench_model:ratios": bench_model_ratios,
    "bench_server": bench_server,
    "bench_server:detail": bench_server_detail,
    "profile_request": profile_request,
    "int8_accuracy": int8_accuracy,
    "int8_sensitivity": int8_sensitivity,
    "bench_stream": bench_stream,
    "bench_stream_redesign_idle": bench_stream_idle,
    "reliability": reliability,
    "reliability:summary": reliability_summary,
    "rehearsal": rehearsal,
    "real_voices": real_voices,
    "real_voices:confusion": real_voices_confusion,
    "real_voices:ravdess": real_voices_ravdess,
    "real_voices:calibration": real_voices_calibration,
    "real_voices:gain": real_voices_gain,
    "real_voices:asterisk": real_voices_asterisk,
    "real_voices:loco": real_voices_loco,
    "loco": real_voices_loco,
    "real_voices:stages": real_voices_stages,
    "calibration": calibration,
    "transfer_ablation": transfer_ablation,
    "voices_ablation": voices_ablation,
    "voices_choices": voices_ablation,
    "transcribe": transcribe_wer,
    "transcribe:engines": transcribe_engines,
    "transcribe:distill": transcribe_distill,
}


def rendertable(name: str, results: Path = RESULTS) -> str:
    """The text a table's markers enclose, from its source JSON."""
    if name not in TABLES:
        raise KeyError(f"unknown table {name!r}; known: {', '.join(TABLES)}")
    source = results / f"{name.split(':')[0]}.json"
    data = json.loads(source.read_text(encoding="utf-8"))
    return "\n".join(out for line in TABLES[name](data) for out in wrap(line)) + "\n"


def render(text: str, results: Path = RESULTS) -> str:
    """The page with every marked table rewritten."""
    return MARKER.sub(lambda m: m["open"] + rendertable(m["name"], results) + m["close"], text)


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
