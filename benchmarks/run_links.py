"""Ablation runs that start from a finished run: hard links to its fold files, teachers and
targets, so that a resumed ``python -m training.distill`` skips them and only the students are
new work (the same files: nothing is copied, and the base run stays as it was)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

# What every fold of a run shares with runs of other students: the split and the teachers.
FOLD_FILES = ("teachers", "targets", "train.jsonl", "valid.jsonl", "test.jsonl")


def link_folds(
    base: Path, run_dir: Path, names: Iterable[str] = FOLD_FILES, skip: tuple[str, ...] = ()
) -> None:
    """Hard links in ``run_dir`` to each of ``base``'s folds' ``names`` (files or folders, those
    matching the glob patterns ``skip`` left out); what is already there is kept."""
    ignore = shutil.ignore_patterns(*skip) if skip else None
    for fold in (base / "folds").iterdir():
        target = run_dir / "folds" / fold.name
        for name in names:
            source = fold / name
            if not source.exists() or (target / name).exists():
                continue
            target.mkdir(parents=True, exist_ok=True)
            if source.is_dir():
                shutil.copytree(source, target / name, copy_function=os.link, ignore=ignore)
            else:
                os.link(source, target / name)
