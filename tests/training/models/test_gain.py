"""Gain invariance: every backbone family gives the same clip at any gain the same answer."""

import numpy as np
import pytest
import torch

from training.data.utterance import EMOTIONS
from training.models.student import Student, build_classifier

# Logits and embedding at x0.1 and x10 vs x1. The normalisations' variance floor (1e-7) makes
# the quiet copy differ by ~1e-5 at most here; without normalisation the tiny random Whisper
# and log-mel students' embeddings move by 9e-3 and 0.37 at x0.1.
GAIN_TOLERANCE = 1e-3
GAINS = (0.1, 10.0)
FAMILIES = ["tiny", "tiny-layer", "tiny-mel", "tiny-whisper"]


def student_for(name: str) -> Student:
    torch.manual_seed(0)
    return Student(build_classifier(name, EMOTIONS, use_weighted_layer_sum=True)).eval()


def speech_like(samples: int, seed: int) -> torch.Tensor:
    """A syllable-rate modulated glide over noise, RMS about -20 dBFS, with a DC offset."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / 16_000
    glide = np.sin(2 * np.pi * (110 + 60 * rng.random()) * t * (1 + 0.3 * t))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)
    audio = 0.12 * envelope * glide + 0.02 * rng.standard_normal(samples) + 0.01
    return torch.from_numpy(audio.astype(np.float32))


def run(student: Student, rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    batch = torch.zeros(len(rows), max(len(r) for r in rows))
    for i, row in enumerate(rows):
        batch[i, : len(row)] = row
    with torch.no_grad():
        return student(batch, torch.tensor([len(r) for r in rows]))


@pytest.mark.parametrize("name", FAMILIES)
def test_the_same_clip_at_any_gain_gets_the_same_answer(name):
    student = student_for(name)
    clips = [speech_like(n, seed=n) for n in (12_345, 24_000)]
    logits, embedding = run(student, clips)
    for gain in GAINS:
        scaled_logits, scaled_embedding = run(student, [clip * gain for clip in clips])
        assert (scaled_logits - logits).abs().max() <= GAIN_TOLERANCE, gain
        assert (scaled_embedding - embedding).abs().max() <= GAIN_TOLERANCE, gain
        assert torch.equal(scaled_logits.argmax(-1), logits.argmax(-1))


@pytest.mark.parametrize("name", FAMILIES)
def test_a_padded_batch_of_rows_at_different_gains_is_exact(name):
    """Each row of a batch mixing gains and lengths computes what it computes alone (1e-4, the
    exact-batching bound) and what its clip at gain 1 computes (the gain tolerance)."""
    student = student_for(name)
    clips = [speech_like(n, seed=i) for i, n in enumerate((16_000, 7_777, 30_001))]
    gains = (0.1, 10.0, 1.0)
    rows = [clip * gain for clip, gain in zip(clips, gains, strict=True)]
    logits, embedding = run(student, rows)
    for i, (row, clip) in enumerate(zip(rows, clips, strict=True)):
        alone_logits, alone_embedding = run(student, [row])
        assert (logits[i] - alone_logits[0]).abs().max() <= 1e-4
        assert (embedding[i] - alone_embedding[0]).abs().max() <= 1e-4
        plain_logits, plain_embedding = run(student, [clip])
        assert (logits[i] - plain_logits[0]).abs().max() <= GAIN_TOLERANCE
        assert (embedding[i] - plain_embedding[0]).abs().max() <= GAIN_TOLERANCE


def test_whisper_tiny_en_hears_real_speech_the_same_at_any_gain():
    """The pretrained encoder (real offline weights, random head) on real human speech."""
    from emocore.audio import load_audio
    from tests.fixtures import real_speech_files
    from tests.training.weights.installed import locate

    locate("whisper-tiny.en")
    clips = [torch.from_numpy(load_audio(path)) for path in real_speech_files(limit=4)]
    torch.manual_seed(0)
    classifier = build_classifier("whisper-tiny.en", EMOTIONS, use_weighted_layer_sum=True)
    student = Student(classifier).eval()
    plain = [run(student, [clip]) for clip in clips]
    for gain in GAINS:
        for clip, (logits, embedding) in zip(clips, plain, strict=True):
            scaled_logits, scaled_embedding = run(student, [clip * gain])
            assert (scaled_logits - logits).abs().max() <= GAIN_TOLERANCE, gain
            assert (scaled_embedding - embedding).abs().max() <= GAIN_TOLERANCE, gain
            assert torch.equal(scaled_logits.argmax(-1), logits.argmax(-1))
