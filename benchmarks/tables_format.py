"""Formatting shared by the results-table views: numbers, ranges, markdown rows, wrapping."""

from __future__ import annotations

import textwrap
from collections.abc import Callable


def num(value: float, digits: int = 1) -> str:
    return f"{value:.{digits}f}"


def pct(share: float) -> str:
    return f"{share * 100:.0f}"


def mean_std(pair: list[float]) -> str:
    """A [mean, std] pair of shares as percentages: "72.5 ± 0.8"."""
    mean, std = pair
    return f"{100 * mean:.1f} ± {100 * std:.1f}"


def span(values: list[float], fmt: Callable[[float], str]) -> str:
    low, high = fmt(min(values)), fmt(max(values))
    return low if low == high else f"{low}-{high}"


def load(values: list[float]) -> str:
    """The 1-minute load average of an os.getloadavg() triple."""
    return num(values[0])


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = [f"| {' | '.join(header)} |", f"|{'---|' * len(header)}"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return lines


def wrap(line: str) -> list[str]:
    """Prose lines wrapped as the pages are (table rows stay whole)."""
    if line.startswith("|") or not line:
        return [line]
    return textwrap.wrap(line, 96, break_long_words=False, break_on_hyphens=False)
