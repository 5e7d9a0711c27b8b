"""The results tables in README.md and docs/*.md are what `make tables` writes from the JSON."""

import shutil
from pathlib import Path

import pytest

from benchmarks import tables

ROOT = Path(__file__).resolve().parents[1]
PAGES = tables.pages(ROOT)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_page_tables_match_their_json(page):
    text = page.read_text(encoding="utf-8")
    assert text.count("<!-- table: ") == text.count("<!-- /table -->"), "a marker is not closed"
    assert tables.render(text) == text, (
        f"{page.relative_to(ROOT)} differs from its benchmarks/results JSON: run `make tables` "
        "(`.venv/bin/python -m benchmarks.tables --check` shows the difference)"
    )


def test_every_table_is_published_and_every_marker_is_known():
    used = [name for page in PAGES for name in tables.tables_in(page.read_text(encoding="utf-8"))]
    assert set(used) == set(tables.TABLES), f"unused: {set(tables.TABLES) - set(used)}"
    with pytest.raises(KeyError, match="unknown table"):
        tables.render("<!-- table: no_such_bench -->\n<!-- /table -->")


def _copy(tmp_path: Path) -> Path:
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    shutil.copytree(ROOT / "benchmarks" / "results", tmp_path / "benchmarks" / "results")
    return tmp_path


def test_check_mode_fails_on_an_edited_figure_and_the_generator_restores_it(tmp_path, capsys):
    root = _copy(tmp_path)
    assert tables.main(["--check", "--root", str(root)]) == 0
    readme = root / "README.md"
    text = readme.read_text(encoding="utf-8")
    block = text.index("<!-- table: bench_stream -->")
    figure = text.index("| tiny | ", block)
    edited = text[:figure] + text[figure:].replace(" ms |", " ms (edited) |", 1)
    readme.write_text(edited, encoding="utf-8")

    assert tables.main(["--check", "--root", str(root)]) == 1
    assert "README.md" in capsys.readouterr().err
    assert readme.read_text(encoding="utf-8") == edited, "--check must not write"
    assert tables.main(["--root", str(root)]) == 0
    assert readme.read_text(encoding="utf-8") == text


def test_a_new_result_changes_the_page(tmp_path):
    root = _copy(tmp_path)
    source = root / "benchmarks" / "results" / "bench_stream.json"
    source.write_text(
        source.read_text(encoding="utf-8").replace(
            '"max_sustained_streams": 8', '"max_sustained_streams": 99'
        ),
        encoding="utf-8",
    )
    assert tables.main(["--check", "--root", str(root)]) == 1
    tables.main(["--root", str(root)])
    assert "| 99 |" in (root / "README.md").read_text(encoding="utf-8")
