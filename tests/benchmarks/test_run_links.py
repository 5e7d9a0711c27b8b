"""benchmarks/run_links.py: a new run's folds start as hard links to a finished run's."""

from __future__ import annotations

from benchmarks.run_links import link_folds


def test_links_share_the_files_skip_the_patterns_and_keep_what_is_there(tmp_path):
    base, new = tmp_path / "base", tmp_path / "new"
    targets = base / "folds" / "Ses01" / "targets"
    (targets / "transfer-480-s0").mkdir(parents=True)
    (targets / "ling.npz").write_bytes(b"ling")
    (targets / "transfer-480-s0" / "ling.npz").write_bytes(b"transfer")
    (base / "folds" / "Ses01" / "train.jsonl").write_text("base\n")
    (new / "folds" / "Ses01").mkdir(parents=True)
    (new / "folds" / "Ses01" / "train.jsonl").write_text("own\n")  # already there: kept

    link_folds(base, new, skip=("transfer-*",))

    linked = new / "folds" / "Ses01" / "targets" / "ling.npz"
    assert linked.stat().st_ino == (targets / "ling.npz").stat().st_ino
    assert not (new / "folds" / "Ses01" / "targets" / "transfer-480-s0").exists()
    assert (new / "folds" / "Ses01" / "train.jsonl").read_text() == "own\n"
    assert not (new / "folds" / "Ses01" / "teachers").exists()  # not in the base: nothing
