"""An ONNX model's external-data references, checked by edgeopt before any runtime follows them.

An ONNX tensor may keep its bytes in another file (``data_location: EXTERNAL``, a ``location``
entry). A hostile model points that at ``../../secret``, an absolute path, a symbolic or a hard
link, and a runtime that follows it reads — or serves back — a file that was never part of the
model. Every such location must be a plain file beside the model.

The edge box has ONNX Runtime but not the ``onnx`` package (27 MB, and 37 MB of RSS and half a
second per process to import), so the model is read here through a minimal schema: the dozen
fields of ``onnx-ml.proto`` on the way from a ModelProto to a tensor's external data — graphs,
subgraphs in node attributes, sparse initializers, functions — with ONNX's own field numbers
(frozen by protobuf's compatibility rules). Every other field is skipped unparsed. A test checks
this reader against the ``onnx`` package on the same models.

Example:
    >>> references(b"")                       # an empty ModelProto: no tensor, nothing external
    []
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

from edgeopt.core.errors import ModelSourceError

EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL

# message -> [(field, number, type, label, message type)] — ONNX's own numbers (onnx-ml.proto)
SCHEMA = {
    "ModelProto": [("graph", 7, "message", "optional", "GraphProto"),
                   ("functions", 25, "message", "repeated", "FunctionProto")],
    "GraphProto": [("node", 1, "message", "repeated", "NodeProto"),
                   ("initializer", 5, "message", "repeated", "TensorProto"),
                   ("sparse_initializer", 15, "message", "repeated", "SparseTensorProto")],
    "FunctionProto": [("node", 7, "message", "repeated", "NodeProto")],
    "NodeProto": [("attribute", 5, "message", "repeated", "AttributeProto")],
    "AttributeProto": [("t", 5, "message", "optional", "TensorProto"), ("g", 6, "message", "optional", "GraphProto"),
                       ("tensors", 10, "message", "repeated", "TensorProto"),
                       ("graphs", 11, "message", "repeated", "GraphProto"),
                       ("sparse_tensor", 22, "message", "optional", "SparseTensorProto"),
                       ("sparse_tensors", 23, "message", "repeated", "SparseTensorProto")],
    "SparseTensorProto": [("values", 1, "message", "optional", "TensorProto"),
                          ("indices", 2, "message", "optional", "TensorProto")],
    "TensorProto": [("name", 8, "string", "optional", None),
                    ("external_data", 13, "message", "repeated", "StringStringEntryProto"),
                    ("data_location", 14, "int32", "optional", None)],
    "StringStringEntryProto": [("key", 1, "string", "optional", None), ("value", 2, "string", "optional", None)],
}


@lru_cache(maxsize=1)
def _model_class() -> Any:
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    kinds = {"message": descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE,
             "string": descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
             "int32": descriptor_pb2.FieldDescriptorProto.TYPE_INT32}
    labels = {"optional": descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
              "repeated": descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED}
    schema = descriptor_pb2.FileDescriptorProto(name="edgeopt_onnx_refs.proto", package="edgeopt_onnx_refs",
                                                syntax="proto2")
    for message, fields in SCHEMA.items():
        described = schema.message_type.add(name=message)
        for name, number, kind, label, type_name in fields:
            field = described.field.add(name=name, number=number, type=kinds[kind], label=labels[label])
            if type_name:
                field.type_name = f".edgeopt_onnx_refs.{type_name}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(schema)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("edgeopt_onnx_refs.ModelProto"))


def references(data: bytes) -> list[tuple[str, str]]:
    """(tensor name, location) of every tensor in the serialized model ``data`` that keeps its bytes elsewhere.

    Raises ``ValueError`` when ``data`` does not parse as a protobuf message."""
    try:
        from google.protobuf.message import DecodeError
    except ImportError:  # ONNX Runtime depends on protobuf; an OpenVINO-only box may lack it
        raise ModelSourceError("checking an ONNX model's external data needs protobuf: pip install protobuf") from None
    model = _model_class()()
    try:
        model.ParseFromString(data)
    except (DecodeError, RecursionError) as exc:
        raise ValueError(f"not an ONNX model ({exc})") from None
    found = []
    for tensor in all_tensors(model):
        if tensor.data_location == EXTERNAL:
            location = next((entry.value for entry in tensor.external_data if entry.key == "location"), "")
            found.append((tensor.name, location))
    return found


def all_tensors(model: Any) -> Iterator[Any]:
    """Every TensorProto a runtime may read data for (of this schema's model or of an ``onnx.ModelProto``):
    initializers and sparse initializers of the graph and of every subgraph (If, Loop, Scan), and tensors
    held by node attributes, in functions too."""
    def in_graph(graph: Any) -> Iterator[Any]:
        yield from graph.initializer
        for sparse in graph.sparse_initializer:
            yield from (sparse.values, sparse.indices)
        yield from in_nodes(graph.node)

    def in_nodes(nodes: Any) -> Iterator[Any]:
        for node in nodes:
            for attribute in node.attribute:
                yield from ([attribute.t] if attribute.HasField("t") else [])
                yield from attribute.tensors
                for sparse in [*([attribute.sparse_tensor] if attribute.HasField("sparse_tensor") else []),
                               *attribute.sparse_tensors]:
                    yield from (sparse.values, sparse.indices)
                for graph in [*([attribute.g] if attribute.HasField("g") else []), *attribute.graphs]:
                    yield from in_graph(graph)

    yield from in_graph(model.graph)
    for function in model.functions:
        yield from in_nodes(function.node)


def check_external_data(path: str | os.PathLike) -> None:
    """ModelSourceError unless every external-data location of the ONNX model at ``path`` is a plain file in
    its folder: not absolute, no ``..``, no symlink, no hard link, present."""
    path = Path(path)
    try:
        found = references(path.read_bytes())
    except ValueError as exc:
        raise NotOnnx(f"{path} is not a valid ONNX model ({exc}); the file may be truncated or corrupt: export "
                      "it again") from None
    folder = path.resolve().parent
    for name, location in found:
        reason = _escapes(location, folder)
        if reason:
            raise ModelSourceError(f"{path}: tensor {name!r} keeps its data at {location!r}, {reason}; external "
                                   "data must be a plain file beside the model")


class NotOnnx(ModelSourceError):
    """The bytes do not parse as an ONNX model."""


def _escapes(location: str, folder: Path) -> str | None:
    if not location or os.path.isabs(location) or location.startswith(("/", "\\")):
        return "an absolute path"
    if ".." in location.replace("\\", "/").split("/"):
        return "outside the model's folder"
    target = folder / location
    if target.is_symlink():
        return "a symbolic link"
    if not target.is_file():
        return "a file that does not exist"
    if not target.resolve().is_relative_to(folder):
        return "outside the model's folder"
    if target.stat().st_nlink > 1:
        return "a hard link to another file"
    return None
