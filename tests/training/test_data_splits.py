import pytest

from training.data.splits import Fold, SplitError, check_speaker_independent, make_folds
from training.data.utterance import EMOTIONS, Utterance


def _corpus(sessions=5, per_speaker=4):
    utts = []
    for s in range(1, sessions + 1):
        for gender in "FM":
            for k in range(per_speaker):
                utts.append(
                    Utterance(
                        id=f"Ses{s:02d}{gender}_{k}",
                        audio_path="x.wav",
                        label=EMOTIONS[k % 4],
                        speaker=f"Ses{s:02d}{gender}",
                        session=f"Ses{s:02d}",
                    )
                )
    return utts


def _assert_partition(fold: Fold, utts):
    parts = [fold.train, fold.valid, fold.test]
    assert all(parts), f"fold {fold.name} has an empty part"
    assert sorted(u.id for p in parts for u in p) == sorted(u.id for u in utts)
    a, b, c = (fold.speakers(p) for p in ("train", "valid", "test"))
    assert not (a & b) and not (a & c) and not (b & c)


def test_loso_five_folds_validation_from_training_sessions():
    utts = _corpus()
    folds = make_folds(utts, "loso", valid_speakers=2, seed=3)
    assert [f.name for f in folds] == [f"Ses0{i}" for i in range(1, 6)]
    for fold in folds:
        _assert_partition(fold, utts)
        assert {u.session for u in fold.test} == {fold.name}
        assert fold.speakers("test") == {fold.name + "F", fold.name + "M"}
        assert len(fold.speakers("valid")) == 2
        assert fold.name not in {u.session for u in fold.valid}


def test_lospk_ten_folds():
    utts = _corpus()
    folds = make_folds(utts, "lospk", valid_speakers=2)
    assert len(folds) == 10
    assert sorted(f.name for f in folds) == sorted({u.speaker for u in utts})
    for fold in folds:
        _assert_partition(fold, utts)
        assert fold.speakers("test") == {fold.name}


def test_speakers_protocol_given_and_seeded():
    utts = _corpus(sessions=4)
    fold = make_folds(utts, "speakers", test_speakers=["Ses01F", "Ses02M"], valid_speakers=2)[0]
    _assert_partition(fold, utts)
    assert fold.speakers("test") == {"Ses01F", "Ses02M"}
    seeded = [make_folds(utts, "speakers", seed=s)[0] for s in range(6)]
    assert make_folds(utts, "speakers", seed=0)[0].speakers("test") == seeded[0].speakers("test")
    assert len({frozenset(f.speakers("test")) for f in seeded}) > 1
    with pytest.raises(SplitError, match="not in the data"):
        make_folds(utts, "speakers", test_speakers=["nobody"])


def test_manifest_protocol_and_errors():
    utts = [
        Utterance(id=str(i), audio_path="x", label="sad", speaker=f"s{i}", split=split)
        for i, split in enumerate(["train", "train", "valid", "test"])
    ]
    fold = make_folds(utts, "manifest")[0]
    assert [len(fold.train), len(fold.valid), len(fold.test)] == [2, 1, 1]
    with pytest.raises(SplitError, match="empty"):
        make_folds(utts[:2], "manifest")
    leaky = utts[:3] + [Utterance(id="4", audio_path="x", label="sad", speaker="s0", split="test")]
    with pytest.raises(SplitError, match="s0"):
        make_folds(leaky, "manifest")


def test_check_speaker_independent_catches_leaks():
    u = Utterance(id="a", audio_path="x", label="sad", speaker="spk")
    with pytest.raises(SplitError, match="spk"):
        check_speaker_independent(Fold("bad", [u], [], [u]))


def test_bad_requests():
    utts = _corpus(sessions=2)
    with pytest.raises(SplitError, match="unknown protocol"):
        make_folds(utts, "random")
    with pytest.raises(SplitError, match="cannot hold out"):
        make_folds(utts, "loso", valid_speakers=2)  # only 2 training speakers left
    with pytest.raises(SplitError, match="no speaker"):
        make_folds([Utterance(id="a", audio_path="x", label="sad")], "lospk")
