"""What a ``.tflite`` flatbuffer holds, read without running it: operators, tensors, and their memory.

Read through the flatbuffer schema that ships with the LiteRT interpreter (``ai_edge_litert``),
so no TensorFlow is needed. The memory figures are static estimates of what TensorFlow Lite
Micro's arena needs, made before any interpreter is built:

- **activations**: TFLM plans every non-constant tensor into one buffer; a tensor lives from
  the operator that writes it (or the start, for a graph input) to the last operator that reads
  it (or the end, for a graph output), and the planner can do no better than the largest sum of
  live tensors at any operator, each rounded up to TFLM's 16-byte alignment. On the models of
  ``benchmarks/tinyml.py`` TFLM's greedy planner reaches exactly that bound.
- **persistent**: what TFLM keeps for the whole run beside the activations — 24 bytes per tensor
  (``TfLiteEvalTensor``), 64 per operator (node and registration), 64 + 16 per graph input and output,
  per-channel requantization (a 4-byte multiplier and shift per output channel) for convolutions and
  per-channel fully connected layers, and a kernel's op data and the planner's bookkeeping per
  operator. The per-operator constants were read off TFLM's ``RecordingMicroAllocator`` for its
  reference kernels (tflite-micro 2026-10); a vendor's optimized kernels (CMSIS-NN) may ask for more.
- **planning**: while it plans, TFLM keeps its planner's records where the activations will go,
  about 64 bytes per tensor (measured); only in the smallest models do they outgrow the activations.

Example:
    >>> graph = TfliteGraph.read(open("model.tflite", "rb").read())   # doctest: +SKIP
    >>> graph.operator_names, graph.activation_bytes()                # doctest: +SKIP
    (['CONV_2D', 'MAX_POOL_2D', ...], 10240)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from math import prod
from typing import TYPE_CHECKING

from edgeopt.core.errors import BackendError

if TYPE_CHECKING:
    from edgeopt.core.spec import InputSpec

ALIGNMENT = 16  # TFLM's kBufferAlignment: every arena buffer starts on a 16-byte boundary
EVAL_TENSOR_BYTES = 24
NODE_BYTES = 64
IO_TENSOR_BYTES = 64 + 32  # a persistent TfLiteTensor and its quantization record, per graph input and output
OP_DATA_BYTES = 96  # a kernel's own op data and the planner's record, per operator (measured mean, reference kernels)
FIXED_BYTES = 512  # the allocator's and the planner's fixed records
PLANNING_BYTES_PER_TENSOR = 64  # the planner's records during allocation, at the head of the arena
PER_CHANNEL_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV")
ELEMENT_BYTES = {"FLOAT32": 4, "FLOAT16": 2, "INT32": 4, "UINT32": 4, "INT64": 8, "INT16": 2, "UINT16": 2, "INT8": 1,
                 "UINT8": 1, "BOOL": 1, "INT4": 1}  # INT4 is packed two per byte in files, one per byte in the arena


def aligned(size: int) -> int:
    return -(-size // ALIGNMENT) * ALIGNMENT


@dataclass(frozen=True)
class Tensor:
    dtype: str
    shape: tuple[int, ...]
    constant: bool
    channels: int  # how many quantization scales it carries (per-channel weights: one per output channel)

    @property
    def bytes(self) -> int:
        return prod(self.shape) * ELEMENT_BYTES.get(self.dtype, 4)


@dataclass(frozen=True)
class Operator:
    name: str  # the builtin name, e.g. CONV_2D, or the custom code of a custom operator
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]


@dataclass(frozen=True)
class TfliteGraph:
    """The first subgraph of a ``.tflite`` model: its tensors, operators in run order, inputs and outputs."""

    tensors: tuple[Tensor, ...]
    operators: tuple[Operator, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]

    @classmethod
    def read(cls, data: bytes) -> "TfliteGraph":
        """Parse ``data``; a file that is not a readable TFLite flatbuffer is one BackendError."""
        from ai_edge_litert import schema_py_generated as schema

        if len(data) < 8 or data[4:8] != b"TFL3":
            raise BackendError("not a TFLite flatbuffer (its identifier is not TFL3): export it again")
        try:
            model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(data, 0))
            return cls._of(model, schema)
        except BackendError:
            raise
        except Exception as exc:  # noqa: BLE001 - the flatbuffers reader raises whatever its struct unpacking hits
            raise BackendError(f"the TFLite flatbuffer is damaged ({type(exc).__name__}): export it again") from None

    @classmethod
    def _of(cls, model, schema) -> "TfliteGraph":
        if not model.subgraphs:
            raise BackendError("the TFLite flatbuffer holds no subgraph: export it again")
        builtin = {value: key for key, value in vars(schema.BuiltinOperator).items() if not key.startswith("_")}
        dtypes = {value: key for key, value in vars(schema.TensorType).items() if not key.startswith("_")}
        graph = model.subgraphs[0]
        tensors = tuple(Tensor(
            dtype=dtypes.get(t.type, str(t.type)),
            shape=tuple(int(d) for d in (t.shape if t.shape is not None else ())),
            constant=_has_data(model, t.buffer),
            channels=len(t.quantization.scale) if t.quantization is not None and t.quantization.scale is not None else 0,
        ) for t in graph.tensors)
        operators = []
        for op in graph.operators or ():
            code = model.operatorCodes[op.opcodeIndex]
            number = max(code.builtinCode, code.deprecatedBuiltinCode)  # the schema's two fields for one code
            name = builtin.get(number, str(number))
            if name == "CUSTOM":
                name = (code.customCode or b"custom").decode(errors="replace")
            operators.append(Operator(name, _indices(op.inputs), _indices(op.outputs)))
        inputs, outputs = _indices(graph.inputs), _indices(graph.outputs)
        named = [*inputs, *outputs, *(i for op in operators for i in (*op.inputs, *op.outputs))]
        if any(index >= len(tensors) for index in named):
            raise BackendError("the TFLite flatbuffer names a tensor it does not hold: export it again")
        return cls(tensors, tuple(operators), inputs, outputs)

    @property
    def operator_names(self) -> list[str]:
        """Each operator kind once, in order of first use."""
        return list(dict.fromkeys(op.name for op in self.operators))

    def float_operators(self) -> list[str]:
        """Operators that write float tensors, as 'NAME xN': a full-integer model has none."""
        counts: dict[str, int] = {}
        for op in self.operators:
            if any(self.tensors[i].dtype in ("FLOAT32", "FLOAT16") for i in op.outputs):
                counts[op.name] = counts.get(op.name, 0) + 1
        return [f"{name} x{count}" for name, count in counts.items()]

    def macs(self) -> int:
        """Multiply-accumulates of one run: convolutions and fully connected layers (the rest is noise beside them)."""
        total = 0
        for op in self.operators:
            if op.name not in PER_CHANNEL_OPS or len(op.inputs) < 2:
                continue
            weights, outputs = self.tensors[op.inputs[1]].shape, prod(self.tensors[op.outputs[0]].shape)
            if op.name == "FULLY_CONNECTED":
                total += outputs * weights[-1]  # weights (out, in): every output reads every input
            elif op.name == "DEPTHWISE_CONV_2D":
                total += outputs * prod(weights[1:3])  # weights (1, kh, kw, channels): one filter per channel
            else:
                total += outputs * prod(weights[1:])  # weights (out, kh, kw, in)
        return total

    def activation_bytes(self) -> int:
        """The largest sum of live non-constant tensors at any point of the run (16-byte aligned each)."""
        end = len(self.operators)
        born: dict[int, int] = {index: -1 for index in self.inputs}
        dies: dict[int, int] = {}
        for step, op in enumerate(self.operators):
            for index in op.inputs:
                if not self.tensors[index].constant:
                    dies[index] = step
            for index in op.outputs:
                born.setdefault(index, step)
        for index in self.outputs:
            dies[index] = end
        spans = [(aligned(self.tensors[i].bytes), start, dies.get(i, start)) for i, start in born.items()]
        return max((sum(size for size, start, stop in spans if start <= step <= stop) for step in range(-1, end + 1)),
                   default=0)

    def persistent_bytes(self) -> int:
        """The estimate of TFLM's persistent allocations for this graph (see the module docstring)."""
        per_channel = sum(2 * aligned(4 * self._output_channels(op)) for op in self.operators if op.name in PER_CHANNEL_OPS)
        return (EVAL_TENSOR_BYTES * len(self.tensors) + (NODE_BYTES + OP_DATA_BYTES) * len(self.operators)
                + IO_TENSOR_BYTES * (len(self.inputs) + len(self.outputs)) + per_channel + FIXED_BYTES)

    def arena_estimate(self) -> int:
        """Activations (or the planner's records, when larger) plus persistent allocations: the static estimate
        of the arena TFLM needs."""
        planning = PLANNING_BYTES_PER_TENSOR * len(self.tensors)
        return max(self.activation_bytes(), planning) + self.persistent_bytes()

    def _output_channels(self, op: Operator) -> int:
        weights = self.tensors[op.inputs[1]] if len(op.inputs) > 1 and op.inputs[1] >= 0 else None
        return weights.channels if weights is not None and weights.channels > 1 else 0


def checked_graph(data: bytes, input_spec: "InputSpec") -> TfliteGraph:
    """The flatbuffer's graph, refused unless it takes one input of the manifest's sample shape and gives outputs."""
    graph = TfliteGraph.read(data)
    if len(graph.inputs) != 1 or not graph.outputs:
        raise BackendError(f"the flatbuffer has {len(graph.inputs)} inputs and {len(graph.outputs)} outputs; edgeopt's "
                           "take one input and give at least one output: export it again")
    shape = graph.tensors[graph.inputs[0]].shape
    if tuple(shape[1:]) != tuple(input_spec.shape[1:]):
        raise BackendError(f"the flatbuffer's input is {'x'.join(map(str, shape))}, its manifest says "
                           f"{'x'.join(map(str, input_spec.shape))}: export it again")
    return graph


def resolver_method(name: str) -> str:
    """TFLM's ``MicroMutableOpResolver`` method for a builtin operator: CONV_2D -> AddConv2D.

    The rule of TFLM's own generator (tensorflow/lite/micro/tools/gen_micro_mutable_op_resolver),
    which the pip package does not ship; PADV2's method is AddPadV2 in TFLM's resolver.
    """
    words = re.split("_|-", name.replace("TFLite", ""))
    method = "".join(w[0].upper() + w[1:].lower() if len(w) > 1 and w[0].isalpha() else w.upper() for w in words)
    return "Add" + method.replace("Lstm", "LSTM").replace("BatchMatmul", "BatchMatMul").replace("Padv2", "PadV2")


def _has_data(model, buffer: int) -> bool:
    if buffer <= 0 or buffer >= len(model.buffers):
        return False
    entry = model.buffers[buffer]
    return (entry.data is not None and len(entry.data) > 0) or bool(getattr(entry, "size", 0))


def _indices(values) -> tuple[int, ...]:
    return tuple(int(v) for v in values if v >= 0) if values is not None else ()
