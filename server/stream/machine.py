"""One /v1/stream session as a pure state machine: inputs in, actions out, no I/O.

Inputs are the client's messages (`text`, `audio`), the answers of inferences it asked for
(`inferred`, `failed`), the clock (`tick`, and `now` on every input) and the server's
`shutdown`. Outputs are actions (server/stream/actions.py) for the driver
(server/stream/session.py) to perform: `Send` an event, `Infer` a span with a priority,
`Cancel` an inference, `Close` the socket. Nothing here reads a socket, sleeps or reads the
clock, so every path is tested without a server (tests/server/stream/test_machine.py, with
hypothesis). The intake and its deadlines are server/stream/intake.py, the inferences (finals
queue, speculation, partials) server/stream/inferences.py.

Rules it keeps, whatever the client does:
- every utterance gets exactly one `final`, in utterance order, unless the session fails;
- audio is fed to the endpointer only while at most `max_pending` finals await the model,
  and the driver reads the next message only when all audio received is fed (`wants_input`):
  with the hard cut at `max_utterance_s` (server/inference/vad.py) the audio held is bounded
  (`audio_bound`), and a client that sends faster than the model keeps up is slowed by TCP;
- audio is read at most `intake_rate` times faster than real time (after a burst), and a
  stream without audio for `idle_timeout_s` is closed (keepalives do not count);
- a bad input ends the session with an `error` event naming it and the fitting close code.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from emocore.audio import MIN_RATE, SAMPLE_RATE
from emocore.model_dir import Dimensions
from emocore.scoring import STREAM_SECONDS_DIGITS, seconds
from emocore.segments import WINDOW, SegmentParams
from server.inference.requests import Inference
from server.inference.vad import SileroVad, segment_params
from server.settings import Settings
from server.stream.actions import Action, Close, Send
from server.stream.endpointer import (
    Endpoint,
    Endpointer,
    EndpointLikely,
    PartialDue,
    SpeechStarted,
    StreamEvent,
)
from server.stream.inferences import Final, Inferences, Job, speculate_after
from server.stream.intake import Intake
from server.stream.limits import Limits, stream_defaults
from server.stream.protocol import (
    BYTES_PER_SAMPLE,
    CLOSE_GOING_AWAY,
    CLOSE_NORMAL,
    CLOSE_POLICY,
    CLOSE_TOO_BIG,
    StreamConfig,
    StreamError,
    closing_event,
    decode_pcm,
    error_event,
    event,
    parse_config,
    parse_message,
    result_event,
)


@dataclass
class _Ending:
    code: int
    reason: str
    deadline: float | None = None  # a drain's: past it, close without the remaining finals


class StreamMachine:
    """One session. Call `open` first; after a `Close` action every input returns []."""

    def __init__(
        self,
        limits: Limits,
        defaults: StreamConfig,
        rule: SegmentParams,
        *,
        labels: list[str],
        session_id: str,
        now: float,
        vad: Callable[[], Callable[[np.ndarray], float]] = SileroVad,
        dimensions: Dimensions | None = None,
    ):
        self.limits = limits
        self.defaults = defaults
        self.rule = rule  # the server's segmentation rule; a session picks min silence and cut
        self.labels = labels
        self.dimensions = dimensions  # the model's, if any: results carry them
        self.session_id = session_id
        self._make_vad = vad
        self.config: StreamConfig | None = None
        self.endpointer: Endpointer | None = None
        self._intake = Intake(limits, now)
        self._inferences = Inferences()
        self._ending: _Ending | None = None
        self.closed: Close | None = None
        self.reason: str | None = None  # why it ended: "stop", "shutting_down" or an error code

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        min_samples: int,
        labels: list[str],
        session_id: str,
        now: float,
        dimensions: Dimensions | None = None,
    ) -> StreamMachine:
        """A session under the server's limits, defaults and segmentation rule; `min_samples`
        is the model's shortest input."""
        return cls(
            Limits.from_settings(settings),
            stream_defaults(settings),
            segment_params(settings, min_samples=min_samples),
            labels=labels,
            session_id=session_id,
            now=now,
            dimensions=dimensions,
        )

    # Queries (the driver's) ---------------------------------------------------------------

    @property
    def position(self) -> int:
        """16 kHz samples fed to the endpointer: stream time of events."""
        return self.endpointer.position if self.endpointer else 0

    @property
    def utterances(self) -> int:
        """Finals queued so far."""
        return self._inferences.utterances

    @property
    def paused(self) -> bool:
        """More finals await the model than a stream may queue: no audio is fed."""
        return self._inferences.pending > self.limits.max_pending

    @property
    def wants_input(self) -> bool:
        """Whether the driver may read the next message (after `read_delay`)."""
        return self.closed is None and self._ending is None and not self._intake and not self.paused

    def read_delay(self, now: float) -> float:
        """Seconds to wait before reading more audio: the intake rate, after the burst."""
        return self._intake.read_delay(now)

    def next_deadline(self) -> float:
        """When `tick` has something to check: the session limit, the idle limit while
        reading, a drain's deadline."""
        deadline = self._intake.deadline(reading=self.wants_input)
        if self._ending is not None and self._ending.deadline is not None:
            deadline = min(deadline, self._ending.deadline)
        return deadline

    @property
    def held_samples(self) -> int:
        """Audio this session holds (allocated buffer, unfed intake, spans awaiting the model)."""
        buffer = self.endpointer.buffer_capacity if self.endpointer else 0
        return buffer + self._intake.samples + self._inferences.held_samples()

    def audio_bound(self) -> int:
        """The most `held_samples` can reach: the endpointer's buffer, one frame resampled from
        the lowest rate, and max_pending + 1 finals, a speculation and a partial of at most
        max_utterance_s each."""
        longest = self.config.max_utterance_s if self.config else self.defaults.max_utterance_s
        utterance = int(longest * SAMPLE_RATE)
        frame = self.limits.max_frame_bytes // min(BYTES_PER_SAMPLE.values())
        frame = int(np.ceil(frame * SAMPLE_RATE / MIN_RATE)) + WINDOW
        return Endpointer.capacity_for(longest) + frame + (self.limits.max_pending + 3) * utterance

    # Inputs -------------------------------------------------------------------------------

    def open(self, query: Mapping[str, Any] | None, now: float) -> list[Action]:
        """The connection is accepted; a config in the query string starts the session."""
        return self._guard(lambda: self._start(query, now) if query is not None else [])

    def text(self, text: str, now: float) -> list[Action]:
        return self._guard(lambda: self._text(text, now))

    def audio(self, data: bytes, now: float) -> list[Action]:
        return self._guard(lambda: self._audio(data, now))

    def inferred(self, key: int, inference: Inference, now: float) -> list[Action]:
        return self._guard(lambda: self._inferred(key, inference, now))

    def failed(self, key: int, error: StreamError, now: float) -> list[Action]:
        """An inference failed; `error` is what it means for a final (overloaded, ...)."""
        return self._guard(lambda: self._inferences.failed(key, error))

    def tick(self, now: float) -> list[Action]:
        return self._guard(lambda: self._tick(now))

    def shutdown(self, now: float, deadline: float) -> list[Action]:
        """The server stops: announce it, finish what was spoken, close 1001 by `deadline`."""
        return self._guard(lambda: self._shutdown(now, deadline))

    def gone(self, reason: str = "client gone") -> list[Action]:
        """The peer disconnected: cancel everything; nothing is sent."""
        if self.closed is not None:
            return []
        self.closed, self.reason = Close(CLOSE_NORMAL, reason), reason
        return self._inferences.cancel_all()

    # Internals ----------------------------------------------------------------------------

    def _guard(self, step: Callable[[], list[Action]]) -> list[Action]:
        if self.closed is not None:
            return []
        try:
            return step()
        except StreamError as error:
            actions = [Send(error_event(error, self.position)), *self._inferences.cancel_all()]
            self.closed, self.reason = Close(error.close_code, error.code), error.code
            return [*actions, self.closed]

    def _start(self, values: Mapping[str, Any], now: float) -> list[Action]:
        if self.config is not None:
            raise StreamError("already_started", "the session is already configured", CLOSE_POLICY)
        config = parse_config(values, self.defaults, max_utterance_s=self.limits.max_utterance_s)
        params = dataclasses.replace(
            self.rule, min_silence_ms=config.min_silence_ms, max_speech_s=config.max_utterance_s
        )
        partials = config.partial_interval_ms if config.interim else None
        self.endpointer = Endpointer(params, partial_interval_ms=partials, vad=self._make_vad())
        if self.limits.speculate:
            self.endpointer.speculate_after = speculate_after(config.min_silence_ms, None)
        self._intake.start(config.sample_rate, now)
        self.config = config
        ready = {
            "type": "ready",
            "session_id": self.session_id,
            **config.model_dump(),
            "labels": list(self.labels),
            **({"dimensions": self.dimensions.describe()} if self.dimensions else {}),
            "limits": self.limits.describe(),
        }
        return [Send(ready)]

    def _text(self, text: str, now: float) -> list[Action]:
        message = parse_message(
            text, max_bytes=self.limits.max_text_bytes, max_depth=self.limits.max_json_depth
        )
        kind = message.pop("type")
        if self._ending is not None:
            return []  # read before the stop or drain took effect: nothing left to do
        if kind == "keepalive":
            return []  # for proxies; it does not hold off the idle timeout (audio does)
        if kind == "start":
            return self._start(message, now)
        if kind in ("flush", "stop") and self.endpointer is None:
            return [] if kind == "flush" else self._end(CLOSE_NORMAL, "stop", now)
        if kind == "flush":
            return self._handle(self.endpointer.flush(), now) + self._advance(now)
        if kind == "stop":
            return self._end(CLOSE_NORMAL, "stop", now)
        raise StreamError(
            "unknown_message_type",
            f"unknown message type {kind!r}; expected start, flush, stop or keepalive",
            CLOSE_POLICY,
        )

    def _audio(self, data: bytes, now: float) -> list[Action]:
        if self._ending is not None:
            return []
        if self.config is None:
            raise StreamError(
                "binary_before_config",
                "audio arrived before the session was configured: put the config in the query "
                'string or send {"type": "start", ...} first',
                CLOSE_POLICY,
            )
        if len(data) > self.limits.max_frame_bytes:
            raise StreamError(
                "frame_too_large",
                f"a frame holds at most {self.limits.max_frame_bytes} bytes; got {len(data)}",
                CLOSE_TOO_BIG,
            )
        self._intake.receive(decode_pcm(data, self.config), now)
        return self._advance(now)

    def _end(self, code: int, reason: str, now: float, deadline: float | None = None) -> list:
        """Stop reading; feed what was received (and the resampler's tail), flush, send the
        remaining finals, then close with `code`."""
        self._ending = _Ending(code, reason, deadline)
        self._intake.finish()
        return self._advance(now)

    def _shutdown(self, now: float, deadline: float) -> list[Action]:
        notice = Send(closing_event(self.position, deadline - now))
        if self._ending is not None:  # already stopping: finish that, within the deadline
            self._ending.deadline = deadline
            return [notice]
        return [notice, *self._end(CLOSE_GOING_AWAY, "shutting_down", now, deadline)]

    def _tick(self, now: float) -> list[Action]:
        ending = self._ending
        if ending is not None and ending.deadline is not None and now >= ending.deadline:
            raise StreamError(
                "shutting_down",
                "the server is shutting down; the remaining finals were not ready in time",
                CLOSE_GOING_AWAY,
                self._inferences.first_pending,
            )
        self._intake.check(now, reading=self.wants_input)
        return []

    def _advance(self, now: float) -> list[Action]:
        """Feed received audio while the pending finals allow, send finals that are ready, and
        close once an ending has nothing left to do."""
        actions: list[Action] = []
        while True:
            while self._intake and not self.paused:
                actions += self._handle(self.endpointer.feed(self._intake.take()), now)
            sent = self._send_ready_finals()
            actions += sent
            # A final answered by its speculation is ready as it is queued: it can pause the
            # feeding and unpause it when sent, with no inference left to call us back.
            if not (sent and self._intake and not self.paused):
                break
        if self._ending is not None and not self._intake and self.endpointer is not None:
            actions += self._handle(self.endpointer.flush(), now)
            actions += self._send_ready_finals()
        self._intake.paused(self.paused, now)
        if self._ending is not None and not self._intake and not self._inferences.pending:
            actions += self._inferences.cancel_all()
            self.closed = Close(self._ending.code, self._ending.reason)
            self.reason = self._ending.reason
            actions.append(self.closed)
        return actions

    def _handle(self, events: list[StreamEvent], now: float) -> list[Action]:
        actions: list[Action] = []
        inferences = self._inferences
        for item in events:
            if isinstance(item, SpeechStarted):
                payload = event(
                    "speech_start",
                    time=self.position,
                    utterance=item.utterance,
                    start=seconds(item.start, STREAM_SECONDS_DIGITS),
                )
                actions.append(Send(payload))
            elif isinstance(item, PartialDue):
                assert self.config is not None
                actions += inferences.partial(item, now, self.config.partial_interval_ms / 1000)
            elif isinstance(item, EndpointLikely):
                actions += inferences.speculate(item)
            elif isinstance(item, Endpoint):
                actions += inferences.queue_final(item, self.position, now)
        likely = self.endpointer.likely_span if self.endpointer else None
        return actions + inferences.check_speculation(likely)

    def _inferred(self, key: int, inference: Inference, now: float) -> list[Action]:
        job = self._inferences.answered(key, inference)
        if job is None:
            return []  # cancelled meanwhile
        if job.kind == "partial":
            if job.utterance >= self.utterances:  # never after the utterance's final
                return [Send(self._result("partial", job, inference))]
            return []
        # Start speculating the model's recent time before an endpoint.
        if self.endpointer is not None and self.endpointer.speculate_after is not None:
            assert self.config is not None
            self.endpointer.speculate_after = speculate_after(
                self.config.min_silence_ms, self._inferences.model_s
            )
        return [] if job.kind == "speculative" else self._advance(now)

    def _send_ready_finals(self) -> list[Action]:
        actions: list[Action] = []
        for final in self._inferences.ready_finals():
            inference = final.result
            timing = {
                "queue_s": round(inference.queue_wait_s, 4),
                "inference_s": round(inference.inference_s, 4),
                "batch_size": inference.batch_size,
                "speculative": final.speculative,
            }
            payload = self._result("final", final, inference, final.detected_at)
            actions.append(Send(payload | {"timing": timing}, certain_at=final.certain_at))
        return actions

    def _result(
        self, kind: str, span: Job | Final, inference: Inference, time: int | None = None
    ) -> dict[str, Any]:
        assert self.config is not None  # results exist only after the session started
        names = self.dimensions.names if self.dimensions else None
        return result_event(
            kind,
            time=self.position if time is None else time,
            utterance=span.utterance,
            span=(span.start, span.end),
            labels=self.labels,
            min_confidence=self.config.min_confidence,
            probabilities=inference.probabilities,
            dimension_names=names,
            dimensions=inference.dimensions,
        )
