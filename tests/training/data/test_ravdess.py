from collections import Counter

import pytest

from tests.training.data.trees import make_ravdess, ravdess_name
from training.data.corpus import ACTED_LABELS, CorpusError
from training.data.ravdess import load_ravdess, parse_name, scan_ravdess
from training.data.utterance import EMOTIONS


def test_name_fields():
    fields, problem = parse_name("03-01-05-02-02-01-13")
    assert problem == ""
    assert fields == {
        "label": "angry", "raw_label": "05", "intensity": "strong",
        "statement": "Dogs are sitting by the door", "repetition": 1, "actor": 13,
    }  # fmt: skip


def test_four_classes_by_default(ravdess_root):
    utts = load_ravdess(ravdess_root)
    # per actor: neutral 1 + happy, sad, angry 2 intensities each
    assert Counter(u.label for u in utts) == {"neutral": 24, "happy": 48, "sad": 48, "angry": 48}
    assert {u.label for u in utts} <= set(EMOTIONS)
    u = next(u for u in utts if u.id == "ravdess/03-01-04-02-01-01-07")
    assert u.label == "sad" and u.speaker == "Actor_07" and u.extra["gender"] == "male"
    assert u.transcript == "Kids are talking by the door"
    assert u.corpus == "ravdess" and u.session == "ravdess" and u.split == "train"
    assert u.extra["raw_label"] == "04" and u.extra["intensity"] == "strong"
    assert u.duration == pytest.approx(0.05)
    assert u.audio_path.endswith("Actor_07/03-01-04-02-01-01-07.wav")
    assert next(u for u in utts if u.speaker == "Actor_08").extra["gender"] == "female"


def test_other_labels_on_request(ravdess_root):
    utts = load_ravdess(ravdess_root, labels=("calm", "fearful", "disgust", "surprised"))
    assert Counter(u.label for u in utts) == {
        "calm": 48, "fearful": 48, "disgust": 48, "surprised": 48,
    }  # fmt: skip
    everything = load_ravdess(ravdess_root, labels=ACTED_LABELS)
    assert len(everything) == 24 * 15 and len({u.id for u in everything}) == len(everything)
    with pytest.raises(CorpusError, match="unknown label"):
        load_ravdess(ravdess_root, labels=("neutral", "joy"))


def test_split_by_actor(ravdess_root):
    split = {u.speaker: u.split for u in load_ravdess(ravdess_root)}
    assert [a for a, s in split.items() if s == "valid"] == [f"Actor_{n}" for n in range(17, 21)]
    assert [a for a, s in split.items() if s == "test"] == [f"Actor_{n}" for n in range(21, 25)]
    assert Counter(split.values())["train"] == 16


def test_flac_reads_like_wav(tmp_path):
    root = make_ravdess(tmp_path, actors=(3,), emotions=("01", "05"), fmt="flac")
    utts = load_ravdess(root)
    assert [u.label for u in utts] == ["neutral", "angry", "angry"]
    assert all(u.audio_path.endswith(".flac") for u in utts)


def test_malformed_names_are_problems(tmp_path):
    root = make_ravdess(tmp_path, actors=(1, 2), emotions=("03",))
    actor = tmp_path / "Actor_01"
    bad = {
        "03-01-03-01-01.wav": "seven two-digit fields",
        "01-01-03-01-01-01-01.wav": "modality 01 is not 03",
        "03-02-03-01-01-01-01.wav": "vocal channel 02 is not 01",
        "03-01-09-01-01-01-01.wav": "emotion 09",
        "03-01-01-02-01-01-01.wav": "neutral has no strong intensity",
        "03-01-03-03-01-01-01.wav": "intensity 03",
        "03-01-03-01-03-01-01.wav": "statement 03",
        "03-01-03-01-01-03-01.wav": "repetition 03",
        "03-01-03-01-01-01-02.wav": "not in its actor's folder Actor_02",
        "03-01-03-01-01-01-25.wav": "actor 25",
    }
    for name in bad:
        (actor / name).write_bytes((actor / "03-01-03-01-01-01-01.wav").read_bytes())
    (actor / "03-01-03-02-01-01-01.flac").write_bytes(b"not audio")  # also a duplicate
    (actor / "notes.txt").write_text("ignored: not audio")
    with pytest.raises(CorpusError) as info:
        load_ravdess(root)
    text = "\n".join(info.value.problems)
    for name, why in bad.items():
        assert f"{name}: " in text and why in text, name
    assert "unreadable audio" in text and "the same recording as" in text
    assert len(info.value.problems) == len(bad) + 2
    utts, problems = scan_ravdess(root)  # the scan keeps the good ones beside the problems
    assert len(utts) == 4 and len(problems) == len(bad) + 2


def test_missing_or_empty_tree(tmp_path):
    with pytest.raises(CorpusError, match="does not exist"):
        load_ravdess(tmp_path / "nope")
    with pytest.raises(CorpusError, match="no .wav or .flac files"):
        load_ravdess(tmp_path)


def test_name_helper_matches_parser():
    fields, problem = parse_name(ravdess_name("08", "02", "01", "02", 24))
    assert problem == "" and fields["label"] == "surprised" and fields["actor"] == 24
