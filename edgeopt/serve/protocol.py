"""Open Inference Protocol v2 tensors: JSON bodies and the binary-tensor extension.

A request is JSON (``{"inputs": [{"name", "shape", "datatype", "data"}], "outputs": [...]}``)
or, with the binary extension, that JSON followed by raw little-endian tensor bytes, the
JSON's length given in the ``Inference-Header-Content-Length`` header and each binary
input's byte count in its ``parameters.binary_data_size`` (what Triton's and KServe's
clients send). Responses mirror it: an output asked for with ``binary_data`` (or all of
them with ``binary_data_output``) comes back as bytes after the JSON.

Every malformed request is one InputError naming the field at fault. A JSON body is measured before it
is parsed (``json_extent``): nesting past ``MAX_JSON_DEPTH`` is refused, and so is one holding more values
than the caller allows, because Python's objects for a JSON number list cost ten to forty times its text.

Example:
    >>> body = b'{"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}'
    >>> request = parse_request(body, None)
    >>> request.inputs["x"].tolist()
    [[1.0, 2.0]]
    >>> json.loads(encode_response("m", "1", None, [("y", np.ones((1, 1), np.float32))], request)[0])["outputs"]
    [{'name': 'y', 'datatype': 'FP32', 'shape': [1, 1], 'data': [1.0]}]
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeopt.core.errors import InputError
from edgeopt.runtime.http import TooLarge

HEADER_LENGTH = "Inference-Header-Content-Length"
DATATYPES = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
    "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
    "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
}
MAX_ELEMENTS = 1 << 28  # a declared shape past this is refused before anything is allocated
# A request is an object, a list of inputs, each an object whose data nests as deep as its tensor's rank:
# 32 leaves room for any tensor while Python's parser recursion (1,000) is never reached.
MAX_JSON_DEPTH = 32
SCAN_CHUNK = 1 << 20  # json_extent works through a body this many bytes at a time: a few MB of scratch at most


def datatype_of(dtype: np.dtype | str) -> str:
    """The protocol's name for a numpy dtype (``float32`` -> ``FP32``)."""
    dtype = np.dtype(dtype)
    for name, kind in DATATYPES.items():
        if np.dtype(kind) == dtype:
            return name
    raise InputError(f"dtype {dtype} has no Open Inference Protocol datatype")


@dataclass
class InferRequest:
    """A parsed infer request: its id, input arrays by name, and how each output is wanted."""

    id: str | None
    inputs: dict[str, np.ndarray]
    outputs: list[str] | None = None  # names asked for; None = all
    binary_outputs: set[str] = field(default_factory=set)
    binary_by_default: bool = False


def parse_request(body: bytes, header_length: str | None, max_values: int | None = None) -> InferRequest:
    """``body`` (JSON, or JSON + binary tensors when ``header_length`` is given) as an InferRequest.

    ``max_values``: the most JSON values (numbers, strings, lists, ...) the request may hold; more is
    refused with ``TooLarge`` before any of them is built."""
    json_part, binary = _split(body, header_length)
    depth, values = json_bounds(json_part)
    if depth > MAX_JSON_DEPTH or (max_values is not None and values > max_values):
        depth, values = json_extent(json_part)  # the bounds alone cannot clear it: measure
    if depth > MAX_JSON_DEPTH:
        raise InputError(f"the request's JSON nests {depth} levels deep, past the {MAX_JSON_DEPTH} this server "
                         "reads; send each tensor's data as a flat list (row-major), or nested as its shape")
    if max_values is not None and values > max_values:
        raise TooLarge(f"the request's JSON holds about {values:,} values, more than this model takes in one "
                       f"request ({max_values:,}); send fewer samples per request, or large batches with the binary "
                       "tensor extension")
    try:
        request = json.loads(json_part.decode("utf-8"))  # UTF-8 only: what json_extent measured is what is parsed
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InputError(f"the request body is not valid JSON ({str(exc)[:200]}); send an Open Inference Protocol "
                         "v2 infer request") from None
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list) or not request["inputs"]:
        raise InputError('the request needs "inputs": a non-empty list of tensors')
    inputs, offset = {}, 0
    for position, tensor in enumerate(request["inputs"]):
        name, array, offset = _input_tensor(tensor, position, binary, offset)
        inputs[name] = array
    if offset != len(binary):
        raise InputError(f"the body has {len(binary) - offset} binary bytes that no input claims")
    parameters = _dict(request.get("parameters"), "parameters")
    outputs, binary_outputs = _outputs(request.get("outputs"))
    request_id = request.get("id")
    return InferRequest(id=None if request_id is None else str(request_id), inputs=inputs, outputs=outputs,
                        binary_outputs=binary_outputs, binary_by_default=bool(parameters.get("binary_data_output")))


def encode_response(model: str, version: str, request_id: str | None, outputs: list[tuple[str, np.ndarray]],
                    request: InferRequest, parameters: dict[str, Any] | None = None) -> tuple[bytes, int | None]:
    """The response body and, when some output travels as binary, the JSON header's length. ``parameters``:
    the response's own (the protocol's ``parameters`` object; a ladder says which rung answered)."""
    tensors, blobs = [], []
    for name, array in outputs:
        array = np.ascontiguousarray(array)
        tensor: dict[str, Any] = {"name": name, "datatype": datatype_of(array.dtype), "shape": list(array.shape)}
        if name in request.binary_outputs or (request.binary_by_default and name not in _json_asked(request)):
            blob = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
            tensor["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            tensor["data"] = array.reshape(-1).tolist()
        tensors.append(tensor)
    response: dict[str, Any] = {"model_name": model, "model_version": version, "outputs": tensors}
    if request_id is not None:
        response["id"] = request_id
    if parameters:
        response["parameters"] = parameters
    header = json.dumps(response).encode()
    if not blobs:
        return header, None
    return header + b"".join(blobs), len(header)


def json_bounds(text: bytes) -> tuple[int, int]:
    """Upper bounds of what ``json_extent`` measures, from byte counts alone (brackets and commas inside strings
    counted too): a binary request's small header clears them in a microsecond, where the exact scan costs ~20.

    >>> json_bounds(b'{"a": [[1, 2], [3, 4]], "b": "[[[,"}')
    (7, 12)
    """
    opens = text.count(b"[") + text.count(b"{")
    return opens, opens + text.count(b",")


def json_extent(text: bytes) -> tuple[int, int]:
    """How deep ``text``'s JSON nests and about how many values it holds, measured without parsing it.

    Values are counted as commas plus containers opened, outside strings: every list item or object member
    but a container's first follows a comma, so a parser builds at most about twice this many objects (an
    object's keys included). Numpy goes over the bytes ``SCAN_CHUNK`` at a time (32 MB in well under a
    second, a few MB of scratch). Escaped characters are dropped first, so a ``\\"`` inside a string never
    reads as its end; in UTF-8 no byte of a multi-byte character is a quote, bracket or comma.

    >>> json_extent(b'{"a": [[1, 2], [3, 4]], "b": "[[[,"}')
    (3, 8)
    """
    if b"\\" in text:
        text = text.replace(b"\\\\", b"").replace(b'\\"', b"")  # escapes pair up left to right, as JSON reads them
    data = np.frombuffer(text, np.uint8)
    depth = deepest = values = 0
    in_string = False
    for start in range(0, len(data), SCAN_CHUNK):
        chunk = data[start:start + SCAN_CHUNK]
        inside = (np.cumsum(chunk == ord('"'), dtype=np.int32) & 1).astype(bool) ^ in_string
        outside = ~inside
        opens = outside & ((chunk == ord("[")) | (chunk == ord("{")))
        closes = outside & ((chunk == ord("]")) | (chunk == ord("}")))
        levels = depth + np.cumsum(opens.astype(np.int8) - closes.astype(np.int8), dtype=np.int32)
        deepest, depth = max(deepest, int(levels.max())), int(levels[-1])
        values += int(np.count_nonzero(opens)) + int(np.count_nonzero(outside & (chunk == ord(","))))
        in_string = bool(inside[-1])
    return deepest, values


def _json_asked(request: InferRequest) -> set[str]:
    return set(request.outputs or ()) - request.binary_outputs if request.outputs else set()


def _split(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    if header_length is None:
        return body, b""
    try:
        length = int(header_length)
    except ValueError:
        raise InputError(f"{HEADER_LENGTH} must be an integer, got {header_length!r}") from None
    if not 0 < length <= len(body):
        raise InputError(f"{HEADER_LENGTH} is {length} but the body has {len(body)} bytes")
    return body[:length], body[length:]


def _input_tensor(tensor: Any, position: int, binary: bytes, offset: int) -> tuple[str, np.ndarray, int]:
    if not isinstance(tensor, dict):
        raise InputError(f"inputs[{position}] must be an object with name, shape, datatype and data")
    name = tensor.get("name")
    if not isinstance(name, str) or not name:
        raise InputError(f"inputs[{position}] needs a name")
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise InputError(f"input {name!r}: shape must be a list of non-negative integers, got {shape!r}")
    count = math.prod(shape)
    if count > MAX_ELEMENTS:
        raise InputError(f"input {name!r}: shape {shape} has {count:,} elements, over the {MAX_ELEMENTS:,} limit")
    datatype = tensor.get("datatype")
    if datatype not in DATATYPES:
        raise InputError(f"input {name!r}: datatype {datatype!r} is not one of {', '.join(DATATYPES)}")
    dtype = np.dtype(DATATYPES[datatype])
    parameters = _dict(tensor.get("parameters"), f"input {name!r} parameters")
    size = parameters.get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or size != count * dtype.itemsize:
            raise InputError(f"input {name!r}: binary_data_size {size!r} does not match shape {shape} of "
                             f"{datatype} ({count * dtype.itemsize} bytes)")
        if offset + size > len(binary):
            raise InputError(f"input {name!r}: the body ends {offset + size - len(binary)} bytes early")
        array = np.frombuffer(binary, dtype=dtype.newbyteorder("<"), count=count, offset=offset).astype(dtype)
        return name, array.reshape(shape), offset + size
    if "data" not in tensor:
        raise InputError(f"input {name!r} has neither data nor binary_data_size")
    try:
        array = np.asarray(tensor["data"], dtype=dtype)
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"input {name!r}: data are not all {datatype} numbers") from None
    if array.size != count:
        raise InputError(f"input {name!r}: {array.size} values do not fill shape {shape} ({count} values)")
    return name, array.reshape(shape), offset


def _outputs(outputs: Any) -> tuple[list[str] | None, set[str]]:
    if outputs is None:
        return None, set()
    if not isinstance(outputs, list):
        raise InputError('"outputs" must be a list of {"name": ...} objects')
    names, binary = [], set()
    for position, output in enumerate(outputs):
        if not isinstance(output, dict) or not isinstance(output.get("name"), str):
            raise InputError(f"outputs[{position}] must be an object with a name")
        names.append(output["name"])
        if _dict(output.get("parameters"), f"output {output['name']!r} parameters").get("binary_data"):
            binary.add(output["name"])
    return names, binary


def _dict(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InputError(f"{what} must be an object")
    return value
