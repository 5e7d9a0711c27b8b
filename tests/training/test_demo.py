"""`python -m training.demo`: which demo it builds, and what it tells the user."""

import pytest

from tests.training.data.trees import make_ravdess, make_tess
from training import demo, distill
from training.data.corpora import ENV_VAR


@pytest.fixture
def calls(monkeypatch):
    seen = []
    monkeypatch.setattr(distill, "main", lambda argv: seen.append(argv) or 0)
    return seen


@pytest.fixture
def no_corpora(monkeypatch, tmp_path):
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.chdir(tmp_path)  # no data/corpora here


def test_real_voices_when_both_corpora_are_found(tmp_path, monkeypatch, calls, capsys):
    root = tmp_path / "corpora"
    make_ravdess(root / "ravdess", actors=(1,), emotions=("01",))
    make_tess(root / "tess", words=("back",), emotions=("sad",))
    monkeypatch.setenv(ENV_VAR, str(root))
    assert demo.main(["--export", "models/demo", "--threads=1"]) == 0
    assert calls == [["--preset", "voices", "--export=models/demo", "--threads=1"]]
    out = capsys.readouterr().out
    assert "demo model: real voices" in out and "non-commercial" in out
    assert "built the real voices (RAVDESS + TESS) and synthetic words demo model" in out


def test_synthetic_demo_says_why_and_how_to_get_the_corpora(no_corpora, calls, capsys):
    assert demo.main(["--export", "m"]) == 0
    assert calls[0][:2] == ["--preset", "demo"]
    out = capsys.readouterr().out
    assert "ravdess, tess not found" in out and "python -m training.data.fetch ravdess tess" in out


def test_one_corpus_is_not_enough(tmp_path, monkeypatch, calls):
    monkeypatch.chdir(tmp_path)  # a data/corpora of the checkout must not complete the pair
    make_tess(tmp_path / "c" / "tess", words=("back",), emotions=("sad",))
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "c"))
    demo.main(["--export", "m"])
    assert calls[0][:2] == ["--preset", "demo"]


def test_a_failed_download_falls_back_to_synthetic(no_corpora, calls, monkeypatch, capsys):
    monkeypatch.setattr(demo.fetch, "main", lambda argv: 1)
    demo.main(["--export", "m", "--fetch"])
    assert calls[0][:2] == ["--preset", "demo"]
    assert "downloading ravdess, tess" in capsys.readouterr().out


def test_a_failed_build_is_not_reported_as_built(no_corpora, monkeypatch, capsys):
    monkeypatch.setattr(distill, "main", lambda argv: 2)
    assert demo.main(["--export", "m", "--synthetic"]) == 2
    assert "built the" not in capsys.readouterr().out
