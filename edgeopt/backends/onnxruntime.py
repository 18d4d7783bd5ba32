"""ONNX Runtime (CPU execution provider) on an ONNX file from the dynamo exporter.

Loading an artifact imports onnxruntime and numpy only, never torch.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.backends._onnx_export import write_onnx
from edgeopt.backends._sensitivity import keep_in_float
from edgeopt.backends.base import (
    Backend,
    Capabilities,
    CompileResult,
    Session,
    aggregate_layers,
    float_modules,
    missing_module,
    onnx_nodes_of,
)
from edgeopt.core.deadline import NO_DEADLINE, Deadline
from edgeopt.core.quantization import QuantizationConfig, Validation

MODEL = "model.onnx"
RANKING_SAMPLES = 8  # validation inputs the one-pass ranking compares FP32 and INT8 activations on
RANKING_CHUNK = 4  # inputs per pass: every activation of both models is held for a chunk, so memory stays bounded


def quantize_static_int8(prepared: Path, out: Path, calibration: np.ndarray, config: QuantizationConfig,
                         exclude: list[str] | None = None, ranges: Path | None = None,
                         deadline: Deadline = NO_DEADLINE) -> None:
    """ONNX Runtime's static QDQ INT8 on a ``quant_pre_process``-ed model; ``exclude`` stays FP32.

    ``ranges``: ONNX Runtime's calibration cache. The first call calibrates and writes it; later
    calls with the same file reuse the ranges (they cover every tensor, whatever is excluded), so
    variants of one model cost a quantization each, not a calibration each. ONNX Runtime releases
    from before the cache (its ``calibration_cache_path``, 2026) calibrate every variant again.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    input_name = _input_name(prepared)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._samples = enumerate(calibration)

        def get_next(self):
            index, sample = next(self._samples, (None, None))
            if sample is None:
                return None
            deadline.check("calibration samples", index, len(calibration))
            return {input_name: sample[None]}

    quantize_static(
        str(prepared), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        nodes_to_exclude=[*config.keep_float, *(exclude or [])],
        calibrate_method={"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                          "percentile": CalibrationMethod.Percentile}[config.calibration_method],
        # Without VNNI, u8 x s8 products can saturate in 16-bit accumulators; 7-bit weights avoid it.
        reduce_range=config.reduce_range,
        **({"calibration_cache_path": ranges} if ranges is not None and _caches_calibration(quantize_static) else {}),
    )


def _caches_calibration(quantize_static) -> bool:
    import inspect

    return "calibration_cache_path" in inspect.signature(quantize_static).parameters


def accuracy_aware_int8(prepared: Path, scratch: Path, out: Path, spec, calibration: np.ndarray,
                        validation: Validation, config: QuantizationConfig,
                        deadline: Deadline = NO_DEADLINE) -> dict[str, Any]:
    """Quantize; if the drop misses, rank the quantized nodes in one pass and bisect over how many stay FP32.

    Calibration runs once (ONNX Runtime's cache); each variant is one quantization and one
    evaluation on the validation inputs, and there are at most ``2 + log2(nodes)`` of them.
    """
    ranges = scratch / "ranges.json"
    built: dict[tuple[str, ...], Path] = {}
    scores: dict[Path, float] = {}

    def build(excluded: list[str]) -> Path:
        if tuple(excluded) not in built:
            path = scratch / f"candidate{len(built)}.onnx"
            quantize_static_int8(prepared, path, calibration, config, exclude=excluded, ranges=ranges,
                                 deadline=deadline)
            built[tuple(excluded)] = path
        return built[tuple(excluded)]

    def score(path: Path) -> float:
        if path not in scores:
            session = OnnxRuntimeSession(path, spec, threads=None)
            step = spec.max_batch or len(validation.inputs)
            chunks = [session.run([validation.inputs[i:i + step]]) for i in range(0, len(validation.inputs), step)]
            scores[path] = validation.score([np.concatenate([c[k] for c in chunks]) for k in range(len(chunks[0]))])
        return scores[path]

    fp32 = score(prepared)
    started, seconds = time.monotonic(), {}
    ranking: list[dict[str, Any]] = []
    if not validation.holds(fp32, score(build([]))):
        seconds["first_variant"] = time.monotonic() - started  # the calibration, a quantization, an evaluation
        ranking = rank_nodes(prepared, build([]), validation.inputs[:RANKING_SAMPLES], scratch, deadline)
        seconds["ranking"] = time.monotonic() - started - seconds["first_variant"]
    result = keep_in_float([entry["node"] for entry in ranking], build, score, fp32, validation, deadline)
    seconds["total"] = time.monotonic() - started
    shutil.copyfile(result.candidate, out)
    return {"fp32_layers": [*config.keep_float, *result.excluded], "sensitivity_ranking": ranking,
            "ranked_by": f"quantization noise each node adds (noise-to-signal ratio against FP32 on "
                         f"{min(RANKING_SAMPLES, validation.samples)} validation samples)",
            "search": result.steps, "evaluations": result.evaluations, "reached": result.reached, "seconds": seconds}


def rank_nodes(fp32: Path, int8: Path, inputs: np.ndarray, scratch: Path,
               deadline: Deadline = NO_DEADLINE) -> list[dict[str, Any]]:
    """The quantized nodes of ``int8``, most sensitive first, by the quantization noise each adds.

    One pass: both models run on ``inputs`` with every activation made a graph output (ONNX
    Runtime's ``qdq_loss_debug``), FP32 and INT8 tensors paired by node (``_node_tensors``). A
    node's added noise is its output's noise-to-signal ratio against FP32 less the worst of its
    inputs': what keeping that one node in float removes (its weights' and its inputs'
    rounding), where its output's own ratio would mostly repeat the noise of everything
    upstream. Many nodes add none that way (a pooling or a wide layer averages noise out), so
    ties go to the node that amplifies its inputs' noise most (output ratio over input ratio),
    then to graph order.
    """
    nodes = _node_tensors(int8, fp32)
    pairs = {pair for inputs_, outputs in nodes.values() for pair in (*inputs_, *outputs)}
    ratio = _noise_to_signal(fp32, int8, pairs, inputs, scratch, deadline)
    entries = []
    for node, (ins, outputs) in nodes.items():
        out_ratio = max((ratio[p] for p in outputs), default=0.0)
        in_ratio = max((ratio[p] for p in ins), default=0.0)
        entries.append({"node": node, "added_noise": max(0.0, out_ratio - in_ratio),
                        "noise_gain": out_ratio / max(in_ratio, 1e-12)})
    return sorted(entries, key=lambda e: (-e["added_noise"], -e["noise_gain"]))  # stable: ties keep graph order


def _noise_to_signal(fp32: Path, int8: Path, pairs: set[tuple[str, str]], inputs: np.ndarray, scratch: Path,
                     deadline: Deadline) -> dict[tuple[str, str], float]:
    """||INT8 - FP32||² / ||FP32||² of each (INT8-model tensor, FP32-model tensor) pair over ``inputs``,
    summed chunk by chunk (every activation of both models is held for one chunk only)."""
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        modify_model_output_intermediate_tensors,
    )

    watched = {model: scratch / f"{model.stem}-activations.onnx" for model in (fp32, int8)}
    for model, augmented in watched.items():
        modify_model_output_intermediate_tensors(str(model), str(augmented))
    signal, noise = dict.fromkeys(pairs, 0.0), dict.fromkeys(pairs, 0.0)
    name = _input_name(fp32)
    for start in range(0, len(inputs), RANKING_CHUNK):
        deadline.check("accuracy-aware INT8 ranking nodes, samples", start, len(inputs))
        chunk = [{name: sample[None]} for sample in inputs[start:start + RANKING_CHUNK]]
        reference = collect_activations(str(watched[fp32]), iter(chunk))
        quantized = collect_activations(str(watched[int8]), iter(chunk))
        for pair in pairs:
            quantized_name, float_name = pair
            for x, y in zip(reference.get(float_name, ()), quantized.get(quantized_name, ())):
                signal[pair] += float(np.sum(np.square(x, dtype=np.float64)))
                noise[pair] += float(np.sum(np.square(x - y, dtype=np.float64)))
    return {pair: noise[pair] / signal[pair] if signal[pair] > 0 else 0.0 for pair in pairs}


def _node_tensors(int8: Path, fp32: Path) -> dict[str, tuple[list[tuple[str, str]], list[tuple[str, str]]]]:
    """For each quantized node: its (INT8-model tensor, FP32-model tensor) input and output pairs.

    Paired by node name and position, never by tensor name: the quantizer renames tensors (a
    ReLU or Clip it folds into the node before it hands that node's pre-activation output the
    ReLU's name; a graph output becomes ``<name>_QuantizeLinear_Input``), and keeps node names.
    Inputs that are weights in the FP32 model (initializers, constants) are no activations and
    are left out. A node the FP32 model does not have keeps no pairs (it ranks last).
    """
    import onnx

    quantized = onnx.load(str(int8), load_external_data=False).graph
    reference = onnx.load(str(fp32), load_external_data=False).graph
    weights = ({i.name for i in reference.initializer}
               | {out for node in reference.node if node.op_type == "Constant" for out in node.output})
    in_int8 = {node.name: node for node in quantized.node}
    in_fp32 = {node.name: node for node in reference.node if node.name}
    tensors = {}
    for name in quantized_nodes(int8):
        node, twin = in_int8[name], in_fp32.get(name)
        if twin is None or twin.op_type != node.op_type:
            tensors[name] = ([], [])
            continue
        inputs = [(a, b) for a, b in zip(node.input, twin.input) if a and b and b not in weights]
        tensors[name] = (inputs, [(a, b) for a, b in zip(node.output, twin.output) if a and b])
    return tensors


def quantized_nodes(path: Path) -> list[str]:
    """Nodes that run on quantized inputs in a QDQ model, in graph order: the search space.

    Not only weighted layers: ONNX Runtime also quantizes around Add, Mul, Concat, pooling
    and activations, and an unlucky one of those can cost as much accuracy as a conv.
    """
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    dequantized = {out for node in graph.node if node.op_type == "DequantizeLinear" for out in node.output}
    # a node without a name cannot be named in nodes_to_exclude, so it cannot be kept in float
    return [node.name for node in graph.node if node.name
            and node.op_type not in ("QuantizeLinear", "DequantizeLinear") and dequantized & set(node.input)]


def _input_name(path: Path) -> str:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    return next(i.name for i in graph.input if i.name not in initializers)


class OnnxRuntimeSession(Session):
    def __init__(self, path: Path, input_spec, threads: int | None, profile_prefix: Path | None = None,
                 shared_cpu: bool = False) -> None:
        super().__init__(input_spec, threads)
        import onnxruntime as ort

        options = ort.SessionOptions()
        if profile_prefix is not None:
            options.enable_profiling = True
            options.profile_file_prefix = str(profile_prefix)
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        if shared_cpu:  # idle threads sleep instead of spinning: the CPU goes to the server's other work
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._input_name = self.session.get_inputs()[0].name

    def _run(self, batch: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, {self._input_name: batch})


def dynamic_int8(model, out: Path) -> CompileResult:
    """INT8 weights, activations quantized at run time (``quantize_dynamic``): no calibration.

    It pays off where the time goes into MatMul/Gemm (Linear, LSTM, attention); a
    convolution becomes ConvInteger, which ONNX Runtime's CPU provider usually runs no
    faster than FP32, so for CNNs static INT8 (``int8``) is the one to use.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as scratch:
        fp32, prepared = Path(scratch) / "fp32.onnx", Path(scratch) / "prepared.onnx"
        write_onnx(model, fp32)
        quant_pre_process(str(fp32), str(prepared))
        quantize_dynamic(str(prepared), str(out), weight_type=QuantType.QInt8, per_channel=True)
    import onnx

    ops = {node.op_type for node in onnx.load(str(out), load_external_data=False).graph.node}
    notes = ["ONNX Runtime dynamic INT8 (INT8 weights, activations quantized at run time)"]
    if "ConvInteger" in ops:
        notes.append("convolutions became ConvInteger, which is rarely faster than FP32 on CPU; for CNNs use static int8")
    return CompileResult(entry=MODEL, notes=notes, details={"quantized_ops": sorted(ops & {"MatMulInteger", "ConvInteger", "DynamicQuantizeLinear", "DynamicQuantizeLSTM"})})


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    order = 20
    capabilities = Capabilities(
        precisions=("fp32", "int8", "int8-dynamic"), sources=("torch", "onnx"), runtime_needs_torch=False,
        int8_modes=("static", "aware", "qat"), concurrent_runs=True,  # InferenceSession.run is thread-safe
    )

    def unavailable_reason(self) -> str | None:
        return missing_module("onnxruntime", "onnx")

    def compile(self, model, precision: str, folder: Path, options: dict[str, Any],
                quantization: QuantizationConfig | None = None, calibration: np.ndarray | None = None,
                validation: Validation | None = None, deadline: Deadline = NO_DEADLINE) -> CompileResult:
        if precision == "int8-dynamic":
            return dynamic_int8(model, folder / MODEL)
        if precision != "int8":
            write_onnx(model, folder / MODEL)
            return CompileResult(entry=MODEL, notes=["ONNX opset from the dynamo exporter, CPUExecutionProvider"])
        config = quantization or QuantizationConfig()
        if config.mode == "qat":
            write_onnx(model, folder / MODEL)
            return CompileResult(entry=MODEL, notes=["INT8 from quantization-aware training (NNCF fake-quantizers "
                                                     "exported as QuantizeLinear/DequantizeLinear)"])
        from onnxruntime.quantization.shape_inference import quant_pre_process

        with tempfile.TemporaryDirectory() as scratch:  # FP32 intermediates stay out of the artifact
            fp32, prepared = Path(scratch) / "fp32.onnx", Path(scratch) / "prepared.onnx"
            write_onnx(model, fp32)
            quant_pre_process(str(fp32), str(prepared))
            head = onnx_nodes_of(prepared, float_modules(model, config))
            config = dataclasses.replace(config, keep_float=(*config.keep_float, *head))
            if config.mode == "aware":
                details = accuracy_aware_int8(prepared, Path(scratch), folder / MODEL, model.input_spec,
                                              calibration, validation, config, deadline)
            else:
                quantize_static_int8(prepared, folder / MODEL, calibration, config, deadline=deadline)
                details = {"fp32_layers": list(config.keep_float)}
        notes = [f"ONNX Runtime static INT8 (QDQ, per-channel weights, {config.calibration_method}) on "
                 f"{len(calibration)} calibration samples"]
        if config.mode == "aware":
            kept = details["fp32_layers"]
            notes.append(f"accuracy-aware (nodes ranked by the quantization noise each adds, how many stay FP32 "
                         f"found by bisection in {details['evaluations']} evaluations on {validation.samples} "
                         f"validation samples, max drop {validation.max_drop:g} points of {validation.metric}): "
                         + (f"{len(kept)} layer(s) kept in FP32, most sensitive first: {', '.join(kept)}" if kept
                            else "no layer kept in FP32"))
        elif [k for k in config.keep_float if k not in head]:
            notes.append(f"kept in FP32 as asked: {', '.join(k for k in config.keep_float if k not in head)}")
        if head:
            notes.append(f"the detector's box and class predictors ({len(head)} layers) stay in FP32; "
                         "quantize_head=true puts them in INT8 too")
        return CompileResult(entry=MODEL, notes=notes, details=details)

    def load(self, artifact, threads: int | None = None, shared_cpu: bool = False) -> Session:
        return OnnxRuntimeSession(artifact.entry, artifact.input_spec, threads, shared_cpu=shared_cpu)

    def profile(self, artifact, out_dir: Path, iters: int = 10, threads: int | None = None) -> list[dict[str, Any]]:
        out_dir.mkdir(parents=True, exist_ok=True)
        session = OnnxRuntimeSession(artifact.entry, artifact.input_spec, threads, profile_prefix=out_dir / "onnxruntime")
        batch = artifact.input_spec.example()
        for _ in range(iters):
            session.run([batch])
        trace = Path(session.session.end_profiling())
        records = [
            (e["name"].removesuffix("_kernel_time"), e["args"].get("op_name", ""), e["dur"] / 1000.0)
            for e in json.loads(trace.read_text())
            if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")
        ]
        return aggregate_layers(records, iters)


BACKEND = OnnxRuntimeBackend()
