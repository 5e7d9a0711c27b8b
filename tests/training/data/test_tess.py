from collections import Counter

import pytest

from tests.training.data.trees import make_tess
from training.data.corpus import ACTED_LABELS, CorpusError
from training.data.tess import load_tess, parse_name


def test_four_classes_by_default(tess_root):
    utts = load_tess(tess_root)
    assert Counter(u.label for u in utts) == {e: 6 for e in ("neutral", "happy", "angry", "sad")}
    assert Counter(u.speaker for u in utts) == {"OAF": 12, "YAF": 12}
    u = next(u for u in utts if u.id == "tess/YAF_chair_sad")
    assert u.transcript == "Say the word chair" and u.corpus == "tess" and u.split == "train"
    assert u.extra == {
        "raw_label": "sad", "gender": "female", "age_group": "younger", "word": "chair",
    }  # fmt: skip
    assert u.audio_path.endswith("YAF_sad/YAF_chair_sad.flac") and u.duration == pytest.approx(0.05)


def test_odd_release_names(tess_root):
    """OA_bite_neutral is OAF's; folder spellings differ in case and wording."""
    utts = {u.id: u for u in load_tess(tess_root, labels=ACTED_LABELS)}
    odd = utts["tess/OA_bite_neutral"]
    assert odd.speaker == "OAF" and odd.extra["age_group"] == "older" and odd.label == "neutral"
    assert utts["tess/OAF_back_ps"].label == "surprised"
    assert "OAF_Pleasant_surprise" in utts["tess/OAF_back_ps"].audio_path
    assert "YAF_pleasant_surprised" in utts["tess/YAF_back_ps"].audio_path
    assert utts["tess/OAF_chair_fear"].label == "fearful"
    assert len(utts) == 2 * 7 * 3


def test_other_labels_on_request(tess_root):
    utts = load_tess(tess_root, labels=("fearful", "surprised", "disgust", "calm"))
    assert Counter(u.label for u in utts) == {"fearful": 6, "surprised": 6, "disgust": 6}


def test_name_parsing():
    assert parse_name("OAF_back_ps")[0] == {
        "speaker": "OAF", "word": "back", "label": "surprised", "raw_label": "ps",
    }  # fmt: skip
    assert parse_name("yaf_Dog_Pleasant_Surprise")[0]["label"] == "surprised"
    assert "not a TESS name" in parse_name("OAF_back")[1]
    assert "speaker 'MAF'" in parse_name("MAF_back_sad")[1]
    assert "emotion 'bored'" in parse_name("OAF_back_bored")[1]
    assert "word 'b4ck'" in parse_name("OAF_b4ck_sad")[1]


def test_flat_download_is_read_by_names(tmp_path):
    root = make_tess(tmp_path / "tree", emotions=("sad", "happy"), words=("bar",))
    flat = tmp_path / "flat"
    flat.mkdir()
    for clip in root.rglob("*.wav"):
        clip.rename(flat / clip.name)
    assert sorted(u.id for u in load_tess(flat)) == [
        "tess/OAF_bar_happy", "tess/OAF_bar_sad", "tess/YAF_bar_happy", "tess/YAF_bar_sad",
    ]  # fmt: skip


def test_malformed_names_are_problems(tmp_path):
    root = make_tess(tmp_path, emotions=("sad", "angry"), words=("bar",))
    good = (root / "OAF_Sad" / "OAF_bar_sad.wav").read_bytes()
    bad = {
        "OAF_Sad/OAF_bar.wav": "not a TESS name",
        "OAF_Sad/XYZ_bar_sad.wav": "speaker 'XYZ'",
        "OAF_Sad/OAF_bar_gloomy.wav": "emotion 'gloomy'",
        "OAF_Sad/OAF_pen_angry.wav": "the name says OAF angry, its folder OAF sad",
        "YAF_sad/OAF_pen_sad.wav": "the name says OAF sad, its folder YAF sad",
        "OAF_bored/OAF_pen_sad.wav": "folder 'OAF_bored'",
        "OAF_Sad/OA_bar_sad.wav": "the same recording as",
    }
    for name in bad:
        (root / name).parent.mkdir(exist_ok=True)
        (root / name).write_bytes(good)
    (root / "OAF_angry" / "OAF_pen_angry.wav").write_bytes(b"junk")
    with pytest.raises(CorpusError) as info:
        load_tess(root)
    problems = info.value.problems
    text = "\n".join(problems)
    for name, why in bad.items():
        assert why in text, name
    assert "OAF_pen_angry.wav: unreadable audio" in text
    assert len(problems) == len(bad) + 1
