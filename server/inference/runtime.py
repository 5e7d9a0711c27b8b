"""The ONNX Runtime session: provider choice, input checks, padded batch inference."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import onnxruntime as ort

from emocore.model_dir import (
    DIMENSIONS_OUTPUT,
    INPUT_NAMES,
    META_FILE,
    OUTPUT_NAMES,
    ModelDir,
    ModelDirError,
    load_model_dir,
    pad_batch,
)
from server.settings import Settings

log = logging.getLogger("emodistill.runtime")

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
# cuDNN's default EXHAUSTIVE search re-benchmarks conv algorithms for every new input shape,
# i.e. for every new utterance length; HEURISTIC picks one without timing runs.
CUDA_OPTIONS = {"cudnn_conv_algo_search": "HEURISTIC"}
WARMUP_SECONDS = 1.0


class ProviderError(RuntimeError):
    """The requested execution provider cannot be had (never a silent fallback)."""


def requested_providers(device: str, available: Sequence[str]) -> list:
    """Providers to ask ONNX Runtime for, given ``device`` and ``ort.get_available_providers()``."""
    if device == "cpu":
        return [CPU]
    if CUDA not in available:
        if device == "cuda":
            raise ProviderError(
                "EMODISTILL_DEVICE=cuda, but this onnxruntime build has no CUDAExecutionProvider "
                f"(available: {', '.join(available)}); install onnxruntime-gpu or use device=auto|cpu"
            )
        return [CPU]
    return [(CUDA, CUDA_OPTIONS), CPU]


def active_provider(device: str, session_providers: Sequence[str]) -> str:
    """The provider a created session really uses.

    onnxruntime-gpu lists CUDA even where CUDA libraries are missing and then quietly runs on
    CPU: only ``session.get_providers()`` after creation tells the truth.
    """
    provider = session_providers[0] if session_providers else CPU
    if device == "cuda" and provider != CUDA:
        raise ProviderError(
            "EMODISTILL_DEVICE=cuda, but ONNX Runtime could not initialise CUDA and fell back to "
            f"{provider} (check the CUDA and cuDNN libraries in its log above)"
        )
    return provider


def session_options(threads: int, spinning: bool = True) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads  # 0 = ONNX Runtime's default: one per core
    options.inter_op_num_threads = 1  # the graph is one chain; parallelism is inside ops
    options.log_severity_level = 3
    # Worker threads spin-wait for the next operator's work within a run (ONNX Runtime's
    # default: the fastest run) and stop at its end: left spinning after it, they held the cores
    # that the event loop, the client and the next request needed (docs/api.md, "One request,
    # stage by stage"). Or never spin (``spinning`` false: slower runs).
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    if spinning:
        options.add_session_config_entry("session.force_spinning_stop", "1")
    return options


class Outputs(NamedTuple):
    """One padded batch's answers, row per utterance."""

    logits: np.ndarray  # [B, C]
    embedding: np.ndarray  # [B, D]
    dimensions: np.ndarray | None = None  # [B, len(names)]; None: the model has none


class Runtime:
    """One ONNX Runtime session over a validated model directory."""

    def __init__(self, model: ModelDir, session: ort.InferenceSession, provider: str):
        self.model = model
        self.session = session
        self.provider = provider
        self.labels: list[str] = model.labels
        self.meta: dict = model.meta
        self.dimensions = model.dimensions
        # Only the outputs model.json declares are run: a graph's undeclared extras cost nothing.
        self._outputs = list(OUTPUT_NAMES) + ([DIMENSIONS_OUTPUT] if self.dimensions else [])
        self._io_binding = provider == CUDA
        self._check_io()

    @classmethod
    def load(
        cls,
        model_dir: str | Path,
        *,
        device: str = "auto",
        int8: bool | None = False,
        threads: int = 0,
        spinning: bool = True,
    ) -> Runtime:
        """``int8`` None: the int8 model when its export accepted it (EMODISTILL_INT8=auto)."""
        model = load_model_dir(model_dir, int8=int8)
        providers = requested_providers(device, ort.get_available_providers())
        try:
            session = ort.InferenceSession(
                str(model.onnx_path), session_options(threads, spinning), providers=providers
            )
        except Exception as exc:  # ORT raises its own exception types for bad graphs
            raise ModelDirError(f"ONNX Runtime cannot load {model.onnx_path}: {exc}") from None
        provider = active_provider(device, session.get_providers())
        if device == "auto" and providers[0] != CPU and provider != CUDA:
            log.warning("CUDAExecutionProvider is listed but unusable; serving on %s", provider)
        log.info(
            "model %s (%s, %d labels) on %s, %s threads",
            model.onnx_path,
            model.meta.get("backbone", "?"),
            len(model.labels),
            provider,
            threads or os.cpu_count(),
        )
        return cls(model, session, provider)

    @classmethod
    def from_settings(cls, settings: Settings) -> Runtime:
        """The server's model directory, device, precision and threads."""
        return cls.load(
            settings.model_dir,
            device=settings.device,
            int8=settings.int8_choice,
            threads=settings.threads,
            spinning=settings.ort_spinning,
        )

    def _check_io(self) -> None:
        inputs = {i.name for i in self.session.get_inputs()}
        outputs = {o.name for o in self.session.get_outputs()}
        if not (set(INPUT_NAMES) <= inputs and set(OUTPUT_NAMES) <= outputs):
            raise ModelDirError(
                f"{self.model.onnx_path} has inputs {sorted(inputs)} and outputs {sorted(outputs)}; "
                f"expected inputs {list(INPUT_NAMES)} and outputs {list(OUTPUT_NAMES)}"
            )
        if self.dimensions is not None:
            self._check_dimensions_output()

    def _check_dimensions_output(self) -> None:
        """model.json promises dimensions: the graph must have them, float [batch, len(names)]."""
        assert self.dimensions is not None
        width = len(self.dimensions.names)
        found = {o.name: o for o in self.session.get_outputs()}
        where = f"{self.model.path / META_FILE} declares dimensions {list(self.dimensions.names)}"
        if DIMENSIONS_OUTPUT not in found:
            raise ModelDirError(
                f"{where}, but {self.model.onnx_path.name} has no {DIMENSIONS_OUTPUT!r} output "
                f"(outputs: {sorted(found)}); re-export the model or remove the key"
            )
        output = found[DIMENSIONS_OUTPUT]
        shape = list(output.shape)
        if not (len(shape) == 2 and isinstance(shape[1], int)):  # a symbolic width: ask the graph
            probe = np.full(self.min_samples, 0.1, np.float32)
            probe[::2] = -0.1
            shape = ["batch", *self.run_clips([probe]).dimensions.shape[1:]]
        if output.type != "tensor(float)" or len(shape) != 2 or shape[1] != width:
            raise ModelDirError(
                f"{where}, but its {DIMENSIONS_OUTPUT!r} output is {output.type} {shape}; "
                f"expected tensor(float) [batch, {width}]"
            )

    @property
    def min_samples(self) -> int:
        return self.model.min_samples

    @property
    def dimension_names(self) -> tuple[str, ...] | None:
        """model.json's dimension names in output order; None: the model has none."""
        return self.dimensions.names if self.dimensions else None

    def check_settings(self, settings: Settings) -> None:
        """Refuse limits the model cannot honour (a 60 s clip for a 30 s Whisper encoder would
        otherwise fail at inference, as a 5xx)."""
        self.model.check_limits(
            EMODISTILL_MAX_SECONDS=settings.max_seconds,
            EMODISTILL_STREAM_MAX_UTTERANCE_S=settings.stream_max_utterance_s,
        )

    @property
    def batch_invariant(self) -> bool:
        return self.model.batch_invariant

    def run(self, audio: np.ndarray, lengths: np.ndarray) -> Outputs:
        """Padded audio [B, T] + lengths [B] -> logits [B, C], embedding [B, D] and, when
        model.json declares them, dimensions [B, len(names)]."""
        feeds = {
            "audio": np.ascontiguousarray(audio, np.float32),
            "lengths": lengths.astype(np.int64),
        }
        if not self._io_binding:
            return Outputs(*self.session.run(self._outputs, feeds))
        # On CUDA, bind inputs and outputs explicitly: one host->device copy per input and
        # no ORT-side output reallocation between calls.
        binding = self.session.io_binding()
        for name, value in feeds.items():
            binding.bind_cpu_input(name, value)
        for name in self._outputs:
            binding.bind_output(name)
        self.session.run_with_iobinding(binding)
        return Outputs(*binding.copy_outputs_to_cpu())

    def run_clips(self, clips: Sequence[np.ndarray]) -> Outputs:
        return self.run(*pad_batch(clips))

    def use_io_binding(self, enabled: bool) -> None:
        """Force the I/O-binding path (tests exercise the CUDA code path on CPU with it)."""
        self._io_binding = enabled

    def warm_up(self, batch_size: int) -> tuple[int, float]:
        """Run the shapes serving will see first, so the first request pays no initialisation.
        Returns the full batch's samples and seconds: a first (cautious: it includes the
        initialisation) figure of the inference speed."""
        clip = np.zeros(int(WARMUP_SECONDS * self.model.sample_rate), dtype=np.float32)
        clip[::97] = 0.1  # not all zeros: per-utterance normalisation divides by the spread
        started = time.perf_counter()
        self.run_clips([clip] * batch_size)
        elapsed = time.perf_counter() - started
        self.run_clips([clip[: self.min_samples]])
        return clip.shape[0] * batch_size, elapsed
