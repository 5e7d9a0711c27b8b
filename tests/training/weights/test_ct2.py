"""The CTranslate2 model.bin reader (training/weights/ct2.py): files written from the format
description, and a real bundle."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from tests.training.weights.installed import locate
from training.weights.ct2 import read_ct2


def _string(text: str) -> bytes:
    raw = text.encode() + b"\0"
    return struct.pack("<H", len(raw)) + raw


def _model_bin(
    variables: dict[str, tuple[int, np.ndarray]],
    aliases: tuple[tuple[str, str], ...] = (),
    spec: str = "WhisperSpec",
    version: int = 6,
    revision: int = 3,
) -> bytes:
    """A model.bin written from the format description; variables: name -> (dtype id, array)."""
    out = [struct.pack("<I", version), _string(spec), struct.pack("<II", revision, len(variables))]
    for name, (type_id, array) in variables.items():
        out += [
            _string(name),
            struct.pack(f"<B{array.ndim}I", array.ndim, *array.shape),
            struct.pack("<BI", type_id, array.nbytes),
            array.tobytes(),
        ]
    out.append(struct.pack("<I", len(aliases)))
    out += [_string(alias) + _string(target) for alias, target in aliases]
    return b"".join(out)


def test_read_ct2_reads_back_what_was_written(tmp_path):
    conv = np.arange(6, dtype=np.float16).reshape(2, 3, 1) / 8
    gamma = np.array([1.5, -2.0, 0.1, 3e-8], dtype=np.float32)
    exact = np.array([1.0, -2.5, 0.15625, 65536.0], dtype=np.float32)  # exact in bfloat16
    bfloat16 = (exact.view(np.uint32) >> 16).astype(np.uint16)
    data = _model_bin(
        {
            "encoder/conv1/weight": (4, conv),
            "decoder/layer_norm/gamma": (0, gamma),
            "decoder/num_heads": (2, np.array(6, dtype=np.int16)),
            "decoder/activation": (1, np.array(3, dtype=np.int8)),
            "decoder/bf16": (5, bfloat16),
        },
        aliases=(("decoder/projection/weight", "encoder/conv1/weight"),),
    )
    (tmp_path / "model.bin").write_bytes(data)
    variables = read_ct2(tmp_path / "model.bin")

    assert list(variables) == [
        "encoder/conv1/weight",
        "decoder/layer_norm/gamma",
        "decoder/num_heads",
        "decoder/activation",
        "decoder/bf16",
        "decoder/projection/weight",
    ]
    assert variables["encoder/conv1/weight"].dtype == np.float16
    np.testing.assert_array_equal(variables["encoder/conv1/weight"], conv)
    assert variables["decoder/layer_norm/gamma"].dtype == np.float32
    np.testing.assert_array_equal(variables["decoder/layer_norm/gamma"], gamma)
    assert variables["decoder/num_heads"].shape == () and int(variables["decoder/num_heads"]) == 6
    assert int(variables["decoder/activation"]) == 3
    np.testing.assert_array_equal(variables["decoder/bf16"], exact)
    assert variables["decoder/projection/weight"] is variables["encoder/conv1/weight"]

    # The same file split in two (as wheels under PyPI's size limit ship it) reads the same.
    (tmp_path / "model.bin.part1").write_bytes(data[:77])
    (tmp_path / "model.bin.part2").write_bytes(data[77:])
    parts = read_ct2([tmp_path / "model.bin.part1", tmp_path / "model.bin.part2"])
    for name, value in variables.items():
        np.testing.assert_array_equal(parts[name], value)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(spec="TransformerSpec"), "holds a 'TransformerSpec' model, not a WhisperSpec"),
        (dict(version=5), "binary version 6 .read 5."),
        (dict(revision=9), "revision 9"),
        (dict(variables={"x": (9, np.zeros(2, np.float32))}), "dtype id 9"),
    ],
)
def test_read_ct2_rejects_other_files(tmp_path, change, message):
    arguments = dict(variables={"x": (0, np.zeros(2, np.float32))}) | change
    (tmp_path / "model.bin").write_bytes(_model_bin(**arguments))
    with pytest.raises(ValueError, match=message):
        read_ct2(tmp_path / "model.bin")


def test_read_ct2_rejects_truncated_and_padded_files(tmp_path):
    data = _model_bin({"x": (0, np.arange(100, dtype=np.float32))})
    (tmp_path / "short.bin").write_bytes(data[:-10])
    with pytest.raises(ValueError, match="truncated"):
        read_ct2(tmp_path / "short.bin")
    (tmp_path / "long.bin").write_bytes(data + b"\0" * 4)
    with pytest.raises(ValueError, match="4 bytes follow"):
        read_ct2(tmp_path / "long.bin")


def test_read_ct2_real_bundle():
    bundle_dir, parts = locate("whisper-tiny.en")
    variables = read_ct2(parts)
    assert variables["decoder/embeddings/weight"].shape == (51864, 384)
    assert variables["decoder/embeddings/weight"].dtype == np.float16
    assert variables["encoder/conv1/weight"].shape == (384, 80, 3)
    # q, k and v fused in self-attention; k and v fused in cross-attention.
    assert variables["encoder/layer_3/self_attention/linear_0/weight"].shape == (3 * 384, 384)
    assert variables["decoder/layer_3/attention/linear_1/weight"].shape == (2 * 384, 384)
    assert int(variables["encoder/num_heads"]) == int(variables["decoder/num_heads"]) == 6
    assert variables["decoder/projection/weight"] is variables["decoder/embeddings/weight"]
