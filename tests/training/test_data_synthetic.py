import hashlib
import json
from collections import Counter

import numpy as np
import pytest
import soundfile as sf

from emocore.audio import SAMPLE_RATE, load_audio
from training.data import load_dataset
from training.data.synthetic import (
    METADATA_NAME,
    SUMMARY_NAME,
    SyntheticConfig,
    generate,
    main,
    plan_corpus,
)
from training.data.utterance import EMOTIONS
from training.features.prosody import extract_lld, feature_names


def _hashes(folder):
    files = [folder / "manifest.csv"] + sorted((folder / "wavs").rglob("*.wav"))
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files
    }


def test_corpus_layout_balance_and_manifest(synthetic_corpus):
    utts = load_dataset("synthetic", synthetic_corpus)
    n = len(utts)
    assert Counter(u.label for u in utts) == {e: n // 4 for e in EMOTIONS}
    assert len({u.speaker for u in utts}) == 8
    assert all(u.transcript and u.duration > 0.5 for u in utts)
    info = sf.info(utts[0].audio_path)
    assert (info.samplerate, info.channels) == (SAMPLE_RATE, 1)
    summary = json.loads((synthetic_corpus / SUMMARY_NAME).read_text())
    assert summary["per_class"] == dict(Counter(u.label for u in utts))
    assert summary["per_speaker"] == dict(Counter(u.speaker for u in utts))
    meta = [
        json.loads(line) for line in (synthetic_corpus / METADATA_NAME).read_text().splitlines()
    ]
    assert [m["id"] for m in meta] == [u.id for u in utts]
    assert all(m["words_carry"] == (m["words_emotion"] == m["label"]) for m in meta)


def test_deterministic_per_seed(tmp_path):
    a, b, c = (tmp_path / x for x in "abc")
    for folder, seed in ((a, 1), (b, 1), (c, 2)):
        generate(SyntheticConfig(n=8, seed=seed), folder, progress=False)
    assert _hashes(a) == _hashes(b)
    ha, hc = _hashes(a), _hashes(c)
    assert ha["manifest.csv"] != hc["manifest.csv"]
    assert set(ha.values()).isdisjoint(hc.values())


def test_modality_fractions_follow_config():
    n = 2000
    plans = plan_corpus(SyntheticConfig(n=n, p_words=0.6, p_prosody=0.7))
    non_neutral = [p for p in plans if p.label != "neutral"]
    words = np.mean([p.words_carry for p in non_neutral])
    prosody = np.mean([p.prosody_carries for p in plans])
    # binomial standard errors are ~0.012 and ~0.010: allow 4 of them
    assert abs(words - 0.6) < 0.05 and abs(prosody - 0.7) < 0.04
    only_words = np.mean([p.words_carry and not p.prosody_carries for p in non_neutral])
    assert only_words > 0.1  # some utterances carry the label in the words only
    always = plan_corpus(SyntheticConfig(n=40, p_words=1.0, p_prosody=1.0))
    assert all(p.words_carry and p.prosody_carries for p in always)


def test_invalid_config():
    with pytest.raises(ValueError, match="multiple of 4"):
        SyntheticConfig(n=10)
    with pytest.raises(ValueError, match="probability"):
        SyntheticConfig(p_words=1.5)


def test_prosody_differs_per_class(tmp_path):
    """Mean F0 of utterances spoken with happy prosody is above that of sad prosody, and
    angry is louder than sad, for the same voices."""
    generate(SyntheticConfig(n=32, seed=5, p_prosody=1.0), tmp_path, progress=False)
    names = feature_names()
    f0, loud = names.index("F0semitoneFrom27.5Hz_sma3nz"), names.index("Loudness_sma3")
    by_class: dict[str, list[tuple[float, float]]] = {e: [] for e in EMOTIONS}
    for u in load_dataset("synthetic", tmp_path):
        feats = extract_lld(load_audio(u.audio_path))
        voiced = feats[feats[:, f0] > 0, f0]
        by_class[u.label].append((voiced.mean(), feats[:, loud].mean()))
    mean = {e: np.mean(v, axis=0) for e, v in by_class.items()}
    assert mean["happy"][0] > mean["neutral"][0] > mean["sad"][0]
    assert mean["angry"][1] > mean["neutral"][1] > mean["sad"][1]


def test_cli_prints_summary(tmp_path, capsys):
    main(["--out", str(tmp_path / "c"), "--n", "8", "--seed", "3", "--quiet"])
    out = capsys.readouterr().out
    assert "8 utterances" in out and "per speaker" in out
    assert len(load_dataset("manifest", tmp_path / "c" / "manifest.csv")) == 8


def test_400_utterance_corpus_loads(tmp_path):
    summary = generate(SyntheticConfig(n=400, seed=0), tmp_path, progress=False)
    utts = load_dataset("manifest", tmp_path / "manifest.csv")
    assert len(utts) == summary["n"] == 400
    assert summary["per_class"] == {e: 100 for e in sorted(EMOTIONS)}


def test_dimensions_follow_emotion_and_prosody():
    """Arousal rises with the spoken pitch, rate and volume; valence follows the emotions;
    the noise is documented (0.3) and the values stay on the 1-5 scale."""
    from training.data.synthetic import DIMENSION_NOISE_SD

    plans = plan_corpus(SyntheticConfig(n=800))
    dims = np.array([p.dimensions for p in plans])
    assert dims.min() >= 1 and dims.max() <= 5 and DIMENSION_NOISE_SD == 0.3
    labels = np.array([p.label for p in plans])
    mean = {e: dims[labels == e].mean(0) for e in EMOTIONS}
    assert mean["angry"][0] > mean["neutral"][0] > mean["sad"][0]  # arousal
    assert mean["happy"][1] > mean["neutral"][1] > mean["angry"][1]  # valence
    assert mean["angry"][2] > mean["sad"][2]  # dominance
    # Within one label, louder and faster speech is rated more aroused.
    sad = [p for p in plans if p.label == "sad"]
    loud = np.array([p.prosody.volume + p.prosody.rate for p in sad])
    assert np.corrcoef(loud, [p.dimensions[0] for p in sad])[0, 1] > 0.3


def test_dimensions_leave_the_rest_of_the_corpus_unchanged():
    """The noise has its own random stream: the first plan of seed 3 is what the generator
    planned before the dimensions existed (text, pause, prosody; the audio follows from them)."""
    first = plan_corpus(SyntheticConfig(n=16, seed=3))[0]
    assert first.text == "Honestly, I feel informed about the letter."
    assert first.ssml == 'Honestly,<break time="215ms"/> I feel informed about the letter.'
    assert (first.words_emotion, first.prosody_emotion, first.pause_ms) == (
        "neutral",
        "neutral",
        215,
    )
    p = first.prosody
    assert (p.pitch, p.range, p.rate, p.volume) == (49, 42, 161, 102)
    assert first.dimensions is not None


def test_manifest_has_dimensions_and_old_corpora_get_them(synthetic_corpus, tmp_path):
    import csv
    import shutil

    from training.data.synthetic import MANIFEST_NAME, add_dimensions, has_dimensions

    utts = load_dataset("synthetic", synthetic_corpus)
    assert all(u.dimensions is not None for u in utts)
    # An older corpus: the same manifest without the three columns.
    old = tmp_path / "old"
    old.mkdir()
    with (synthetic_corpus / MANIFEST_NAME).open() as handle:
        rows = list(csv.DictReader(handle))
    keep = ["path", "label", "text", "speaker", "session", "id"]
    with (old / MANIFEST_NAME).open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keep, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    assert not has_dimensions(old)
    summary = json.loads((synthetic_corpus / SUMMARY_NAME).read_text())
    config = SyntheticConfig(n=summary["n"], seed=summary["seed"],
                             voices=tuple(summary["config"]["voices"]))  # fmt: skip
    add_dimensions(config, old)
    assert has_dimensions(old)
    shutil.copytree(synthetic_corpus / "wavs", old / "wavs")
    again = load_dataset("synthetic", old)
    assert [u.dimensions for u in again] == [u.dimensions for u in utts]
