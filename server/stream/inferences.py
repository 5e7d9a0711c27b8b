"""The inferences one stream asked for: finals in utterance order, speculation, partials.

Part of the pure state machine (server/stream/machine.py): it returns actions and keeps no
clock. A final's inference may start before its endpoint is certain (speculation, in the pause
that may end the utterance); a speculation whose endpoint comes true becomes that final
(`Promote`, or its answer is used at once), one that does not is cancelled. Partials are best
effort: at most one in flight, and never sent after their utterance's final.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Literal

import numpy as np

from emocore.segments import ms_to_samples
from server.inference.requests import Inference, Priority
from server.inference.speed import moving_average
from server.stream.actions import Action, Cancel, Infer, Promote
from server.stream.endpointer import Endpoint, EndpointLikely, PartialDue
from server.stream.protocol import StreamError

# Speculation starts when the pause left to wait is this many times the recent model time
# (queue + inference), so the answer is ready about when the endpoint becomes certain; before
# any measurement, halfway through min_silence_ms.
SPECULATION_LEAD = 1.5


def speculate_after(min_silence_ms: float, model_s: float | None) -> int:
    """The pause (samples) after which an utterance's inference starts speculatively."""
    if model_s is None:
        return ms_to_samples(min_silence_ms / 2)
    lead_ms = SPECULATION_LEAD * model_s * 1000
    return ms_to_samples(max(0.0, min_silence_ms - lead_ms))


@dataclass
class Job:
    kind: Literal["final", "speculative", "partial"]
    utterance: int
    start: int
    end: int
    audio: np.ndarray | None
    result: Inference | None = None  # a speculation answered before its endpoint was certain


@dataclass
class Final:
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


class Inferences:
    """The jobs in flight (by key) and the finals queued, oldest utterance first."""

    def __init__(self) -> None:
        self._keys = 0
        self._jobs: dict[int, Job] = {}
        self._finals: deque[Final] = deque()
        self._speculation: int | None = None
        self._partial: int | None = None
        self._last_partial_at = -np.inf
        self.model_s: float | None = None  # queue + inference time, moving average
        self.utterances = 0  # finals queued so far

    @property
    def pending(self) -> int:
        """Finals queued and not yet sent."""
        return len(self._finals)

    @property
    def first_pending(self) -> int | None:
        """The utterance of the oldest final not yet sent."""
        return self._finals[0].utterance if self._finals else None

    def held_samples(self) -> int:
        """Audio held for inference (jobs in flight and finals awaiting an answer)."""
        arrays = {id(job.audio): job.audio for job in self._jobs.values() if job.audio is not None}
        arrays |= {id(f.audio): f.audio for f in self._finals if f.audio is not None}
        return sum(a.shape[0] for a in arrays.values())

    def cancel_all(self) -> list[Action]:
        keys = [key for key, job in self._jobs.items() if job.result is None]
        self._jobs.clear()
        self._finals.clear()
        self._speculation = self._partial = None
        return [Cancel(key) for key in keys]

    def partial(self, due: PartialDue, now: float, interval_s: float) -> list[Action]:
        """At most one interim inference in flight, and at most one per interval of wall time
        too (a client sending faster than real time gets no more partials per second)."""
        if self._partial is not None or now - self._last_partial_at < interval_s:
            return []
        self._last_partial_at = now
        job = Job("partial", due.utterance, due.start, due.end, due.audio)
        self._partial, action = self._infer(job, Priority.PARTIAL)
        return [action]

    def speculate(self, likely: EndpointLikely) -> list[Action]:
        actions = self._drop(self._speculation) if self._speculation is not None else []
        job = Job("speculative", likely.utterance, likely.start, likely.end, likely.audio)
        self._speculation, action = self._infer(job, Priority.SPECULATIVE)
        return [*actions, action]

    def check_speculation(self, likely_span: tuple[int, int] | None) -> list[Action]:
        """Drop the speculation unless its span is still the endpointer's likely one."""
        speculation = self._jobs.get(self._speculation) if self._speculation is not None else None
        if speculation is not None and (speculation.start, speculation.end) != likely_span:
            actions = self._drop(self._speculation)  # speech came back: not the end
            self._speculation = None
            return actions
        return []

    def queue_final(self, endpoint: Endpoint, detected_at: int, now: float) -> list[Action]:
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
        final = Final(
            endpoint.utterance,
            endpoint.start,
            endpoint.end,
            endpoint.audio,
            detected_at=detected_at,
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
                Job("final", endpoint.utterance, endpoint.start, endpoint.end, endpoint.audio),
                Priority.FINAL,
            )
            actions.append(action)
        self._finals.append(final)
        return actions

    def answered(self, key: int, inference: Inference) -> Job | None:
        """Record an answer; the job it answers (None: cancelled meanwhile). A speculation's
        answer is kept for its endpoint; a final's waits in the queue for its turn."""
        job = self._jobs.get(key)
        if job is None:
            return None
        if job.kind == "partial":
            del self._jobs[key]
            self._partial = None
            return job
        took = inference.queue_wait_s + inference.inference_s
        self.model_s = moving_average(self.model_s, took)
        if job.kind == "speculative":
            job.result = inference
            return job
        del self._jobs[key]
        for final in self._finals:
            if final.key == key:
                final.result, final.audio = inference, None
        return job

    def failed(self, key: int, error: StreamError) -> list[Action]:
        """An inference failed: a partial or a speculation is given up, a failed guess of a
        certain final is inferred the ordinary way; a final's failure raises ``error``."""
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
                    Job("final", final.utterance, final.start, final.end, final.audio),
                    Priority.FINAL,
                )
                return [action]
        error.utterance = job.utterance
        raise error

    def ready_finals(self) -> list[Final]:
        """The answered finals at the head of the queue, taken out in utterance order."""
        ready = []
        while self._finals and self._finals[0].result is not None:
            ready.append(self._finals.popleft())
        return ready

    def _infer(self, job: Job, priority: Priority) -> tuple[int, Infer]:
        key = self._keys
        self._keys += 1
        self._jobs[key] = job
        return key, Infer(key, job.audio, priority)

    def _drop(self, key: int) -> list[Action]:
        """Forget a job; cancel its inference if it is still in flight."""
        job = self._jobs.pop(key, None)
        return [Cancel(key)] if job is not None and job.result is None else []
