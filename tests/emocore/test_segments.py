"""The segmentation rule (emocore/segments.py SegmentTracker) on scripted VAD probabilities:
minimum speech and silence, the hard cut, the pending end that speculation reads."""

from __future__ import annotations

import itertools

from emocore.audio import SAMPLE_RATE
from emocore.segments import WINDOW, SegmentEnd, SegmentParams, SegmentStart, SegmentTracker


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
