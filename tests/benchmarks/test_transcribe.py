"""benchmarks/transcribe.py: its WER normalisations, the engine it chooses, the Asterisk texts."""

import gzip

import soundfile as sf

from benchmarks import transcribe as bench


def test_wer_counts_words_after_each_normalisation():
    refs = ["Press 1, then two.", "All circuits are busy now."]
    hyps = ["press one then 2", "all circuits are busy"]
    wer = bench.wer(refs, hyps)
    # plain: "1" vs "one" and "two" vs "2" are two substitutions, "now" one deletion
    assert wer["words"] == 9 and wer["plain"] == round(3 / 9, 4)
    # Whisper's normaliser writes numbers as digits on both sides: the deletion is left
    assert wer["whisper"] == round(1 / 9, 4)
    assert bench.wer(["Hello there!"], ["hello there"]) == {
        "plain": 0.0,
        "words": 2,
        "whisper": 0.0,
    }


def test_the_fastest_engine_at_equal_wer_is_chosen():
    rows = [
        {"engine": "reference", "wer": {"plain": 0.10}, "seconds_per_audio_minute": 30},
        {"engine": "faster, same WER", "wer": {"plain": 0.105}, "seconds_per_audio_minute": 20},
        {"engine": "fastest, worse", "wer": {"plain": 0.13}, "seconds_per_audio_minute": 5},
        {"engine": "slower", "wer": {"plain": 0.08}, "seconds_per_audio_minute": 60},
    ]
    assert bench.choose(rows) == "faster, same WER"
    assert bench.choose(rows[:1]) == "reference"


def test_asterisk_prompts_come_with_their_listed_texts_but_no_tones_or_silence(tmp_path):
    root = tmp_path / "en"
    (root / "digits").mkdir(parents=True)
    (root / "silence").mkdir()
    for name in ("hello", "digits/1", "beep", "silence/1", "unlisted"):
        sf.write(root / f"{name}.wav", [0.1] * 800, 8000)
    texts = tmp_path / "core-sounds-en.txt.gz"
    with gzip.open(texts, "wt", encoding="utf-8") as handle:
        handle.write("; Core Asterisk Sounds in English\n\nhello: Hello there.\n")
        handle.write("digits/1: One.\nbeep: [this is a simple beep tone]\nsilence/1: [silence]\n")
        handle.write("missing: No file for this one.\n")
    utts = bench.asterisk_utterances(root, texts)
    assert [(u.id, u.transcript) for u in utts] == [
        ("asterisk/hello", "Hello there."),
        ("asterisk/digits/1", "One."),
    ]
    assert utts[0].duration == 0.1
    assert bench.asterisk_utterances(root, tmp_path / "none.txt.gz") == []
