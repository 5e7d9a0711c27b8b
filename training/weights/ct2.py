"""The CTranslate2 Whisper model.bin reader: every variable as a numpy array, and the model's
sizes they record.

model.bin (little-endian): uint32 binary version, the spec name, uint32 spec revision, uint32
variable count, then per variable its name, uint8 rank, uint32 dims, uint8 dtype, uint32 byte
count and the bytes; then uint32 alias count and (alias, target) name pairs. A string is a
uint16 length followed by that many bytes, the last one NUL.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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

# Every released Whisper size uses 64-dimensional attention heads; only needed when a model.bin
# lacks its own num_heads scalars.
HEAD_DIM = 64


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


def scalar(variables: dict[str, np.ndarray], name: str, default: int | None = None) -> int:
    if name not in variables:
        if default is None:
            raise ValueError(f"the model has no {name}")
        return default
    return int(variables[name].reshape(()))


@dataclass(frozen=True)
class Dims:
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


def count_layers(variables: dict[str, np.ndarray], prefix: str) -> int:
    count = 0
    while f"{prefix}/layer_{count}/ffn/linear_0/weight" in variables:
        count += 1
    return count


def read_dims(variables: dict[str, np.ndarray]) -> Dims:
    vocab_size, d_model = variables["decoder/embeddings/weight"].shape
    # The model.bin records its head counts; d_model / 64 only for a file that does not.
    return Dims(
        d_model=d_model,
        n_mels=variables["encoder/conv1/weight"].shape[1],
        vocab_size=vocab_size,
        encoder_layers=count_layers(variables, "encoder"),
        decoder_layers=count_layers(variables, "decoder"),
        encoder_heads=scalar(variables, "encoder/num_heads", d_model // HEAD_DIM),
        decoder_heads=scalar(variables, "decoder/num_heads", d_model // HEAD_DIM),
        encoder_ffn=variables["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_ffn=variables["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=variables["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=variables["decoder/position_encodings/encodings"].shape[0],
    )
