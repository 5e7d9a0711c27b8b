import numpy as np
import pytest

from emocore.audio import SAMPLE_RATE
from emocore.segments import SegmentParams
from server.inference.vad import speech_segments
from server.stream.endpointer import (
    AudioBuffer,
    Endpoint,
    Endpointer,
    EndpointLikely,
    PartialDue,
    SpeechStarted,
)
from tests.server.speech_clips import three_utterances

PARAMS = SegmentParams(min_silence_ms=300, min_speech_ms=250, pad_ms=30)


def random_chunks(samples: np.ndarray, seed: int, largest: int = SAMPLE_RATE):
    rng = np.random.default_rng(seed)
    position = 0
    while position < samples.shape[0]:
        size = int(rng.integers(1, largest + 1))
        yield samples[position : position + size]
        position += size


def run(endpointer: Endpointer, chunks) -> list:
    events = [event for chunk in chunks for event in endpointer.feed(chunk)]
    return events + endpointer.flush()


@pytest.mark.parametrize("seed", [0, 1])
def test_chunking_does_not_change_the_cuts(seed):
    clip = three_utterances()
    events = run(Endpointer(PARAMS), random_chunks(clip.samples, seed))
    finals = [e for e in events if isinstance(e, Endpoint)]
    offline = speech_segments(clip.samples, PARAMS)
    assert [(e.start, e.end) for e in finals] == offline
    assert [e.utterance for e in finals] == [0, 1, 2]
    for final in finals:
        np.testing.assert_array_equal(final.audio, clip.samples[final.start : final.end])


def test_events_come_in_order_with_partials_inside_their_utterance():
    clip = three_utterances()
    events = run(Endpointer(PARAMS, partial_interval_ms=500), random_chunks(clip.samples, 2, 4000))
    kinds = [type(e).__name__ for e in events]
    assert kinds.count("SpeechStarted") == 3 and kinds.count("Endpoint") == 3
    open_utterance = None
    for event in events:
        if isinstance(event, SpeechStarted):
            assert open_utterance is None
            open_utterance = event.utterance
        elif isinstance(event, PartialDue):
            assert event.utterance == open_utterance
            assert event.end - event.start == event.audio.shape[0]
        else:
            assert event.utterance == open_utterance
            open_utterance = None
    partials = [e for e in events if isinstance(e, PartialDue)]
    # Each ~2 s utterance gets a partial about every 500 ms of growth, never closer together.
    assert 6 <= len(partials) <= 12
    for a, b in zip(partials, partials[1:], strict=False):
        if a.utterance == b.utterance:
            assert b.end - a.end >= SAMPLE_RATE // 2


def test_flush_ends_the_open_utterance_at_once():
    clip = three_utterances()
    first_end = clip.truth[0][1]
    endpointer = Endpointer(PARAMS)
    events = endpointer.feed(clip.samples[: first_end - SAMPLE_RATE // 2])
    assert [type(e) for e in events] == [SpeechStarted]
    flushed = endpointer.flush()
    assert len(flushed) == 1 and isinstance(flushed[0], Endpoint)
    assert flushed[0].end == endpointer.tracker.position
    assert endpointer.flush() == []


def test_max_utterance_cuts_long_speech():
    clip = three_utterances()
    params = SegmentParams(min_silence_ms=300, min_speech_ms=250, pad_ms=30, max_speech_s=1.0)
    finals = [e for e in run(Endpointer(params), [clip.samples]) if isinstance(e, Endpoint)]
    assert len(finals) > 3
    assert max(e.end - e.start for e in finals) <= SAMPLE_RATE


def test_buffer_keeps_memory_bounded_over_long_silence():
    endpointer = Endpointer(PARAMS)
    silence = np.zeros(SAMPLE_RATE, np.float32)
    for _ in range(120):
        assert endpointer.feed(silence) == []
    assert endpointer._audio._data.shape[0] <= 70 * SAMPLE_RATE


def test_audio_buffer_addresses_by_absolute_offset():
    buffer = AudioBuffer(8)
    ramp = np.arange(30, dtype=np.float32)
    for piece in np.split(ramp, [5, 11, 20]):
        buffer.append(piece)
        buffer.discard_before(buffer.end - 6)
    np.testing.assert_array_equal(buffer.slice(24, 30), ramp[24:30])
    with pytest.raises(IndexError):
        buffer.slice(0, 4)


def test_endpoint_likely_announces_the_exact_final_span_early():
    clip = three_utterances()
    endpointer = Endpointer(PARAMS)
    endpointer.speculate_after = 0
    events = run(endpointer, random_chunks(clip.samples, 3, 3000))
    finals = [e for e in events if isinstance(e, Endpoint)]
    assert len(finals) == 3
    for final in finals:
        likely = [
            e
            for e in events
            if isinstance(e, EndpointLikely) and (e.start, e.end) == (final.start, final.end)
        ]
        assert len(likely) == 1
        assert likely[0].utterance == final.utterance
        np.testing.assert_array_equal(likely[0].audio, final.audio)
        # It came at least (min_silence - pad) of audio before the endpoint was certain.
        assert events.index(likely[0]) < events.index(final)
