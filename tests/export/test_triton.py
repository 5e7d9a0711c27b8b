"""The Triton config parses as protobuf text against Triton's own field names and numbers.

tritonclient (which ships model_config_pb2) would pin ml_dtypes below what onnx uses here, so the
test builds the used subset of Triton's model_config.proto (same names, numbers and types)."""

import hashlib
import json

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format

from export.triton import LABELS_FILE, write_triton_repo

F = descriptor_pb2.FieldDescriptorProto
DATA_TYPES = {"TYPE_INVALID": 0, "TYPE_INT64": 9, "TYPE_FP32": 11}
INSTANCE_KINDS = {"KIND_AUTO": 0, "KIND_GPU": 1, "KIND_CPU": 2}
MESSAGES = {  # message: [(field, number, type, label, type_name)]
    "ModelTensorReshape": [("shape", 1, F.TYPE_INT64, F.LABEL_REPEATED, None)],
    "ModelInput": [
        ("name", 1, F.TYPE_STRING, F.LABEL_OPTIONAL, None),
        ("data_type", 2, F.TYPE_ENUM, F.LABEL_OPTIONAL, ".inference.DataType"),
        ("dims", 4, F.TYPE_INT64, F.LABEL_REPEATED, None),
        ("reshape", 5, F.TYPE_MESSAGE, F.LABEL_OPTIONAL, ".inference.ModelTensorReshape"),
    ],
    "ModelOutput": [
        ("name", 1, F.TYPE_STRING, F.LABEL_OPTIONAL, None),
        ("data_type", 2, F.TYPE_ENUM, F.LABEL_OPTIONAL, ".inference.DataType"),
        ("dims", 3, F.TYPE_INT64, F.LABEL_REPEATED, None),
        ("label_filename", 4, F.TYPE_STRING, F.LABEL_OPTIONAL, None),
        ("reshape", 5, F.TYPE_MESSAGE, F.LABEL_OPTIONAL, ".inference.ModelTensorReshape"),
    ],
    "ModelDynamicBatching": [
        ("preferred_batch_size", 1, F.TYPE_INT32, F.LABEL_REPEATED, None),
        ("max_queue_delay_microseconds", 2, F.TYPE_UINT64, F.LABEL_OPTIONAL, None),
    ],
    "ModelInstanceGroup": [
        ("count", 2, F.TYPE_INT32, F.LABEL_OPTIONAL, None),
        ("kind", 4, F.TYPE_ENUM, F.LABEL_OPTIONAL, ".inference.InstanceKind"),
    ],
    "ModelConfig": [
        ("name", 1, F.TYPE_STRING, F.LABEL_OPTIONAL, None),
        ("platform", 2, F.TYPE_STRING, F.LABEL_OPTIONAL, None),
        ("max_batch_size", 4, F.TYPE_INT32, F.LABEL_OPTIONAL, None),
        ("input", 5, F.TYPE_MESSAGE, F.LABEL_REPEATED, ".inference.ModelInput"),
        ("output", 6, F.TYPE_MESSAGE, F.LABEL_REPEATED, ".inference.ModelOutput"),
        ("instance_group", 7, F.TYPE_MESSAGE, F.LABEL_REPEATED, ".inference.ModelInstanceGroup"),
        ("dynamic_batching", 11, F.TYPE_MESSAGE, F.LABEL_OPTIONAL, ".inference.ModelDynamicBatching"),
    ],
}  # fmt: skip


def model_config_class():
    file = descriptor_pb2.FileDescriptorProto(name="model_config_subset.proto", package="inference")
    for enum_name, values in (("DataType", DATA_TYPES), ("InstanceKind", INSTANCE_KINDS)):
        enum = file.enum_type.add(name=enum_name)
        for value_name, number in values.items():
            enum.value.add(name=value_name, number=number)
    for message_name, fields in MESSAGES.items():
        message = file.message_type.add(name=message_name)
        for name, number, kind, label, type_name in fields:
            field = message.field.add(name=name, number=number, type=kind, label=label)
            if type_name:
                field.type_name = type_name
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("inference.ModelConfig"))


@pytest.fixture(scope="module")
def triton_model(student_and_dir, tmp_path_factory):
    _, model_dir = student_and_dir
    return model_dir, write_triton_repo(model_dir, tmp_path_factory.mktemp("triton"))


def test_config_parses_and_names_the_graph_tensors(triton_model):
    model_dir, model = triton_model
    meta = json.loads((model_dir / "model.json").read_text())
    config = text_format.Parse((model / "config.pbtxt").read_text(), model_config_class()())
    assert config.platform == "onnxruntime_onnx"
    assert config.max_batch_size > 0
    # Variable-length audio: Triton would only batch requests of equal length, so
    # there is no dynamic batcher; clients send padded batches with lengths.
    assert not config.HasField("dynamic_batching")
    inputs = {i.name: i for i in config.input}
    outputs = {o.name: o for o in config.output}
    assert list(inputs) == ["audio", "lengths"] and list(outputs) == ["logits", "embedding"]
    assert list(inputs["audio"].dims) == [-1]
    assert list(inputs["lengths"].dims) == [1] and list(inputs["lengths"].reshape.shape) == []
    assert list(outputs["logits"].dims) == [len(meta["labels"])]
    assert list(outputs["embedding"].dims) == [meta["embedding_dim"]]
    labels = (model / outputs["logits"].label_filename).read_text().splitlines()
    assert labels == meta["labels"] and outputs["logits"].label_filename == LABELS_FILE


def test_repository_holds_the_same_model(triton_model):
    model_dir, model = triton_model
    meta = json.loads((model_dir / "model.json").read_text())
    digest = hashlib.sha256((model / "1" / "model.onnx").read_bytes()).hexdigest()
    assert digest == meta["files"]["model.onnx"]["sha256"]


def test_unknown_field_is_rejected():
    """The check has teeth: a misspelt field fails to parse."""
    with pytest.raises(text_format.ParseError):
        text_format.Parse('platfrom: "onnxruntime_onnx"', model_config_class()())


def test_fixed_length_windows_get_the_dynamic_batcher(student_and_dir, tmp_path):
    _, model_dir = student_and_dir
    model = write_triton_repo(model_dir, tmp_path, fixed_samples=32_000)
    config = text_format.Parse((model / "config.pbtxt").read_text(), model_config_class()())
    assert list(config.input[0].dims) == [32_000]
    assert config.dynamic_batching.max_queue_delay_microseconds > 0
