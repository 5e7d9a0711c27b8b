"""A Triton Inference Server model repository for the same ONNX model (for users who outgrow one
machine): <repo>/<name>/config.pbtxt, <repo>/<name>/1/model.onnx, <repo>/<name>/labels.txt."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from emocore.model_dir import DIMENSIONS_OUTPUT, META_FILE, MODEL_FILE

MODEL_NAME = "emodistill"
MAX_BATCH_SIZE = 16
PREFERRED_BATCH_SIZES = (4, 8)
MAX_QUEUE_DELAY_US = 5_000  # like the service's max_wait_ms: bounded latency cost of batching
LABELS_FILE = "labels.txt"


def config_pbtxt(
    name: str,
    classes: int,
    embedding_dim: int,
    fixed_samples: int | None = None,
    dimensions: int = 0,
) -> str:
    """The model's config. Triton's dynamic batcher only puts requests of equal shapes into
    one batch (ragged batching needs a model that takes concatenated rows, which this one does
    not), so with variable-length ``audio`` (dims [-1], the default) it would batch almost
    nothing and only add its queue delay: there is no dynamic_batching, and clients send
    batches themselves (rows zero-padded to the longest, ``lengths`` = valid samples). With
    ``fixed_samples`` (clients that send fixed windows, e.g. 2 s streaming chunks) ``audio``
    is [fixed_samples] and the dynamic batcher groups concurrent requests. ``dimensions``: the
    length of the optional third output (0 = the model has none)."""
    # With max_batch_size > 0 Triton adds the batch axis itself: dims are per row. `lengths` is
    # one int64 per row, so it is [1] in Triton's view, reshaped to the graph's [batch].
    preferred = ", ".join(str(b) for b in PREFERRED_BATCH_SIZES)
    audio_dims = fixed_samples if fixed_samples else -1
    batching = (
        f"""dynamic_batching {{
  preferred_batch_size: [ {preferred} ]
  max_queue_delay_microseconds: {MAX_QUEUE_DELAY_US}
}}
"""
        if fixed_samples
        else "# no dynamic_batching: variable-length requests are batched by the client\n"
    )
    third = (
        f""",
  {{
    name: "{DIMENSIONS_OUTPUT}"
    data_type: TYPE_FP32
    dims: [ {dimensions} ]
  }}"""
        if dimensions
        else ""
    )
    return f"""name: "{name}"
platform: "onnxruntime_onnx"
max_batch_size: {MAX_BATCH_SIZE}
input [
  {{
    name: "audio"
    data_type: TYPE_FP32
    dims: [ {audio_dims} ]
  }},
  {{
    name: "lengths"
    data_type: TYPE_INT64
    dims: [ 1 ]
    reshape: {{ shape: [ ] }}
  }}
]
output [
  {{
    name: "logits"
    data_type: TYPE_FP32
    dims: [ {classes} ]
    label_filename: "{LABELS_FILE}"
  }},
  {{
    name: "embedding"
    data_type: TYPE_FP32
    dims: [ {embedding_dim} ]
  }}{third}
]
{batching}instance_group [ {{ count: 1, kind: KIND_AUTO }} ]
"""


def write_triton_repo(
    model_dir: Path, repo_dir: Path, name: str = MODEL_NAME, fixed_samples: int | None = None
) -> Path:
    """Write (or refresh) the model ``name`` in the repository ``repo_dir``; returns its folder.
    ``fixed_samples``: see ``config_pbtxt``."""
    meta = json.loads((model_dir / META_FILE).read_text())
    model = repo_dir / name
    (model / "1").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model_dir / MODEL_FILE, model / "1" / MODEL_FILE)
    (model / LABELS_FILE).write_text("".join(f"{label}\n" for label in meta["labels"]))
    dimensions = len((meta.get("dimensions") or {}).get("names", []))
    config = config_pbtxt(
        name, len(meta["labels"]), meta["embedding_dim"], fixed_samples, dimensions
    )
    (model / "config.pbtxt").write_text(config)
    return model
