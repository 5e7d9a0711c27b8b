"""Where the real corpora are (``find_corpora``) and how one or several load as one dataset
(``load_corpora``): ids stay unique, each utterance keeps its ``corpus``, every corpus's
problems are listed together.

The synthetic words corpus can join them (``synthetic=DIR``, a folder written by
``python -m training.data.synthetic``): its utterances are named ``synthetic/<id>`` and held
out by voice (2 test and 2 validation voices, drawn with seed 0), so ``--protocol=corpus``
tests on held-out voices of every corpus. Real voices carry real prosody with emotionally
neutral texts; the synthetic sentences carry the emotion words.

A corpus is looked for, in order, in ``corpora_dir/<name>`` (``--corpora DIR``), then
``$EMODISTILL_CORPORA/<name>``, then ``data/corpora/<name>`` (where
``python -m training.data.fetch`` puts it); the first existing folder wins.

    python -m training.data.corpora ravdess tess     # where each is, counts, problems
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from training.data.corpus import ACTED_LABELS, CorpusError
from training.data.manifest import ManifestError, load_manifest
from training.data.ravdess import scan_ravdess
from training.data.splits import with_held_out_split
from training.data.synthetic import MANIFEST_NAME, with_carriers
from training.data.tess import scan_tess
from training.data.utterance import EMOTIONS, Utterance

ENV_VAR = "EMODISTILL_CORPORA"
DEFAULT_DIR = Path("data/corpora")
Scan = Callable[[Path, Iterable[str]], tuple[list[Utterance], list[str]]]
SYNTHETIC = "synthetic"


def scan_synthetic(root: Path, labels: Iterable[str]) -> tuple[list[Utterance], list[str]]:
    """The synthetic corpus in ``root`` as a member of a combined dataset (see above)."""
    try:
        utterances = with_carriers(load_manifest(root / MANIFEST_NAME), root)
    except (ManifestError, OSError) as exc:
        return [], [f"{root}: {exc}"]
    kept = [
        dataclasses.replace(u, id=f"{SYNTHETIC}/{u.id}", corpus=SYNTHETIC)
        for u in utterances
        if u.label in set(labels)
    ]
    return with_held_out_split(kept), []


SCANS: dict[str, Scan] = {"ravdess": scan_ravdess, "tess": scan_tess}
# The real corpora, which find_corpora looks up; the synthetic one always names its folder.
CORPORA = tuple(SCANS)
SCANS[SYNTHETIC] = scan_synthetic


def _names(names: Iterable[str]) -> list[str]:
    names = list(names)
    unknown = [n for n in names if n not in SCANS]
    if unknown:
        raise ValueError(f"unknown corpus {unknown}; choose from {list(CORPORA)}")
    return names


def search_dirs(corpora_dir: str | Path | None = None) -> list[Path]:
    """The folders searched, in order: ``corpora_dir``, ``$EMODISTILL_CORPORA``, data/corpora."""
    dirs = [corpora_dir, os.environ.get(ENV_VAR), DEFAULT_DIR]
    return [Path(d) for d in dirs if d]


def find_corpora(
    names: Iterable[str] = CORPORA, corpora_dir: str | Path | None = None
) -> dict[str, Path | None]:
    """``{name: the corpus folder, or None where no searched folder has it}``."""
    found: dict[str, Path | None] = {}
    for name in _names(names):
        if name == SYNTHETIC:
            raise ValueError(
                "the synthetic corpus is not looked up: name its folder, synthetic=DIR"
            )
        places = [d / name for d in search_dirs(corpora_dir) if (d / name).is_dir()]
        found[name] = places[0].resolve() if places else None
    return found


def parse_spec(spec: str | Sequence[str]) -> list[tuple[str, Path | None]]:
    """``"ravdess,tess=/data/TESS"`` (or the items as a list) -> [(name, root or None)]."""
    items = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
    pairs = []
    for item in filter(None, items):
        name, _, root = item.partition("=")
        pairs.append((name.strip(), Path(root.strip()) if root.strip() else None))
    _names(name for name, _ in pairs)
    if not pairs:
        raise ValueError(f"no corpus named; choose from {list(CORPORA)}")
    return pairs


def corpus_names(kind: str, path: str | Path) -> list[str]:
    """The corpora a dataset (``--dataset``, ``--data_path``) is made of: its members for
    "corpora", the corpus itself for "ravdess", "tess" and "synthetic", none otherwise."""
    if kind == "corpora":
        return [name for name, _ in parse_spec(str(path))]
    return [kind] if kind in SCANS else []


def not_found(name: str, corpora_dir: str | Path | None = None) -> str:
    searched = ", ".join(str(d / name) for d in search_dirs(corpora_dir))
    return (
        f"{name}: not found (searched {searched}); get it with "
        f"`python -m training.data.fetch {name} --to {DEFAULT_DIR}` or set {ENV_VAR}"
    )


def scan_corpora(
    spec: str | Sequence[str],
    labels: Iterable[str] = EMOTIONS,
    corpora_dir: str | Path | None = None,
) -> tuple[list[Utterance], list[str]]:
    """(the corpora's utterances with a label in ``labels``, in spec order, every problem)."""
    labels = tuple(labels)
    utterances: list[Utterance] = []
    problems: list[str] = []
    for name, root in parse_spec(spec):
        if root is None and name == SYNTHETIC:
            problems.append("synthetic: name the corpus folder (synthetic=DIR)")
            continue
        root = root or find_corpora([name], corpora_dir)[name]
        if root is None:
            problems.append(not_found(name, corpora_dir))
            continue
        try:
            found, trouble = SCANS[name](root, labels)
        except CorpusError as exc:
            found, trouble = [], exc.problems
        utterances += found
        problems += [f"{name}: {p}" for p in trouble]
    ids = Counter(u.id for u in utterances)
    problems += [f"id {i!r} is given {n} times" for i, n in ids.items() if n > 1]
    corpora_of: dict[str, set[str]] = {}
    for u in utterances:
        corpora_of.setdefault(u.speaker, set()).add(u.corpus)
    problems += [
        f"speaker {s!r} is in several corpora {sorted(c)}"
        for s, c in corpora_of.items()
        if len(c) > 1
    ]
    return utterances, problems


def load_corpora(
    spec: str | Sequence[str],
    labels: Iterable[str] = EMOTIONS,
    corpora_dir: str | Path | None = None,
) -> list[Utterance]:
    """One dataset from the corpora in ``spec`` (``"ravdess,tess"``; ``name=ROOT`` gives a
    corpus's folder, a bare name is looked up by ``find_corpora``); raises ``CorpusError``
    listing every problem of every corpus."""
    utterances, problems = scan_corpora(spec, labels, corpora_dir)
    if problems:
        raise CorpusError("corpora", spec if isinstance(spec, str) else ",".join(spec), problems)
    return utterances


def summary(utterances: Sequence[Utterance]) -> dict:
    """Counts per corpus: clips, labels, speakers, splits and hours."""
    out: dict[str, dict] = {}
    for name in sorted({u.corpus for u in utterances}):
        utts = [u for u in utterances if u.corpus == name]
        out[name] = {
            "clips": len(utts),
            "hours": round(sum(u.duration for u in utts) / 3600, 3),
            "labels": dict(sorted(Counter(u.label for u in utts).items())),
            "speakers": dict(sorted(Counter(u.speaker for u in utts).items())),
            "splits": dict(sorted(Counter(u.split for u in utts).items())),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    import json

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("corpora", nargs="*", default=list(CORPORA), help="names or name=ROOT")
    parser.add_argument("--corpora", dest="corpora_dir", help=f"folder of the corpora ({ENV_VAR})")
    parser.add_argument("--labels", default=",".join(EMOTIONS), help=f"of {list(ACTED_LABELS)}")
    args = parser.parse_args(argv)
    for name, root in parse_spec(args.corpora):
        print(f"{name}: {root or find_corpora([name], args.corpora_dir)[name] or 'not found'}")
    utterances, problems = scan_corpora(
        args.corpora, args.labels.split(","), corpora_dir=args.corpora_dir
    )
    print(json.dumps(summary(utterances), indent=1))
    for problem in problems:
        print(f"problem: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
