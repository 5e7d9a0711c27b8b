from collections import Counter

import pytest

from training.data import load_dataset
from training.data.fake_iemocap import make_fake_iemocap
from training.data.iemocap import IemocapError, load_iemocap, speaker_of
from training.data.splits import make_folds
from training.data.utterance import EMOTIONS

PER_CLASS = 2  # the conftest fixture's size


def test_speaker_from_last_id_part():
    assert speaker_of("Ses01F_impro01_M012") == "Ses01M"
    assert speaker_of("Ses03M_script02_1_F007") == "Ses03F"


def test_counts_labels_speakers(fake_iemocap):
    utts = load_dataset("iemocap", fake_iemocap)
    assert len(utts) == 5 * 2 * 4 * PER_CLASS  # dropped labels (fru, xxx) are gone
    assert Counter(u.label for u in utts) == {e: 5 * 2 * PER_CLASS for e in EMOTIONS}
    assert {u.extra["raw_label"] for u in utts if u.label == "happy"} == {"hap", "exc"}
    speakers = Counter(u.speaker for u in utts)
    assert sorted(speakers) == sorted(f"Ses0{s}{g}" for s in range(1, 6) for g in "FM")
    assert set(speakers.values()) == {4 * PER_CLASS}
    for u in utts:
        assert u.session == u.id[:5] and u.speaker == u.session + u.id.rsplit("_", 1)[1][0]
        assert u.duration == pytest.approx(0.3)
        assert u.transcript == f"I feel {u.label} today."
        assert u.audio_path.endswith(f"sentences/wav/{u.extra['dialog']}/{u.id}.wav")
    # the fake tree puts M turns into F-led dialogs: speaker must follow the turn, not the dialog
    assert any(u.id.startswith("Ses01F") and u.speaker == "Ses01M" for u in utts)


@pytest.mark.parametrize(("protocol", "n_folds"), [("loso", 5), ("lospk", 10)])
def test_protocol_folds_are_speaker_independent(fake_iemocap, protocol, n_folds):
    utts = load_iemocap(fake_iemocap)
    folds = make_folds(utts, protocol, valid_speakers=2)
    assert len(folds) == n_folds
    for fold in folds:
        train, valid, test = (fold.speakers(p) for p in ("train", "valid", "test"))
        assert not (train & valid) and not (train & test) and not (valid & test)
        assert len(valid) == 2 and len(fold.train) + len(fold.valid) + len(fold.test) == len(utts)


def test_missing_wav_is_an_error(tmp_path):
    root = make_fake_iemocap(tmp_path, per_class=1, sessions=1)
    victim = next((root / "Session1" / "sentences" / "wav").rglob("*F000.wav"))
    victim.unlink()
    with pytest.raises(IemocapError, match="F000.wav"):
        load_iemocap(root)
    with pytest.raises(IemocapError, match="no Session"):
        load_iemocap(tmp_path / "empty")


def test_dimensions_from_the_vad_ratings(fake_iemocap):
    """[V, A, D] in the file -> (arousal, valence, dominance); the generated ratings are the
    mean of two raters' integer scores and follow the label (angry: high arousal, low valence)."""
    utts = load_iemocap(fake_iemocap)
    assert all(u.dimensions is not None for u in utts)
    values = {u.id: u.dimensions for u in utts}
    eval_file = next((fake_iemocap / "Session1" / "dialog" / "EmoEvaluation").glob("*.txt"))
    line = next(x for x in eval_file.read_text().splitlines() if x.startswith("[") and "\tneu" in x)
    v, a, d = (float(x) for x in line.split("\t")[3].strip("[]").split(","))
    assert values[line.split("\t")[1]] == (a, v, d)
    for u in utts:
        assert all(1 <= x <= 5 and (2 * x).is_integer() for x in u.dimensions)
    mean = {
        e: [sum(u.dimensions[k] for u in utts if u.label == e) for k in range(3)] for e in EMOTIONS
    }
    assert mean["angry"][0] > mean["sad"][0] and mean["angry"][1] < mean["happy"][1]


def test_bad_vad_ratings_are_problems(tmp_path):
    root = make_fake_iemocap(tmp_path, per_class=1, sessions=1)
    for eval_file in sorted((root / "Session1" / "dialog" / "EmoEvaluation").glob("*.txt")):
        lines = eval_file.read_text().splitlines()
        turns = [i for i, x in enumerate(lines) if x.startswith("[") and "\tang\t" in x]
        if turns:
            lines[turns[0]] = lines[turns[0]].rsplit("\t", 1)[0] + "\t[2.5, high]"
            eval_file.write_text("\n".join(lines) + "\n")
            break
    with pytest.raises(IemocapError, match=r"not three values \[V, A, D\]"):
        load_iemocap(root)
