"""``python -m training.weights``: the command line converter (training/weights/__main__.py)."""

from __future__ import annotations

import pytest

from tests.training.weights.installed import locate
from training.weights.__main__ import main


def test_cli_prints_the_checkpoint(tmp_path, capsys):
    locate("whisper-tiny.en")
    out = tmp_path / "tiny"
    main(["whisper-tiny.en", "--out", str(out)])
    assert capsys.readouterr().out.strip() == str(out)
    assert (out / "model.safetensors").is_file()
    with pytest.raises(SystemExit):
        main([str(tmp_path / "no-such-folder")])
