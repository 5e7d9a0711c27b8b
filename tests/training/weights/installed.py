"""The installed Whisper bundles of the weights tests; a test needing a missing one is skipped."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.weights.bundles import BUNDLES


def locate(name: str) -> tuple[Path, list[Path]]:
    """(bundle dir, model.bin parts) of an installed bundle, or skip the test."""
    try:
        return BUNDLES[name].locate(name)
    except ModuleNotFoundError as error:
        pytest.skip(str(error))
