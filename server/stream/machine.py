"""One /v1/stream session as a pure state machine: inputs in, actions out, no I/O.

Inputs are the client's messages (`text`, `audio`), the answers of inferences it asked for
(`inferred`, `failed`), the clock (`tick`, and `now` on every input) and the server's
`shutdown`. Outputs are actions for the driver (server/stream/session.py) to perform: `Send`
an event, `Infer` a span with a priority, `Cancel` an inference, `Close` the socket. Nothing
here reads a socket, sleeps or reads the clock, so every path is tested without a server
(tests/server/test_stream_machine.py, with hypothesis).

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
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import soxr

from emocore.audio import SAMPLE_RATE
from emocore.model_dir import Dimensions
from emocore.scoring import dimension_fields, verdict
from emocore.segments import WINDOW, SegmentParams, ms_to_samples
from server.inference.batcher import Inference, Priority
from server.inference.vad import SileroVad
from server.settings import Settings
from server.stream.endpointer import (
    Endpoint,
    Endpointer,
    EndpointLikely,
    PartialDue,
    SpeechStarted,
    StreamEvent,
)
from server.stream.protocol import (
    BYTES_PER_SAMPLE,
    CLOSE_GOING_AWAY,
    CLOSE_NORMAL,
    CLOSE_POLICY,
    CLOSE_TOO_BIG,
    MIN_RATE,
    SCORE_DIGITS,
    StreamConfig,
    StreamError,
    decode_pcm,
    error_event,
    event,
    parse_config,
    parse_message,
    seconds,
)

# Speculation starts when the pause left to wait is this many times the recent model time
# (queue + inference), so the answer is ready about when the endpoint becomes certain; before
# any measurement, halfway through min_silence_ms.
SPECULATION_LEAD = 1.5
MODEL_TIME_SMOOTHING = 0.3  # weight of the newest measurement in the running average


# Actions -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Send:
    payload: dict[str, Any]
    certain_at: float | None = None  # a final's: when its endpoint became certain (metrics)


@dataclass(frozen=True)
class Infer:
    key: int
    audio: np.ndarray
    priority: Priority


@dataclass(frozen=True)
class Cancel:
    key: int


@dataclass(frozen=True)
class Promote:
    """A guess in flight became its utterance's final: serve it at final priority."""

    key: int


@dataclass(frozen=True)
class Close:
    code: int
    reason: str


Action = Send | Infer | Cancel | Promote | Close


@dataclass(frozen=True)
class Limits:
    """What the server allows a stream (from Settings; docs/streaming.md)."""

    max_frame_bytes: int = 512 * 1024
    max_text_bytes: int = 4096
    max_json_depth: int = 8
    max_session_s: float = 3600.0
    idle_timeout_s: float = 15.0
    intake_rate: float = 10.0
    intake_burst_s: float = 10.0
    max_pending: int = 4
    speculate: bool = True
    max_utterance_s: float = 30.0  # the most a client may ask for (max_seconds)

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            max_frame_bytes=settings.stream_max_frame_bytes,
            max_text_bytes=settings.stream_max_text_bytes,
            max_json_depth=settings.stream_max_json_depth,
            max_session_s=settings.stream_max_session_s,
            idle_timeout_s=settings.stream_idle_timeout_s,
            intake_rate=settings.stream_intake_rate,
            intake_burst_s=settings.stream_intake_burst_s,
            max_pending=settings.stream_max_pending,
            speculate=settings.stream_speculate,
            max_utterance_s=settings.max_seconds,
        )


@dataclass
class _Job:
    kind: Literal["final", "speculative", "partial"]
    utterance: int
    start: int
    end: int
    audio: np.ndarray | None
    result: Inference | None = None  # a speculation answered before its endpoint was certain


@dataclass
class _Final:
    """An utterance whose endpoint is certain, until its final is sent."""

    utterance: int
    start: int
    end: int
    audio: np.ndarray | None  # kept until answered: a failed speculation is inferred again
    detected_at: int
    certain_at: float
    key: int
    speculative: bool
    result: Inference | None = None


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
        self._resampler: soxr.ResampleStream | None = None
        self._intake: deque[np.ndarray] = deque()  # 16 kHz audio received, not yet fed
        self._intake_samples = 0
        self._received = 0  # 16 kHz samples received in all (intake rate)
        self._session_ends = now + limits.max_session_s
        self._idle_from = now
        self._rate_from = now
        self._was_paused = False
        self._keys = 0
        self._jobs: dict[int, _Job] = {}
        self._finals: deque[_Final] = deque()
        self._speculation: int | None = None
        self._partial: int | None = None
        self._last_partial_at = -np.inf
        self._model_s: float | None = None
        self.utterances = 0  # finals queued so far
        self._ending: _Ending | None = None
        self.closed: Close | None = None
        self.reason: str | None = None  # why it ended: "stop", "shutting_down" or an error code

    # Queries (the driver's) ---------------------------------------------------------------

    @property
    def position(self) -> int:
        """16 kHz samples fed to the endpointer: stream time of events."""
        return self.endpointer.position if self.endpointer else 0

    @property
    def paused(self) -> bool:
        """More finals await the model than a stream may queue: no audio is fed."""
        return len(self._finals) > self.limits.max_pending

    @property
    def wants_input(self) -> bool:
        """Whether the driver may read the next message (after `read_delay`)."""
        return self.closed is None and self._ending is None and not self._intake and not self.paused

    def read_delay(self, now: float) -> float:
        """Seconds to wait before reading more audio: the intake rate, after the burst."""
        allowed = self.limits.intake_burst_s + self.limits.intake_rate * (now - self._rate_from)
        return max(0.0, (self._received / SAMPLE_RATE - allowed) / self.limits.intake_rate)

    def next_deadline(self) -> float:
        """When `tick` has something to check: the session limit, the idle limit while
        reading, a drain's deadline."""
        deadlines = [self._session_ends]
        if self.wants_input:
            deadlines.append(self._idle_from + self.limits.idle_timeout_s)
        if self._ending is not None and self._ending.deadline is not None:
            deadlines.append(self._ending.deadline)
        return min(deadlines)

    @property
    def held_samples(self) -> int:
        """Audio this session holds (allocated buffer, unfed intake, spans awaiting the model)."""
        buffer = self.endpointer.buffer_capacity if self.endpointer else 0
        arrays = {id(job.audio): job.audio for job in self._jobs.values() if job.audio is not None}
        arrays |= {id(f.audio): f.audio for f in self._finals if f.audio is not None}
        return buffer + self._intake_samples + sum(a.shape[0] for a in arrays.values())

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
        return self._guard(lambda: self._failed(key, error, now))

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
        return self._cancel_all()

    # Internals ----------------------------------------------------------------------------

    def _guard(self, step: Callable[[], list[Action]]) -> list[Action]:
        if self.closed is not None:
            return []
        try:
            return step()
        except StreamError as error:
            return self._fail(error)

    def _fail(self, error: StreamError) -> list[Action]:
        actions: list[Action] = [Send(error_event(error, self.position)), *self._cancel_all()]
        self.closed, self.reason = Close(error.close_code, error.code), error.code
        return [*actions, self.closed]

    def _cancel_all(self) -> list[Action]:
        keys = [key for key, job in self._jobs.items() if job.result is None]
        self._jobs.clear()
        self._finals.clear()
        self._speculation = self._partial = None
        return [Cancel(key) for key in keys]

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
            self.endpointer.speculate_after = ms_to_samples(config.min_silence_ms / 2)
        if config.sample_rate != SAMPLE_RATE:
            self._resampler = soxr.ResampleStream(
                config.sample_rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ"
            )
        self.config = config
        self._rate_from = self._idle_from = now
        limits = self.limits
        ready = {
            "type": "ready",
            "session_id": self.session_id,
            **config.model_dump(),
            "labels": list(self.labels),
            **({"dimensions": self.dimensions.describe()} if self.dimensions else {}),
            "limits": {
                "max_frame_bytes": limits.max_frame_bytes,
                "max_text_bytes": limits.max_text_bytes,
                "max_session_s": limits.max_session_s,
                "idle_timeout_s": limits.idle_timeout_s,
                "intake_rate": limits.intake_rate,
                "max_pending": limits.max_pending,
            },
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
        samples = decode_pcm(data, self.config)
        if self._resampler is not None:
            samples = self._resampler.resample_chunk(samples)
        self._take_in(samples)
        self._idle_from = now + self.read_delay(now)
        return self._advance(now)

    def _take_in(self, samples: np.ndarray) -> None:
        if samples.shape[0]:
            self._intake.append(samples.astype(np.float32, copy=False))
            self._intake_samples += samples.shape[0]
            self._received += samples.shape[0]

    def _end(self, code: int, reason: str, now: float, deadline: float | None = None) -> list:
        """Stop reading; feed what was received (and the resampler's tail), flush, send the
        remaining finals, then close with `code`."""
        self._ending = _Ending(code, reason, deadline)
        if self._resampler is not None:
            self._take_in(self._resampler.resample_chunk(np.zeros(0, np.float32), last=True))
            self._resampler = None
        return self._advance(now)

    def _shutdown(self, now: float, deadline: float) -> list[Action]:
        notice = Send(
            event(
                "closing",
                time=self.position,
                utterance=None,
                reason="shutting_down",
                message="the server is shutting down: send no more audio; the finals of what "
                "was received follow, then the stream closes 1001",
                deadline_s=round(max(0.0, deadline - now), 3),
            )
        )
        if self._ending is not None:  # already stopping: finish that, within the deadline
            self._ending.deadline = deadline
            return [notice]
        return [notice, *self._end(CLOSE_GOING_AWAY, "shutting_down", now, deadline)]

    def _tick(self, now: float) -> list[Action]:
        ending = self._ending
        if ending is not None and ending.deadline is not None and now >= ending.deadline:
            first = self._finals[0].utterance if self._finals else None
            raise StreamError(
                "shutting_down",
                "the server is shutting down; the remaining finals were not ready in time",
                CLOSE_GOING_AWAY,
                first,
            )
        if now >= self._session_ends:
            raise StreamError(
                "session_too_long",
                f"sessions last at most {self.limits.max_session_s:g} s",
                CLOSE_POLICY,
            )
        if self.wants_input and now >= self._idle_from + self.limits.idle_timeout_s:
            raise StreamError(
                "idle_timeout",
                f"no audio for {self.limits.idle_timeout_s:g} s (keepalives do not count)",
                CLOSE_POLICY,
            )
        return []

    def _advance(self, now: float) -> list[Action]:
        """Feed received audio while the pending finals allow, send finals that are ready, and
        close once an ending has nothing left to do."""
        actions: list[Action] = []
        while True:
            while self._intake and not self.paused:
                piece = self._intake.popleft()
                if piece.shape[0] > WINDOW:
                    piece, rest = piece[:WINDOW], piece[WINDOW:]
                    self._intake.appendleft(rest)
                self._intake_samples -= piece.shape[0]
                actions += self._handle(self.endpointer.feed(piece), now)
            sent = self._send_ready_finals()
            actions += sent
            # A final answered by its speculation is ready as it is queued: it can pause the
            # feeding and unpause it when sent, with no inference left to call us back.
            if not (sent and self._intake and not self.paused):
                break
        if self._ending is not None and not self._intake and self.endpointer is not None:
            actions += self._handle(self.endpointer.flush(), now)
            actions += self._send_ready_finals()
        if self._was_paused and not self.paused:
            self._idle_from = max(self._idle_from, now)  # waiting for the model is not idling
        self._was_paused = self.paused
        if self._ending is not None and not self._intake and not self._finals:
            actions += self._cancel_all()
            self.closed, self.reason = (
                Close(self._ending.code, self._ending.reason),
                self._ending.reason,
            )
            actions.append(self.closed)
        return actions

    def _handle(self, events: list[StreamEvent], now: float) -> list[Action]:
        actions: list[Action] = []
        for item in events:
            if isinstance(item, SpeechStarted):
                payload = event(
                    "speech_start",
                    time=self.position,
                    utterance=item.utterance,
                    start=seconds(item.start),
                )
                actions.append(Send(payload))
            elif isinstance(item, PartialDue):
                actions += self._maybe_partial(item, now)
            elif isinstance(item, EndpointLikely):
                actions += self._speculate(item)
            elif isinstance(item, Endpoint):
                actions += self._queue_final(item, now)
        speculation = self._jobs.get(self._speculation) if self._speculation is not None else None
        if speculation is not None and (speculation.start, speculation.end) != (
            self.endpointer.likely_span if self.endpointer else None
        ):
            actions += self._drop(self._speculation)  # speech came back: not the end
            self._speculation = None
        return actions

    def _infer(self, job: _Job, priority: Priority) -> tuple[int, Infer]:
        key = self._keys
        self._keys += 1
        self._jobs[key] = job
        return key, Infer(key, job.audio, priority)

    def _drop(self, key: int) -> list[Action]:
        """Forget a job; cancel its inference if it is still in flight."""
        job = self._jobs.pop(key, None)
        return [Cancel(key)] if job is not None and job.result is None else []

    def _maybe_partial(self, due: PartialDue, now: float) -> list[Action]:
        """At most one interim inference in flight, and at most one per interval of wall time
        too (a client sending faster than real time gets no more partials per second)."""
        assert self.config is not None
        interval = self.config.partial_interval_ms / 1000
        if self._partial is not None or now - self._last_partial_at < interval:
            return []
        self._last_partial_at = now
        job = _Job("partial", due.utterance, due.start, due.end, due.audio)
        self._partial, action = self._infer(job, Priority.PARTIAL)
        return [action]

    def _speculate(self, likely: EndpointLikely) -> list[Action]:
        actions = self._drop(self._speculation) if self._speculation is not None else []
        job = _Job("speculative", likely.utterance, likely.start, likely.end, likely.audio)
        self._speculation, action = self._infer(job, Priority.SPECULATIVE)
        return [*actions, action]

    def _queue_final(self, endpoint: Endpoint, now: float) -> list[Action]:
        self.utterances = endpoint.utterance + 1
        actions: list[Action] = []
        key, speculation = self._speculation, None
        self._speculation = None
        if key is not None:
            speculation = self._jobs[key]
            if (speculation.utterance, speculation.start, speculation.end) != (
                endpoint.utterance,
                endpoint.start,
                endpoint.end,
            ):
                actions += self._drop(key)
                speculation = None
        final = _Final(
            endpoint.utterance,
            endpoint.start,
            endpoint.end,
            endpoint.audio,
            detected_at=self.position,
            certain_at=now,
            key=-1,
            speculative=speculation is not None,
        )
        if speculation is not None:
            final.key, speculation.kind = key, "final"
            final.result = speculation.result
            if final.result is not None:
                self._jobs.pop(key)
                final.audio = None
            else:
                actions.append(Promote(key))
        else:
            final.key, action = self._infer(
                _Job("final", endpoint.utterance, endpoint.start, endpoint.end, endpoint.audio),
                Priority.FINAL,
            )
            actions.append(action)
        self._finals.append(final)
        return actions

    def _inferred(self, key: int, inference: Inference, now: float) -> list[Action]:
        job = self._jobs.get(key)
        if job is None:
            return []  # cancelled meanwhile
        if job.kind == "partial":
            del self._jobs[key]
            self._partial = None
            if job.utterance >= self.utterances:  # never after the utterance's final
                payload = self._result("partial", job.utterance, job.start, job.end, inference)
                return [Send(payload)]
            return []
        self._observe(inference)
        if job.kind == "speculative":
            job.result = inference  # kept for its endpoint
            return []
        del self._jobs[key]
        for final in self._finals:
            if final.key == key:
                final.result, final.audio = inference, None
        return self._advance(now)

    def _failed(self, key: int, error: StreamError, now: float) -> list[Action]:
        job = self._jobs.pop(key, None)
        if job is None:
            return []
        if job.kind == "partial":
            self._partial = None  # interim results are best effort
            return []
        if job.kind == "speculative":
            self._speculation = None  # its endpoint, if it comes, takes the ordinary path
            return []
        for final in self._finals:
            if final.key == key and final.speculative and final.audio is not None:
                # The guess failed (crowded, ...): the certain span goes the ordinary way.
                final.speculative = False
                final.key, action = self._infer(
                    _Job("final", final.utterance, final.start, final.end, final.audio),
                    Priority.FINAL,
                )
                return [action]
        error.utterance = job.utterance
        raise error

    def _send_ready_finals(self) -> list[Action]:
        actions: list[Action] = []
        while self._finals and self._finals[0].result is not None:
            final = self._finals.popleft()
            inference = final.result
            timing = {
                "queue_s": round(inference.queue_wait_s, 4),
                "inference_s": round(inference.inference_s, 4),
                "batch_size": inference.batch_size,
                "speculative": final.speculative,
            }
            payload = self._result(
                "final", final.utterance, final.start, final.end, inference, final.detected_at
            )
            actions.append(Send(payload | {"timing": timing}, certain_at=final.certain_at))
        return actions

    def _result(
        self,
        kind: str,
        utterance: int,
        start: int,
        end: int,
        inference: Inference,
        detected_at: int | None = None,
    ) -> dict[str, Any]:
        assert self.config is not None  # results exist only after the session started
        return event(
            kind,
            time=self.position if detected_at is None else detected_at,
            utterance=utterance,
            start=seconds(start),
            end=seconds(end),
            **verdict(
                self.labels,
                inference.probabilities,
                self.config.min_confidence,
                digits=SCORE_DIGITS,
            ),
            **dimension_fields(
                self.dimensions.names if self.dimensions else None,
                inference.dimensions,
                SCORE_DIGITS,
            ),
        )

    def _observe(self, inference: Inference) -> None:
        """Track the model time and start speculating that long before an endpoint."""
        took = inference.queue_wait_s + inference.inference_s
        previous = self._model_s if self._model_s is not None else took
        self._model_s = (1 - MODEL_TIME_SMOOTHING) * previous + MODEL_TIME_SMOOTHING * took
        if self.endpointer is not None and self.endpointer.speculate_after is not None:
            assert self.config is not None
            lead_ms = SPECULATION_LEAD * self._model_s * 1000
            self.endpointer.speculate_after = ms_to_samples(
                max(0.0, self.config.min_silence_ms - lead_ms)
            )


def stream_defaults(settings: Settings) -> StreamConfig:
    """The session config a client gets for the keys it does not set."""
    return StreamConfig(
        min_silence_ms=settings.stream_min_silence_ms,
        partial_interval_ms=settings.stream_partial_interval_ms,
        max_utterance_s=settings.stream_max_utterance_s,
        min_confidence=settings.min_confidence,
    )


__all__ = [
    "Action",
    "Cancel",
    "Close",
    "Infer",
    "Limits",
    "Send",
    "StreamMachine",
    "stream_defaults",
]
