"""The transcript cache (training/asr/cache.py): by audio content, model and language."""

from training.asr.cache import TranscriptCache


def test_texts_come_back_for_their_model_and_language_only(tmp_path):
    tiny = TranscriptCache(tmp_path, "whisper-tiny.en", "en")
    tiny.add({"aa": "hello there", "bb": ""})
    tiny.add({"cc": "héllo, again"})
    assert TranscriptCache(tmp_path, "whisper-tiny.en", "en").load() == {
        "aa": "hello there",
        "bb": "",
        "cc": "héllo, again",
    }
    assert TranscriptCache(tmp_path, "whisper-base", "en").load() == {}
    assert TranscriptCache(tmp_path, "whisper-tiny.en", "auto").load() == {}
    # A model named by a path gets a file of its own, safely named.
    local = TranscriptCache(tmp_path, "/models/my whisper", "en")
    local.add({"aa": "other"})
    assert local.path.parent == tmp_path and " " not in local.path.name
    assert local.load() == {"aa": "other"} and tiny.load()["aa"] == "hello there"


def test_a_line_cut_by_a_kill_is_skipped_and_later_lines_still_read(tmp_path):
    cache = TranscriptCache(tmp_path, "whisper-tiny.en", "en")
    cache.add({"aa": "first"})
    with open(cache.path, "a", encoding="utf-8") as handle:
        handle.write('{"audio_sha256": "bb", "model": "whisper-tiny.en", "lang')  # killed here
    cache.add({"cc": "after the kill"})
    assert cache.load() == {"aa": "first", "cc": "after the kill"}
