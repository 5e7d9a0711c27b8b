"""CTranslate2 Whisper bundle -> transformers Whisper checkpoint: the weights mapped to
``WhisperForConditionalGeneration``'s names, written with the configs and tokenizer into a folder
that ``WhisperForConditionalGeneration``, ``AutoConfig``, ``AutoTokenizer``,
``WhisperFeatureExtractor`` and ``AutoProcessor`` load with ``from_pretrained`` and no network.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from training.weights.configs import bpe_files, checkpoint_configs, complete_tokenizer
from training.weights.ct2 import Dims, read_ct2, read_dims, scalar

_GELU = 3  # CTranslate2's Activation.GELU

MARKER = "conversion.json"
MODEL_BIN = "model.bin"
WEIGHTS = "model.safetensors"


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
        if name in variables and scalar(variables, name) != value:
            raise ValueError(
                f"{name} is {scalar(variables, name)}, expected {value}: not a Whisper "
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


class _Tracked(dict):
    """Remembers which variables were read, so that a model with weights the mapping does not
    know is refused instead of converted without them."""

    def __init__(self, variables: dict[str, np.ndarray]):
        super().__init__(variables)
        self.read: set[str] = set()

    def __getitem__(self, name: str) -> np.ndarray:
        self.read.add(name)
        return super().__getitem__(name)


def _state_dict(ct2: dict[str, np.ndarray], dims: Dims) -> tuple[dict, bool]:
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
    dims = read_dims(variables)
    weights, tied = _state_dict(variables, dims)
    del variables
    bundle_config = json.loads((bundle_dir / "config.json").read_text(encoding="utf-8"))
    tokenizer = complete_tokenizer(bundle_dir, dims.vocab_size)
    # float32 on disk: transformers 5 loads a checkpoint in its stored dtype by default, and a
    # float16 Whisper on CPU is slow and drifts from the reference; widening float16 is exact.
    save_file(weights, str(folder / WEIGHTS), metadata={"format": "pt"})
    texts = {
        name: json.dumps(value, indent=2) + "\n"
        for name, value in checkpoint_configs(dims, tied, bundle_config, tokenizer).items()
    }
    texts["tokenizer.json"] = json.dumps(tokenizer, ensure_ascii=False)
    texts |= bpe_files(tokenizer)
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
