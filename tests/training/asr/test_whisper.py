"""Whisper for transcripts (training/asr/whisper.py): 30 s windows, both engines on the offline
tiny.en bundle, and each model form converted once for the other engine."""

from __future__ import annotations

import os

import numpy as np
import pytest

from emocore.audio import SAMPLE_RATE, load_audio
from tests.fixtures import ASTERISK_PACKAGE, real_speech_files
from tests.training.weights.installed import locate
from training.asr import whisper
from training.asr.whisper import WINDOW_SAMPLES, Whisper, load_whisper, windows
from training.weights.convert import MARKER

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Two Asterisk prompts (real speech, 8 kHz telephone audio) and what they say
# (core-sounds-en.txt of the asterisk-core-sounds-en package).
PROMPTS = {
    "all-circuits-busy-now": "All circuits are busy now.",
    "check-number-dial-again": "Please check the number and dial again.",
}


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    """Conversions go to a folder of the test session's own, never the user's cache."""
    monkeypatch.setenv("EMODISTILL_CACHE", str(tmp_path_factory.getbasetemp() / "emodistill"))


@pytest.fixture(scope="module")
def clips() -> list[np.ndarray]:
    """The two prompts; the second follows 31 s of silence (two windows, joined)."""
    files = {path.stem: path for path in real_speech_files(ASTERISK_PACKAGE)}
    first, second = (load_audio(files[name]) for name in PROMPTS)
    silence = np.zeros(31 * SAMPLE_RATE, dtype=np.float32)
    return [first, np.concatenate([silence, second])]


def _words(text: str) -> list[str]:
    return "".join(c for c in text.lower() if c.isalnum() or c.isspace()).split()


def test_windows_are_30_s_and_cover_the_clip():
    assert [len(w) for w in windows(np.zeros(65 * SAMPLE_RATE))] == [
        WINDOW_SAMPLES,
        WINDOW_SAMPLES,
        5 * SAMPLE_RATE,
    ]
    assert [len(w) for w in windows(np.zeros(WINDOW_SAMPLES))] == [WINDOW_SAMPLES]
    assert [len(w) for w in windows(np.zeros(0))] == [0]  # one (empty) window: one text


class Lengths(Whisper):
    """Decodes a window to its length in seconds: shows which windows a text came from."""

    def decode(self, pieces):
        assert all(len(p) for p in pieces)
        return [f" {len(p) // SAMPLE_RATE}s " if np.max(p) < 0.5 else "  " for p in pieces]


def _tone(seconds: float, level: float = 0.1) -> np.ndarray:
    return np.full(int(seconds * SAMPLE_RATE), level, dtype=np.float32)


def test_a_long_clip_is_the_windows_texts_joined_in_order_without_silence():
    fake = Lengths("fake", "cpu", "en")
    clips = [_tone(61), np.zeros(0), _tone(2), _tone(1, level=0.9)]
    assert fake.transcribe(clips) == ["30s 30s 1s", "", "2s", ""]
    # Silent windows (here the middle one, at -90 dBFS) are not decoded.
    quiet = np.concatenate([_tone(30), _tone(30, level=3e-5), _tone(3)])
    assert fake.transcribe([quiet, np.zeros(SAMPLE_RATE)]) == ["30s 3s", ""]
    assert fake.transcribe([]) == []


def test_both_engines_transcribe_the_bundle_alike(clips):
    """CTranslate2 reads the bundle as it is, transformers its converted checkpoint; greedy and
    in float32, they emit the same text, and it is what the prompt says; CTranslate2's default
    on a CPU, int8 weights, hears the same words."""
    locate("whisper-tiny.en")
    texts = {}
    for engine, compute_type in (("ctranslate2", "float32"), ("transformers", "auto")):
        model = load_whisper("whisper-tiny.en", engine, threads=1, compute_type=compute_type)
        assert model.engine == engine
        texts[engine] = model.transcribe(clips)
    assert texts["ctranslate2"] == texts["transformers"]
    for text, said in zip(texts["ctranslate2"], PROMPTS.values(), strict=True):
        assert _words(text) == _words(said), (text, said)
    # The stage's default: CTranslate2 (installed with the train extra), int8 on a CPU.
    assert whisper.engine_for("auto") == "ctranslate2"
    default = load_whisper("whisper-tiny.en", threads=1)
    assert default.describe() == "whisper-tiny.en (ctranslate2 int8, cpu)"
    assert [_words(t) for t in default.transcribe(clips)] == [
        _words(t) for t in texts["ctranslate2"]
    ]


def test_a_ctranslate2_folder_is_converted_once_for_transformers(tmp_path):
    bundle_dir, parts = locate("whisper-tiny.en")
    folder = tmp_path / "my-whisper"
    folder.mkdir()
    for name in ("config.json", "vocabulary.txt", "tokenizer.json", "model.bin"):
        (folder / name).symlink_to(bundle_dir / name)
    assert whisper.is_ct2_folder(str(folder)) and not whisper.is_ct2_folder(str(tmp_path))
    assert whisper.ct2_model_dir(str(folder)) == folder  # read as it is
    checkpoint = whisper.hf_checkpoint(str(folder))
    marker = os.stat(os.path.join(checkpoint, MARKER)).st_mtime_ns
    assert whisper.hf_checkpoint(str(folder)) == checkpoint  # once
    assert os.stat(os.path.join(checkpoint, MARKER)).st_mtime_ns == marker
    assert whisper.hf_checkpoint("openai/whisper-small") == "openai/whisper-small"  # the hub's


@pytest.mark.slow  # ~15-30 s on 2 cores: CTranslate2's converter loads the checkpoint
def test_a_transformers_checkpoint_is_converted_once_for_ctranslate2(clips):
    checkpoint = whisper.hf_checkpoint("whisper-tiny.en")
    folder = whisper.ct2_model_dir(checkpoint)
    assert (folder / "model.bin").is_file() and (folder / "tokenizer.json").is_file()
    assert whisper.ct2_model_dir(checkpoint) == folder
    converted = load_whisper(checkpoint, "ctranslate2", threads=1).transcribe(clips[:1])
    bundled = load_whisper("whisper-tiny.en", "ctranslate2", threads=1).transcribe(clips[:1])
    assert converted == bundled


@pytest.mark.slow  # joins the base bundle's 145 MB model.bin once, then transcribes
def test_the_base_bundle_parts_are_joined_once_for_ctranslate2(clips):
    locate("whisper-base")
    folder = whisper.ct2_model_dir("whisper-base")
    assert (folder / whisper.READY).is_file()
    assert whisper.ct2_model_dir("whisper-base") == folder
    (text,) = load_whisper("whisper-base", "ctranslate2", threads=1).transcribe(clips[:1])
    assert _words(text) == _words(next(iter(PROMPTS.values()))), text
