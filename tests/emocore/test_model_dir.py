"""The model-directory contract's pure parts (emocore/model_dir.py): padding a batch, the
dimensions key of model.json."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from emocore.model_dir import ModelDirError, pad_batch, parse_dimensions

NAMES = ["arousal", "valence", "dominance"]


def test_pad_batch():
    audio, lengths = pad_batch([np.ones(3, np.float32), np.ones(5, np.float32)])
    assert audio.shape == (2, 5) and audio.dtype == np.float32 and lengths.dtype == np.int64
    assert lengths.tolist() == [3, 5] and audio[0, 3:].sum() == 0


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([1, 5], "null or an object"),
        ({"scale": [1, 5]}, "names must be a non-empty list of strings"),
        ({"names": [], "scale": [1, 5]}, "names must be a non-empty list of strings"),
        ({"names": "arousal", "scale": [1, 5]}, "names must be a non-empty list of strings"),
        ({"names": ["arousal", 2], "scale": [1, 5]}, "names must be a non-empty list of strings"),
        ({"names": ["arousal", "arousal"], "scale": [1, 5]}, "names repeat"),
        ({"names": NAMES}, "scale must be two increasing numbers"),
        ({"names": NAMES, "scale": [5, 1]}, "scale must be two increasing numbers"),
        ({"names": NAMES, "scale": [1, 1]}, "scale must be two increasing numbers"),
        ({"names": NAMES, "scale": [1, 3, 5]}, "scale must be two increasing numbers"),
        ({"names": NAMES, "scale": ["1", "5"]}, "scale must be two increasing numbers"),
        ({"names": NAMES, "scale": [False, True]}, "scale must be two increasing numbers"),
        ({"names": NAMES, "scale": [1, float("inf")]}, "scale must be two increasing numbers"),
    ],
)
def test_bad_dimensions_keys_are_refused(value, message):
    with pytest.raises(ModelDirError, match=message):
        parse_dimensions(value, Path("model.json"))
    assert parse_dimensions(None, Path("model.json")) is None
