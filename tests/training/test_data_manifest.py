import json

import pytest

from tests.fixtures import write_clip
from training.data import load_dataset
from training.data.manifest import ManifestError, load_manifest


@pytest.fixture
def clips(tmp_path):
    (tmp_path / "audio").mkdir()
    return [write_clip(tmp_path / "audio" / f"c{i}.wav", seconds=0.5 + i * 0.25) for i in range(3)]


def test_csv_relative_paths_and_columns(tmp_path, clips):
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "path,label,text,speaker,session,split\n"
        "audio/c0.wav,happy,so glad,spk1,s1,train\n"
        "audio/c1.wav,sad,,spk2,s1,test\n"
        f"{clips[2]},angry,absolute path,spk3,s2,valid\n"
    )
    utts = load_manifest(manifest)
    assert [u.label for u in utts] == ["happy", "sad", "angry"]
    assert [u.split for u in utts] == ["train", "test", "valid"]
    assert utts[0].transcript == "so glad" and utts[1].transcript == ""
    assert utts[0].speaker == "spk1" and utts[2].session == "s2"
    assert [u.duration for u in utts] == pytest.approx([0.5, 0.75, 1.0])
    assert utts[0].audio_path == str(clips[0].resolve())
    assert utts[0].id == "audio/c0"


def test_jsonl_via_load_dataset(tmp_path, clips):
    manifest = tmp_path / "m.jsonl"
    rows = [{"path": f"audio/c{i}.wav", "label": "neutral", "speaker": f"s{i}"} for i in range(3)]
    manifest.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    utts = load_dataset("manifest", manifest)
    assert [u.speaker for u in utts] == ["s0", "s1", "s2"]


def test_all_problems_reported_at_once(tmp_path, clips):
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "path,label\n"
        "audio/c0.wav,happy\n"
        "audio/missing1.wav,sad\n"
        "audio/c1.wav,joy\n"
        "audio/missing2.wav,bored\n"
        "audio/c2.wav,frustrated\n"
    )
    with pytest.raises(ManifestError) as info:
        load_manifest(manifest)
    problems = info.value.problems
    assert len(problems) == 5  # 2 missing files + 3 unknown labels, none skipped
    text = str(info.value)
    for needle in ("missing1.wav", "missing2.wav", "'joy'", "'bored'", "'frustrated'"):
        assert needle in text


def test_missing_column_and_bad_split(tmp_path, clips):
    no_label = tmp_path / "a.csv"
    no_label.write_text("path,text\naudio/c0.wav,hi\n")
    with pytest.raises(ManifestError, match="missing column"):
        load_manifest(no_label)
    bad_split = tmp_path / "b.csv"
    bad_split.write_text("path,label,split\naudio/c0.wav,sad,dev\n")
    with pytest.raises(ManifestError, match="unknown split 'dev'"):
        load_manifest(bad_split)
    with pytest.raises(ManifestError, match="does not exist"):
        load_manifest(tmp_path / "nope.csv")


def test_undecodable_audio_reported(tmp_path):
    (tmp_path / "bad.wav").write_bytes(b"not audio at all")
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\nbad.wav,sad\n")
    with pytest.raises(ManifestError, match="unreadable audio"):
        load_manifest(manifest)


def test_dimension_columns_all_or_none_and_on_the_scale(tmp_path, clips):
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "path,label,arousal,valence,dominance\n"
        "audio/c0.wav,happy,3.5,4.25,3\n"
        "audio/c1.wav,sad,,,\n"
        "audio/c2.wav,angry,4,1.5,5\n"
    )
    utts = load_manifest(manifest)
    assert [u.dimensions for u in utts] == [(3.5, 4.25, 3.0), None, (4.0, 1.5, 5.0)]
    assert utts[0].to_json() and type(utts[0].from_json(utts[0].to_json()).dimensions) is tuple


def test_bad_dimensions_are_listed_with_the_other_problems(tmp_path, clips):
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "path,label,arousal,valence,dominance\n"
        "audio/c0.wav,happy,3.5,,3\n"
        "audio/c1.wav,sad,high,2,2\n"
        "audio/c2.wav,angry,4,0.5,5.5\n"
        "audio/missing.wav,joy,nan,1,1\n"
    )
    with pytest.raises(ManifestError) as info:
        load_manifest(manifest)
    text = "\n".join(info.value.problems)
    assert "row 1" in text and "missing ['valence']" in text
    assert "arousal 'high' is not a number" in text
    assert "valence 0.5 is outside 1-5" in text and "dominance 5.5 is outside 1-5" in text
    assert "'joy'" in text and "missing.wav" in text
