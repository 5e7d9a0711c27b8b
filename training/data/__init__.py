"""Dataset adapters: every one yields ``Utterance`` records (training/data/utterance.py)."""

from __future__ import annotations

from pathlib import Path

from training.data.utterance import EMOTIONS, Utterance

DATASET_KINDS = ("iemocap", "manifest", "synthetic")


def load_dataset(
    kind: str, path: str | Path, labels: tuple[str, ...] | list[str] = EMOTIONS
) -> list[Utterance]:
    """``kind``: "iemocap" (release root), "manifest" (a CSV/JSONL file) or "synthetic"
    (a folder written by ``python -m training.data.synthetic``, read through its manifest).
    ``labels``: the classes a manifest may use (the config's ``labels``); IEMOCAP and the
    synthetic corpus have their own label sets, filtered by the caller."""
    from training.data.manifest import load_manifest

    if kind == "iemocap":
        from training.data.iemocap import load_iemocap

        return load_iemocap(path)
    if kind == "manifest":
        return load_manifest(path, labels)
    if kind == "synthetic":
        from training.data.synthetic import MANIFEST_NAME, with_carriers

        return with_carriers(load_manifest(Path(path) / MANIFEST_NAME), Path(path))
    raise ValueError(f"unknown dataset kind {kind!r}; choose one of {DATASET_KINDS}")


__all__ = ["DATASET_KINDS", "EMOTIONS", "Utterance", "load_dataset"]
