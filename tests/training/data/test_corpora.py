import json
from collections import Counter
from dataclasses import replace

import pytest

from training.data import DATASET_KINDS, load_dataset
from training.data.corpora import ENV_VAR, SCANS, find_corpora, load_corpora, main, parse_spec
from training.data.corpus import CorpusError
from training.data.splits import SplitError, check_speaker_independent, make_folds
from training.data.tess import scan_tess
from training.data.utterance import Utterance, read_jsonl, write_jsonl


@pytest.fixture
def corpora_dir(tmp_path, ravdess_root, tess_root):
    """A folder with ravdess/ and tess/ (links to the session trees)."""
    (tmp_path / "ravdess").symlink_to(ravdess_root, target_is_directory=True)
    (tmp_path / "tess").symlink_to(tess_root, target_is_directory=True)
    return tmp_path


def test_combined_corpora_keep_their_names(ravdess_root, tess_root):
    utts = load_corpora(f"ravdess={ravdess_root},tess={tess_root}")
    assert Counter(u.corpus for u in utts) == {"ravdess": 168, "tess": 24}
    assert len({u.id for u in utts}) == len(utts)
    assert utts[0].corpus == "ravdess" and utts[-1].corpus == "tess"  # spec order
    assert {u.label for u in utts} == {"neutral", "happy", "angry", "sad"}


def test_find_corpora_order(tmp_path, corpora_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert find_corpora() == {"ravdess": None, "tess": None}
    default = tmp_path / "data" / "corpora" / "tess"
    default.mkdir(parents=True)
    assert find_corpora(["tess"]) == {"tess": default.resolve()}
    monkeypatch.setenv(ENV_VAR, str(corpora_dir))
    assert find_corpora() == {
        "ravdess": (corpora_dir / "ravdess").resolve(),
        "tess": (corpora_dir / "tess").resolve(),
    }
    other = tmp_path / "other"
    (other / "ravdess").mkdir(parents=True)
    assert find_corpora(corpora_dir=other)["ravdess"] == (other / "ravdess").resolve()
    with pytest.raises(ValueError, match="unknown corpus"):
        find_corpora(["crema"])


def test_dataset_kinds(tmp_path, corpora_dir, ravdess_root, monkeypatch):
    assert {"ravdess", "tess", "corpora"} <= set(DATASET_KINDS)
    monkeypatch.setenv(ENV_VAR, str(corpora_dir))
    assert len(load_dataset("ravdess", "")) == 168
    assert len(load_dataset("ravdess", ravdess_root)) == 168
    assert len(load_dataset("tess", "", labels=("fearful",))) == 6
    assert len(load_dataset("corpora", "ravdess,tess")) == 192
    monkeypatch.delenv(ENV_VAR)
    assert len(load_dataset("corpora", "tess", corpora_dir=corpora_dir)) == 24


def test_problems_of_all_corpora_together(tmp_path, ravdess_root, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(ENV_VAR, raising=False)
    with pytest.raises(CorpusError) as info:
        load_corpora(["ravdess=" + str(ravdess_root), "tess", f"ravdess={ravdess_root}"])
    text = "\n".join(info.value.problems)
    assert "tess: not found" in text and "python -m training.data.fetch tess" in text
    assert "id 'ravdess/03-01-01-01-01-01-01' is given 2 times" in text
    with pytest.raises(ValueError, match="unknown corpus"):
        parse_spec("ravdess,savee")


def test_a_speaker_in_two_corpora_is_a_problem(tess_root, monkeypatch):
    def other_scan(root, labels):
        utts, _ = scan_tess(root, labels)
        return [replace(u, id="other/" + u.id, corpus="other") for u in utts], []

    monkeypatch.setitem(SCANS, "other", other_scan)
    with pytest.raises(CorpusError) as info:
        load_corpora(f"tess={tess_root},other={tess_root}")
    assert sorted(info.value.problems) == [
        "speaker 'OAF' is in several corpora ['other', 'tess']",
        "speaker 'YAF' is in several corpora ['other', 'tess']",
    ]


def test_corpus_protocol(ravdess_root, tess_root):
    utts = load_corpora(f"ravdess={ravdess_root},tess={tess_root}")
    (fold,) = make_folds(utts, "corpus")
    check_speaker_independent(fold)
    assert fold.name == "corpus"
    assert fold.speakers("valid") == {f"Actor_{n}" for n in range(17, 21)}
    assert fold.speakers("test") == {f"Actor_{n}" for n in range(21, 25)}
    assert fold.speakers("train") == {f"Actor_{n:02d}" for n in range(1, 17)} | {"OAF", "YAF"}
    with pytest.raises(SplitError, match=r"corpora's own protocol.*\['valid', 'test'\] empty"):
        make_folds(load_corpora(f"tess={tess_root}"), "corpus")


def test_tess_alone_leave_one_speaker_out(tess_root):
    folds = make_folds(load_corpora(f"tess={tess_root}"), "lospk", valid_speakers=0)
    assert [(f.name, f.speakers("train"), f.speakers("test")) for f in folds] == [
        ("OAF", {"YAF"}, {"OAF"}),
        ("YAF", {"OAF"}, {"YAF"}),
    ]
    assert all(not f.valid for f in folds)


def test_leave_one_corpus_out(ravdess_root, tess_root):
    """session is the corpus: loso over two corpora tests each on the other."""
    utts = load_corpora(f"ravdess={ravdess_root},tess={tess_root}")
    folds = make_folds(utts, "loso", valid_speakers=1)
    assert [f.name for f in folds] == ["ravdess", "tess"]
    assert {u.corpus for u in folds[0].test} == {"ravdess"}
    assert {u.corpus for u in folds[0].train + folds[0].valid} == {"tess"}
    for fold in make_folds(load_corpora(f"ravdess={ravdess_root}"), "lospk"):
        check_speaker_independent(fold)


def test_jsonl_round_trip_keeps_the_corpus(tmp_path, tess_root):
    utts = load_corpora(f"tess={tess_root}")
    write_jsonl(utts, tmp_path / "part.jsonl")
    back = read_jsonl(tmp_path / "part.jsonl")
    assert back == utts and [u.extra for u in back] == [u.extra for u in utts]
    assert back[0].corpus == "tess"
    old = {"id": "a", "audio_path": "/a.wav", "label": "sad", "speaker": "s1"}  # before corpus
    (tmp_path / "old.jsonl").write_text(json.dumps(old) + "\n")
    assert read_jsonl(tmp_path / "old.jsonl") == [Utterance("a", "/a.wav", "sad", speaker="s1")]
    assert read_jsonl(tmp_path / "old.jsonl")[0].corpus == ""


def test_summary_command(corpora_dir, capsys):
    assert main(["ravdess", "tess", "--corpora", str(corpora_dir)]) == 0
    out = capsys.readouterr().out
    counts = json.loads(out[out.index("{") :])
    assert counts["tess"]["speakers"] == {"OAF": 12, "YAF": 12}
    assert counts["ravdess"]["splits"] == {"test": 28, "train": 112, "valid": 28}
    assert main(["tess=/nonexistent/tess"]) == 1
    assert "problem: tess: " in capsys.readouterr().out


def test_other_adapters_name_their_corpus(tmp_path, tess_root):
    """IEMOCAP utterances say so; a manifest may carry a corpus column (e.g. a combined set
    written out as a manifest)."""
    from training.data.fake_iemocap import make_fake_iemocap
    from training.data.manifest import load_manifest

    root = make_fake_iemocap(tmp_path / "iemocap", per_class=1, sessions=1)
    assert {u.corpus for u in load_dataset("iemocap", root)} == {"iemocap"}
    clip = next(tess_root.rglob("*.flac"))
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"path,label,id,corpus\n{clip},sad,a,tess\n{clip},happy,b,\n")
    assert [u.corpus for u in load_manifest(manifest)] == ["tess", ""]
