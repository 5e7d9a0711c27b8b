"""The /v1/stream state machine without a socket: property-based over chunkings, VAD traces,
message orders and the order inferences answer in, plus each limit and the drain."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emocore.audio import SAMPLE_RATE
from emocore.segments import WINDOW, SegmentEnd, SegmentParams, SegmentTracker
from server.inference.requests import Inference, Priority
from server.stream.actions import Cancel, Close, Infer, Promote, Send
from server.stream.limits import Limits
from server.stream.machine import StreamMachine
from server.stream.protocol import StreamConfig, StreamError

RULE = SegmentParams(threshold=0.5, min_silence_ms=100, min_speech_ms=100, pad_ms=30)
LABELS = ["neutral", "happy", "angry", "sad"]
PROBABILITIES = st.sampled_from([0.0, 0.1, 0.3, 0.4, 0.45, 0.6, 0.9, 1.0])


class ScriptedVad:
    """A VAD that answers a fixed probability per window (silence after the trace)."""

    def __init__(self, trace: list[float]):
        self.trace, self.calls = trace, 0

    def __call__(self, window: np.ndarray) -> float:
        assert window.shape == (WINDOW,)
        self.calls += 1
        return self.trace[self.calls - 1] if self.calls <= len(self.trace) else 0.0


def inference(probabilities=(0.1, 0.6, 0.2, 0.1)) -> Inference:
    p = np.array(probabilities, np.float32)
    return Inference(np.log(p), p, np.zeros(4, np.float32), 0.001, 0.002, 1)


class Harness:
    """Drives one machine as the driver does and records what it did."""

    def __init__(self, trace, *, limits=None, interim=True, max_utterance_s=1.0, query=None):
        self.limits = limits or Limits(max_pending=1, intake_burst_s=1e9, max_utterance_s=30)
        defaults = StreamConfig(
            min_silence_ms=100, partial_interval_ms=100, max_utterance_s=max_utterance_s
        )
        self.now = 0.0
        self.machine = StreamMachine(
            self.limits,
            defaults,
            RULE,
            labels=LABELS,
            session_id="test",
            now=self.now,
            vad=lambda: ScriptedVad(trace),
        )
        self.sent: list[dict] = []
        self.outstanding: dict[int, Infer] = {}
        self.closed: Close | None = None
        query = query if query is not None else {"interim": str(interim).lower()}
        self.apply(self.machine.open(query, self.now))

    def apply(self, actions) -> None:
        assert self.closed is None or not actions, actions
        for action in actions:
            if isinstance(action, Send):
                self.sent.append(action.payload)
            elif isinstance(action, Infer):
                assert action.key not in self.outstanding
                assert action.audio.shape[0] > 0
                self.outstanding[action.key] = action
            elif isinstance(action, Cancel):
                self.outstanding.pop(action.key)
            elif isinstance(action, Promote):  # the batcher no longer refuses it
                infer = self.outstanding[action.key]
                assert infer.priority == Priority.SPECULATIVE
                self.outstanding[action.key] = Infer(infer.key, infer.audio, Priority.FINAL)
            elif isinstance(action, Close):
                self.closed = action
        held = self.machine.held_samples
        assert held <= self.machine.audio_bound(), (held, self.machine.audio_bound())

    def audio(self, samples: int) -> None:
        self.now += samples / SAMPLE_RATE / 50  # 50 x real time
        self.apply(self.machine.audio(b"\x00\x00" * samples, self.now))

    def text(self, message: dict | str) -> None:
        text = message if isinstance(message, str) else json.dumps(message)
        self.apply(self.machine.text(text, self.now))

    def answer(self, key: int, *, fail: bool = False) -> None:
        self.outstanding.pop(key)
        if fail:
            error = StreamError("overloaded", "crowded", 1013)
            self.apply(self.machine.failed(key, error, self.now))
        else:
            self.apply(self.machine.inferred(key, inference(), self.now))

    def answer_all(self, pick=lambda keys: keys[0]) -> None:
        while self.outstanding and self.closed is None:
            self.answer(pick(sorted(self.outstanding)))

    def of(self, kind: str) -> list[dict]:
        return [e for e in self.sent if e["type"] == kind]


def offline_spans(trace: list[float], params: SegmentParams) -> list[tuple[int, int]]:
    tracker = SegmentTracker(params)
    events = [e for p in trace for e in tracker.push(p)] + tracker.finish()
    return [(e.start, e.end) for e in events if isinstance(e, SegmentEnd)]


traces = st.lists(st.tuples(PROBABILITIES, st.integers(1, 25)), min_size=1, max_size=16).map(
    lambda runs: [p for p, n in runs for _ in range(n)]
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trace=traces, data=st.data())
def test_every_utterance_gets_one_final_in_order_and_memory_stays_bounded(trace, data):
    run = Harness(trace)
    total = len(trace) * WINDOW
    flushed = False
    position = 0
    while position < total and run.closed is None:
        # The driver reads only when the machine wants input; meanwhile inferences answer,
        # in any order, and guesses and partials may be refused (a crowded batcher).
        while not run.machine.wants_input:
            keys = sorted(run.outstanding)
            assert keys, "paused with nothing in flight would hang"
            key = data.draw(st.sampled_from(keys))
            refusable = run.outstanding[key].priority != Priority.FINAL
            run.answer(key, fail=refusable and data.draw(st.booleans()))
        chunk = data.draw(st.integers(1, 6 * WINDOW))
        run.audio(min(chunk, total - position))
        position += chunk
        if run.outstanding and data.draw(st.booleans()):
            run.answer(data.draw(st.sampled_from(sorted(run.outstanding))))
        if data.draw(st.integers(0, 30)) == 0:
            run.text({"type": "flush"})
            flushed = True
        elif data.draw(st.integers(0, 30)) == 0:
            run.text({"type": "keepalive"})
    run.text({"type": "stop"})
    run.answer_all(pick=lambda keys: data.draw(st.sampled_from(keys)))
    assert run.closed == Close(1000, "stop")
    finals = run.of("final")
    assert [f["utterance"] for f in finals] == list(range(len(finals)))
    assert len(finals) == len(run.of("speech_start")) == run.machine.utterances
    for partial in run.of("partial"):
        later = [f for f in finals if f["utterance"] == partial["utterance"]]
        assert run.sent.index(partial) < run.sent.index(later[0])
    if not flushed:
        params = SegmentParams(**{**RULE.__dict__, "max_speech_s": 1.0})
        spans = offline_spans(trace, params)
        got = [(round(f["start"] * SAMPLE_RATE), round(f["end"] * SAMPLE_RATE)) for f in finals]
        assert got == spans


@settings(max_examples=30, deadline=None)
@given(held=st.sampled_from([0.36, 0.4, 0.45, 0.49]), seconds=st.integers(20, 120))
def test_a_vad_held_in_the_hysteresis_band_cannot_pin_memory(held, seconds):
    """One trigger, a dip, then a probability between the thresholds for minutes: the
    utterance is cut at max_utterance_s from its first trigger, again and again."""
    windows = seconds * SAMPLE_RATE // WINDOW
    run = Harness([0.9, 0.1] + [held] * windows, limits=Limits(max_pending=1, intake_burst_s=1e9))
    for _ in range(windows // 20):
        while not run.machine.wants_input:
            run.answer_all()
        run.audio(20 * WINDOW)
    assert run.machine.held_samples <= run.machine.audio_bound()
    assert run.machine.endpointer.buffer_capacity <= (1.0 + 2.0) * SAMPLE_RATE


def test_keepalives_do_not_hold_off_the_idle_timeout():
    run = Harness([], limits=Limits(idle_timeout_s=5))
    for second in range(1, 5):
        run.now = float(second)
        run.text({"type": "keepalive"})
        run.apply(run.machine.tick(run.now))
    assert run.closed is None
    run.apply(run.machine.tick(5.0))
    assert run.closed == Close(1008, "idle_timeout")
    assert run.sent[-1]["code"] == "idle_timeout"


def test_audio_holds_off_the_idle_timeout():
    run = Harness([1.0] * 2000, limits=Limits(idle_timeout_s=5, max_pending=1))
    run.now = 4.0
    run.audio(512)
    run.apply(run.machine.tick(8.5))
    assert run.closed is None
    assert run.machine.next_deadline() == pytest.approx(9.0, abs=0.01)


def test_the_intake_rate_delays_reading_after_the_burst():
    limits = Limits(intake_rate=2.0, intake_burst_s=1.0)
    run = Harness([], limits=limits)
    assert run.machine.read_delay(0.0) == 0
    run.apply(run.machine.audio(b"\x00\x00" * (3 * SAMPLE_RATE), 0.0))  # 3 s at t=0
    # 3 s received, 1 s burst: 2 s over, at 2 x real time that is 1 s of waiting.
    assert run.machine.read_delay(0.0) == pytest.approx(1.0)
    assert run.machine.read_delay(1.0) == 0


@pytest.mark.parametrize(
    ("text", "code", "close_code"),
    [
        ("[" * 100_000, "message_too_large", 1009),
        ("[" * 2000, "malformed_json", 1008),  # deeper than the parser's recursion limit
        ('{"type": "start", "a": ' + "[" * 9 + "]" * 9 + "}", "malformed_json", 1008),
        ('{"type": "keepalive", "note": "[[[[[[[[[[[["}', None, None),  # brackets in a string
        ("\ud800", "malformed_json", 1008),
    ],
)
def test_text_messages_are_limited_in_size_and_nesting(text, code, close_code):
    run = Harness([], query={}, limits=Limits(max_text_bytes=4096, max_json_depth=8))
    run.text(text)
    if code is None:
        assert run.closed is None
        return
    assert run.closed == Close(close_code, code)
    assert run.sent[-1]["type"] == "error" and run.sent[-1]["code"] == code


def test_a_frame_over_the_limit_is_refused_with_1009():
    run = Harness([], limits=Limits(max_frame_bytes=1024))
    run.apply(run.machine.audio(b"\x00" * 1026, 0.0))
    assert run.closed == Close(1009, "frame_too_large")


def test_shutdown_announces_closing_sends_every_spoken_final_then_closes_1001():
    # Utterance 0 complete, utterance 1 still being spoken when the server stops.
    trace = [0.9] * 20 + [0.0] * 10 + [0.9] * 20
    run = Harness(trace, interim=False)
    run.audio(50 * WINDOW)
    assert [e["type"] for e in run.sent].count("speech_start") == 2
    run.apply(run.machine.shutdown(run.now, run.now + 5))
    assert run.sent[-1]["type"] == "closing" or run.of("closing")
    assert not run.machine.wants_input
    run.audio(WINDOW)  # read before the notice reached the client: ignored
    run.answer_all()
    assert [f["utterance"] for f in run.of("final")] == [0, 1]
    assert run.closed == Close(1001, "shutting_down")
    closing = run.sent.index(run.of("closing")[0])
    assert all(run.sent.index(f) > closing for f in run.of("final"))


def test_a_drain_past_its_deadline_closes_1001_naming_the_first_missing_final():
    run = Harness([0.9] * 20, interim=False)
    run.audio(20 * WINDOW)
    run.apply(run.machine.shutdown(run.now, run.now + 1))
    assert run.outstanding and run.closed is None
    run.apply(run.machine.tick(run.now + 1))
    assert run.closed == Close(1001, "shutting_down")
    assert run.sent[-1]["type"] == "error" and run.sent[-1]["utterance"] == 0
    assert not run.outstanding  # its inference was cancelled


def test_a_failed_final_ends_the_stream_with_its_utterance():
    limits = Limits(max_pending=1, speculate=False)
    run = Harness([0.9] * 20 + [0.0] * 10, interim=False, limits=limits)
    run.audio(30 * WINDOW)
    run.text({"type": "stop"})
    (key,) = run.outstanding
    run.answer(key, fail=True)
    assert run.closed == Close(1013, "overloaded")
    assert run.sent[-1]["utterance"] == 0


def until_a_guess(run: Harness) -> int:
    """Feed window by window until the pause is long enough for a guess; its key."""
    while not run.outstanding:
        run.audio(WINDOW)
    (key,) = run.outstanding
    assert run.outstanding[key].priority == Priority.SPECULATIVE
    assert run.machine.utterances == 0  # the endpoint is not certain yet
    return key


def test_a_guess_still_in_flight_is_promoted_when_its_endpoint_is_certain():
    run = Harness([0.9] * 20 + [0.0] * 10, interim=False)
    key = until_a_guess(run)
    run.audio(6 * WINDOW)  # the endpoint is certain: the guess is the final now
    assert run.machine.utterances == 1
    assert run.outstanding[key].priority == Priority.FINAL
    run.answer(key)
    assert [f["timing"]["speculative"] for f in run.of("final")] == [True]


def test_a_promoted_guess_that_fails_is_inferred_again_as_a_final():
    run = Harness([0.9] * 20 + [0.0] * 10, interim=False)
    key = until_a_guess(run)
    run.audio(6 * WINDOW)  # promoted
    run.answer(key, fail=True)  # e.g. timed out in a crowded batcher
    (again,) = run.outstanding
    assert again != key and run.outstanding[again].priority == Priority.FINAL
    run.answer(again)
    assert [f["timing"]["speculative"] for f in run.of("final")] == [False]


def test_a_refused_speculation_falls_back_to_an_ordinary_final():
    run = Harness([0.9] * 20 + [0.0] * 10, interim=False)
    key = until_a_guess(run)
    run.answer(key, fail=True)  # refused at once (a crowded batcher)
    run.audio(6 * WINDOW)  # the endpoint is certain
    (final_key,) = run.outstanding
    assert run.outstanding[final_key].priority == Priority.FINAL
    run.text({"type": "stop"})
    run.answer_all()
    assert [f["timing"]["speculative"] for f in run.of("final")] == [False]
    assert run.closed == Close(1000, "stop")


def test_finals_answered_by_their_guesses_do_not_stall_the_feeding():
    """A final whose guess already answered is ready as it is queued: it can pause the feeding
    (max_pending) and unpause it once sent, with no inference left to resume it. Found by the
    property test above; before the fix the stream waited forever with audio unfed."""
    trace = [0.9] * 10 + [0.0] * 8 + [0.9] * 10 + [0.0] * 8 + [0.9] * 10 + [0.0] * 20
    run = Harness(trace, interim=False, limits=Limits(max_pending=1, max_utterance_s=30))
    fed = 0
    while len(run.outstanding) < 2:  # utterance 0's guess (its final once certain), unanswered,
        run.audio(WINDOW)  # then utterance 1's guess
        fed += 1
    first, guess = sorted(run.outstanding)
    run.answer(guess)  # the guess answers before its endpoint is certain
    run.audio((len(trace) - fed) * WINDOW)  # the rest in one frame
    assert not run.machine.wants_input and run.machine.paused  # two finals queued
    run.answer(first)
    assert run.machine.wants_input or run.outstanding, "nothing in flight and audio unfed"
    run.text({"type": "stop"})
    run.answer_all()
    assert [f["utterance"] for f in run.of("final")] == [0, 1, 2]
    assert run.closed == Close(1000, "stop")
