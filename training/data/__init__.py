"""Dataset adapters: every one yields ``Utterance`` records (training/data/utterance.py)."""

from __future__ import annotations

from pathlib import Path

from training.data.utterance import EMOTIONS, Utterance

DATASET_KINDS = ("iemocap", "manifest", "synthetic", "ravdess", "tess", "corpora")


def load_dataset(
    kind: str,
    path: str | Path,
    labels: tuple[str, ...] | list[str] = EMOTIONS,
    corpora_dir: str | Path | None = None,
) -> list[Utterance]:
    """``kind``: "iemocap" (release root), "manifest" (a CSV/JSONL file), "synthetic"
    (a folder written by ``python -m training.data.synthetic``, read through its manifest),
    "ravdess" or "tess" (the extracted corpus; an empty ``path`` looks it up with
    ``training.data.corpora.find_corpora``), or "corpora" (``path`` names several,
    "ravdess,tess" or "ravdess=ROOT,tess=ROOT": one dataset).
    ``labels``: the classes a manifest may use and the real corpora keep (the config's
    ``labels``); IEMOCAP and the synthetic corpus have their own label sets, filtered by the
    caller. ``corpora_dir``: searched first for corpora named without a folder."""
    from training.data.manifest import load_manifest

    if kind == "iemocap":
        from training.data.iemocap import load_iemocap

        return load_iemocap(path)
    if kind == "manifest":
        return load_manifest(path, labels)
    if kind == "synthetic":
        from training.data.synthetic import MANIFEST_NAME, with_carriers

        return with_carriers(load_manifest(Path(path) / MANIFEST_NAME), Path(path))
    if kind in ("ravdess", "tess", "corpora"):
        from training.data.corpora import load_corpora

        spec = str(path) if kind == "corpora" else f"{kind}={path}" if str(path) else kind
        return load_corpora(spec, labels, corpora_dir)
    raise ValueError(f"unknown dataset kind {kind!r}; choose one of {DATASET_KINDS}")


__all__ = ["DATASET_KINDS", "EMOTIONS", "Utterance", "load_dataset"]
