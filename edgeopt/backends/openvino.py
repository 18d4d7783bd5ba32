"""OpenVINO on the CPU plugin: ``ov.convert_model`` to IR (xml + bin), FP32 kept as FP32.

Weights are saved uncompressed and the plugin is told to infer in f32, because by
default OpenVINO stores FP16 weights and uses bf16 on CPUs that have it; both would
silently change results that we claim are FP32. Loading imports openvino, not torch.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.backends.base import (
    Backend,
    Capabilities,
    CompileResult,
    Session,
    aggregate_layers,
    float_modules,
    missing_module,
)
from edgeopt.core.deadline import NO_DEADLINE, Deadline
from edgeopt.core.errors import BackendError
from edgeopt.core.quantization import QuantizationConfig, Validation, nncf_preset

MODEL = "model.xml"
INFERENCE_PRECISION = {"fp32": "f32", "fp16": "f16", "int8": "f32"}
ACCURACY_CONTROL = "accuracy-aware INT8 (NNCF accuracy control)"


def quantize_int8(ov_model, calibration: np.ndarray, config: QuantizationConfig,
                  validation: Validation | None = None, head: list[str] = (),
                  deadline: Deadline = NO_DEADLINE) -> tuple[Any, list[str]]:
    """NNCF post-training INT8 (accuracy-aware in mode "aware", with ``validation``); every input
    NNCF infers checks ``deadline``.

    Layers the CPU plugin cannot run in INT8 are kept in FP32. The known case is a
    convolution with a single input channel (a grayscale stem), refused at compile time
    on some CPUs ("No suitable implementations"): we compile the quantized model, and on
    failure quantize again with those layers ignored. Returns the model and those layers.
    ``head``: PyTorch module names kept in float (a detector's predictors).

    The default preset is "performance" (symmetric activations), NNCF's own default for
    CNNs: on the NEU ResNet-18 it kept 90.0% top-1 where "mixed" kept 81.9%.
    """
    import nncf
    import openvino as ov

    dataset = nncf.Dataset([sample[None] for sample in calibration], _checking(deadline, "calibration"))

    def quantize(ignored: list[str]):
        names = [*config.keep_float, *ignored]
        # convert_model names a module's ops "__module.<module>/aten::..."
        patterns = [f"__module\\.{re.escape(m)}/.*" for m in head]
        scope = nncf.IgnoredScope(names=names, patterns=patterns) if names or patterns else None
        common = dict(preset=nncf_preset(config.preset), subset_size=len(calibration), ignored_scope=scope)
        if config.mode != "aware":
            return nncf.quantize(ov_model.clone(), dataset, fast_bias_correction=True, **common)
        # NNCF's accuracy control ranks its quantizer groups and walks that ranking with no bound in time
        # and no way to stop it, so it runs where it can be stopped: every input it infers passes through
        # _checking (statistics, ranking) or _scorer (validation), which raise BudgetExhausted once the
        # deadline passes, and NNCF lets that through (its one mode probe swallows an error, but the next
        # check raises again). Its ranking subset is the whole validation set: in its metric mode NNCF scores
        # the ranking subset with _scorer, whose labels are the whole set's (NNCF's default subset is the
        # calibration size, which scored 200 outputs against 287 labels once ranking began).
        return nncf.quantize_with_accuracy_control(
            ov_model.clone(), dataset,
            nncf.Dataset(list(validation.inputs[:, None]), _checking(deadline, ACCURACY_CONTROL)),
            validation_fn=_scorer(validation, deadline), max_drop=validation.max_drop / validation.points_per_unit,
            drop_type=nncf.DropType.ABSOLUTE,
            advanced_accuracy_restorer_parameters=nncf.AdvancedAccuracyRestorerParameters(
                ranking_subset_size=validation.samples),
            **common)

    quantized = quantize([])
    try:
        ov.Core().compile_model(quantized, "CPU")
        return quantized, []
    except RuntimeError as exc:
        single_channel = [op.get_friendly_name() for op in ov_model.get_ordered_ops()
                          if op.get_type_name() == "Convolution" and op.input(1).get_partial_shape()[1] == 1]
        if not single_channel:
            raise BackendError(f"OpenVINO cannot compile the INT8 model: {str(exc).splitlines()[0]}") from exc
    quantized = quantize(single_channel)
    ov.Core().compile_model(quantized, "CPU")  # raises if something else is still unsupported
    return quantized, single_channel


def _checking(deadline: Deadline, step: str):
    """An nncf.Dataset transform that checks ``deadline`` before NNCF infers each item."""

    def transform(item):
        deadline.check(step)
        return item

    return transform


def _scorer(validation: Validation, deadline: Deadline):
    """NNCF's validation_fn: the task's main metric of a compiled model on the validation inputs."""

    def score(compiled_model, items) -> float:
        deadline.check(ACCURACY_CONTROL)
        per_item = [compiled_model(x) for x in items]
        outputs = [np.concatenate([np.asarray(result[out]) for result in per_item]) for out in compiled_model.outputs]
        return float(validation.score(outputs))

    return score


WEIGHTED_OPS = ("Convolution", "GroupConvolution", "MatMul", "ConvolutionBackpropData")


def fp32_layers(ov_model) -> list[str]:
    """Weighted layers left in FP32: their weights come straight from an f32 constant."""
    layers = []
    for op in ov_model.get_ordered_ops():
        if op.get_type_name() in WEIGHTED_OPS:
            source = op.input(1).get_source_output().get_node()
            if source.get_type_name() == "Constant" and source.get_element_type().get_type_name() == "f32":
                layers.append(op.get_friendly_name())
    return layers


def accuracy_control_note(validation: Validation, fp32: list[str]) -> str:
    reverted = f"{len(fp32)} layer(s) kept in FP32: {', '.join(fp32)}" if fp32 else "no layer needed FP32"
    return (f"accuracy-aware (NNCF quantize_with_accuracy_control, max drop {validation.max_drop:g} points "
            f"of {validation.metric} on {validation.samples} validation samples): {reverted}")


class OpenVinoSession(Session):
    def __init__(self, path: Path, precision: str, input_spec, threads: int | None, perf_count: bool = False) -> None:
        super().__init__(input_spec, threads)
        import openvino as ov

        config: dict[str, Any] = {
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": INFERENCE_PRECISION[precision],
            "PERF_COUNT": perf_count,
        }
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        core = ov.Core()
        model = core.read_model(str(path))
        self.outputs = len(model.outputs)
        self.batched = core.compile_model(model, "CPU", config).create_infer_request()
        self.single = self.batched
        shape = model.inputs[0].get_partial_shape()
        if shape[0].is_dynamic and shape.rank.is_static and all(d.is_static for d in list(shape)[1:]):
            # OpenVINO's CPU plugin (2026.4) runs a dynamic-batch model on a batch of ONE with other kernels than
            # on any larger batch or a static shape: an INT8 SSDlite's logits moved by up to 2.7 on NEU-DET, and
            # its boxes by pixels (benchmarks/same_answers.py). A static batch-1 copy gives an image alone the
            # answer it gets in a batch, so predict, the stream, the server and eval agree.
            model.reshape({0: [1, *(d.get_length() for d in list(shape)[1:])]})
            self.single = core.compile_model(model, "CPU", config).create_infer_request()
        self.request = self.single  # the last one used: what a profile reads

    def _run(self, batch: np.ndarray) -> list[np.ndarray]:
        self.request = self.single if len(batch) == 1 else self.batched
        self.request.infer({0: batch})
        return [self.request.get_output_tensor(i).data.copy() for i in range(self.outputs)]


class OpenVinoBackend(Backend):
    name = "openvino"
    order = 30
    capabilities = Capabilities(
        precisions=("fp32", "int8"), sources=("torch", "onnx"), runtime_needs_torch=False,
        int8_modes=("static", "aware", "qat"),
    )

    def unavailable_reason(self) -> str | None:
        return missing_module("openvino")

    def compile(self, model, precision: str, folder: Path, options: dict[str, Any],
                quantization: QuantizationConfig | None = None, calibration: np.ndarray | None = None,
                validation: Validation | None = None, deadline: Deadline = NO_DEADLINE) -> CompileResult:
        import openvino as ov

        spec = model.input_spec
        shape = ov.PartialShape([-1 if spec.dynamic_batch else spec.shape[0], *spec.sample_shape])
        if model.kind == "onnx":
            ov_model = ov.convert_model(str(model.onnx_path))
            ov_model.reshape({0: shape})
        else:
            import torch

            example = torch.from_numpy(spec.example(batch=2 if spec.dynamic_batch else None))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # ov traces with torch.jit internally
                ov_model = ov.convert_model(model.module, example_input=example, input=[shape])
        notes = ["OpenVINO IR, FP32 weights, CPU plugin"]
        details: dict[str, Any] = {}
        config = quantization or QuantizationConfig()
        if precision == "int8" and config.mode == "qat":
            notes = ["INT8 from quantization-aware training (NNCF fake-quantizers converted to OpenVINO FakeQuantize)"]
            details["fp32_layers"] = fp32_layers(ov_model)
        elif precision == "int8":
            head = float_modules(model, config) if model.kind == "torch" else []
            ov_model, unsupported = quantize_int8(ov_model, calibration, config, validation, head, deadline)
            notes = [f"NNCF INT8 post-training quantization ({config.preset} preset) on {len(calibration)} "
                     "calibration samples"]
            if head:
                notes.append(f"the detector's box and class predictors ({len(head)} layers) stay in FP32; "
                             "quantize_head=true puts them in INT8 too")
            if unsupported:
                notes.append(f"kept in FP32, as the CPU plugin has no INT8 kernel for them: {', '.join(unsupported)}")
            details["fp32_layers"] = fp32_layers(ov_model)
            if config.mode == "aware":
                notes.append(accuracy_control_note(validation, details["fp32_layers"]))
        ov.save_model(ov_model, str(folder / MODEL), compress_to_fp16=False)
        return CompileResult(entry=MODEL, notes=notes, details=details)

    def load(self, artifact, threads: int | None = None, shared_cpu: bool = False) -> Session:
        return OpenVinoSession(artifact.entry, artifact.precision, artifact.input_spec, threads)

    def profile(self, artifact, out_dir: Path, iters: int = 10, threads: int | None = None) -> list[dict[str, Any]]:
        session = OpenVinoSession(artifact.entry, artifact.precision, artifact.input_spec, threads, perf_count=True)
        batch = artifact.input_spec.example()
        records = []
        for _ in range(iters):
            session.run([batch])
            records += [
                (info.node_name, f"{info.node_type} ({info.exec_type})", info.real_time.total_seconds() * 1000.0)
                for info in session.request.get_profiling_info()
                if info.status == info.Status.EXECUTED
            ]
        return aggregate_layers(records, iters)


BACKEND = OpenVinoBackend()
