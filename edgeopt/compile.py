"""Compile a model with one backend into a verified artifact (``edgeopt.export`` is its public face).

Every artifact is loaded back and run on a probe batch against the eager FP32
reference before it is called good. At FP32 it must be the same model; at INT8 it must
not be broken (finite, input-dependent, still following the reference, see
``edgeopt.measure.fidelity``) — how much accuracy INT8 costs is measured on data and
judged against a goal elsewhere. A failed check raises ParityError and leaves nothing on
disk. This is the only place that turns a model into files.

Example:
    >>> from edgeopt.models.sources import load_model
    >>> model = load_model("torchvision:mobilenet_v2")                  # doctest: +SKIP
    >>> art = export(model, "openvino", "out/mbv2_ov")                  # doctest: +SKIP
    >>> art.parity["max_abs_diff"] < 1e-3                               # doctest: +SKIP
    True
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from edgeopt.core.artifact import Artifact, ArtifactWriter
from edgeopt.backends import Backend, all_backends, get_backend
from edgeopt.core.deadline import NO_DEADLINE, Deadline
from edgeopt.core.errors import BackendError, BackendUnavailable, ConfigError, EdgeoptError, ParityError, first_line
from edgeopt.measure.fidelity import compare
from edgeopt.measure.inference import run_batched
from edgeopt.models.sources import LoadedModel
from edgeopt.core.quantization import QuantizationConfig, Validation
from edgeopt.tasks import task_of

PROBE_BATCH = 4
INT8_PROBE = 32  # real samples: enough to tell a broken compile from a working one that flips a few


def unsupported_reason(backend: Backend, model: LoadedModel, precision: str) -> str | None:
    """Why ``backend`` cannot take ``model`` at ``precision`` on this machine, or None."""
    caps = backend.capabilities
    if precision not in caps.precisions:
        return f"supports precisions {', '.join(caps.precisions)}, not {precision}"
    if model.kind not in caps.sources:
        return f"needs a PyTorch model; {model.source} is an {model.kind.upper()} file"
    if model.quantized and "qat" not in caps.int8_modes:
        return "cannot convert a quantization-aware-trained model"
    if model.quantized and precision != "int8":
        return "a quantization-aware-trained model exports as int8"
    return backend.unavailable_reason()


def quantization_for(model: LoadedModel, precision: str, quantization: QuantizationConfig | None) -> QuantizationConfig | None:
    """The quantization an export of ``model`` at ``precision`` runs with (None above INT8)."""
    if precision != "int8":
        if quantization is not None:
            raise ConfigError(f"quantization settings apply to int8, not {precision}")
        return None
    config = quantization or QuantizationConfig(mode="qat" if model.quantized else "static")
    if model.quantized != (config.mode == "qat"):
        raise ConfigError("quantization mode qat goes with a model trained with fake-quantizers (the qat pass), "
                          "and such a model only exports in that mode")
    return config


def export(
    model: LoadedModel,
    backend: str,
    out: str | os.PathLike,
    precision: str = "fp32",
    threads: int | None = None,
    options: dict[str, Any] | None = None,
    overwrite: bool = False,
    quantization: QuantizationConfig | None = None,
    calibration: np.ndarray | None = None,
    validation: Validation | None = None,
    recipe: dict[str, Any] | None = None,
    verify: bool = True,
    deadline: Deadline = NO_DEADLINE,
) -> Artifact:
    """Compile ``model`` for ``backend`` into the folder ``out``, verified against the FP32 reference.

    INT8 needs ``calibration``: real, preprocessed inputs (N, ...); its first ``INT8_PROBE``
    samples also serve as the parity probe, since a quantized model is only expected to
    follow the reference on data like the data it was calibrated on. ``quantization``
    says how (default: post-training, or converting a QAT model); in mode "aware"
    ``validation`` holds the held-out inputs scored by the task, and the manifest's
    ``accuracy_control`` says whether the drop was reached (the best candidate is kept either way).
    ``recipe``: the recipe that made ``model``, recorded in the manifest as its provenance.
    ``verify=False`` records the parity check without enforcing it: only for a latency probe of
    untrained weights, whose outputs mean nothing; the manifest says so.
    ``deadline``: checked before the compile, the verification and the accuracy check, and by the
    runtime's compile at every calibration sample and accuracy-aware evaluation (a single export or
    lowering call runs through), raising ``BudgetExhausted`` with nothing left on disk.
    """
    runtime = get_backend(backend)
    reason = unsupported_reason(runtime, model, precision)
    if reason:
        raise BackendUnavailable(f"{backend} cannot be used here: {reason}")
    options = dict(options or {})
    unknown = sorted(set(options) - set(runtime.capabilities.options))
    if unknown:
        raise ConfigError(f"{backend} has no option(s) {unknown}; it accepts {list(runtime.capabilities.options) or 'none'}")
    quantization = quantization_for(model, precision, quantization)
    _check_quantization(runtime, quantization, calibration, validation)
    if calibration is not None:
        calibration = model.input_spec.validate(np.asarray(calibration))  # same checks as any input
    spec = dataclasses.replace(model.input_spec, max_batch=runtime.capabilities.max_batch if model.input_spec.dynamic_batch else None)
    job = (precision, threads, options, overwrite, quantization, calibration, validation, recipe, verify, deadline)
    try:
        return _build(runtime, dataclasses.replace(model, input_spec=spec), out, [], *job)
    except (ParityError, BackendUnavailable):
        raise
    except BackendError as exc:
        if not spec.dynamic_batch or runtime.capabilities.sample_by_sample:  # a fixed batch would fail the same way
            raise
        # Some lowerings cannot keep the batch dimension dynamic for every model (XNNPACK
        # with a channel shuffle, say). A fixed-batch artifact at the spec's own batch is
        # still useful for latency; say so in the manifest rather than fail.
        fixed = dataclasses.replace(spec, dynamic_batch=False, max_batch=None)
        note = f"dynamic batch failed ({exc}); built for fixed batch {fixed.shape[0]}"
        return _build(runtime, dataclasses.replace(model, input_spec=fixed), out, [note], *job)


def _check_quantization(runtime: Backend, quantization: QuantizationConfig | None, calibration, validation) -> None:
    if quantization is None:
        if validation is not None:
            raise ConfigError("a max accuracy drop applies to accuracy-aware INT8 only")
        return
    modes = runtime.capabilities.int8_modes
    if quantization.mode not in modes:
        able = [b.name for b in all_backends() if quantization.mode in b.capabilities.int8_modes]
        raise ConfigError(f"{runtime.name} has no {quantization.mode!r} INT8 (it offers {', '.join(modes) or 'none'}); "
                          f"backends that do: {', '.join(able)}")
    if calibration is None or len(calibration) == 0:
        raise ConfigError("INT8 needs calibration data: give it a dataset of a few hundred real images")
    if (quantization.mode == "aware") != (validation is not None):
        raise ConfigError("accuracy-aware INT8 needs held-out labelled data and a max drop, and only it takes them")


def _probe(spec, calibration: np.ndarray | None) -> np.ndarray:
    """The parity probe: real calibration samples when given, else seeded random inputs.

    A fixed-batch artifact gets a whole number of its batches (run one at a time); a bounded
    dynamic batch runs in chunks of its bound.
    """
    if calibration is None:
        return spec.example(batch=min(PROBE_BATCH, spec.max_batch or PROBE_BATCH) if spec.dynamic_batch else None, seed=1)
    batch = spec.shape[0]
    size = INT8_PROBE if spec.dynamic_batch else max(batch, INT8_PROBE // batch * batch)  # run in chunks the artifact takes
    return np.resize(calibration, (size, *calibration.shape[1:])) if len(calibration) < size else calibration[:size]


def _build(runtime: Backend, model: LoadedModel, out, notes: list[str], precision: str, threads: int | None,
           options: dict[str, Any], overwrite: bool, quantization: QuantizationConfig | None,
           calibration: np.ndarray | None, validation: Validation | None, recipe: dict[str, Any] | None,
           verify: bool, deadline: Deadline) -> Artifact:
    """Compile, write, load back, run the probe, check parity; commit only if it holds."""
    backend, spec, task = runtime.name, model.input_spec, task_of(model)
    probe = _probe(spec, calibration)
    reference = model.reference()(probe)

    with ArtifactWriter(out, overwrite=overwrite) as writer:
        deadline.check(f"compiling for {backend}")
        result = _guarded(f"{backend} could not compile the model", runtime.compile, model, precision, writer.dir,
                          options, quantization, calibration, validation, deadline)
        manifest = {
            "backend": backend,
            "precision": precision,
            "entry": result.entry,
            "input": spec.to_dict(),
            "outputs": _output_records(model, reference, spec.dynamic_batch),
            "task": model.task,
            "head": model.head,
            "labels": model.labels,
            "source": model.source,
            "options": options,
            "quantization": quantization.to_dict() if quantization else None,
            "compile": result.details,
            "notes": notes + result.notes,
        }
        if result.derived:
            manifest["derived"] = list(result.derived)
        if recipe is not None:
            manifest["recipe"] = recipe
        staged = writer.write_manifest(manifest)
        deadline.check("verifying")
        session = _guarded(f"{backend} could not load its own artifact", runtime.load, staged, threads)
        outputs = _guarded(f"{backend} could not run its own artifact", run_batched, session.run, probe, spec)
        parity = compare(reference, outputs, precision, judge=task)
        parity["probe_batch"], parity["enforced"] = int(probe.shape[0]), verify
        if not verify:
            manifest["notes"].append("latency probe: parity recorded, not enforced (untrained weights); not for use")
        elif not parity["passed"]:
            raise ParityError(f"{backend} {precision} outputs diverge from the FP32 reference: {parity['reason']}",
                              detail=parity["reason"], parity=parity)
        if validation is not None:
            deadline.check("checking accuracy")
            manifest["accuracy_control"] = control = _accuracy_control(model, session, validation)
            if not control["reached"]:
                manifest["notes"].append(
                    f"cannot reach the max drop of {validation.max_drop:g} points of {validation.metric}: the best "
                    f"candidate found drops {control['drop_points']:.2f}; it is kept")
        writer.write_manifest({**manifest, "parity": parity})
        return writer.commit()


def _accuracy_control(model: LoadedModel, session, validation: Validation) -> dict[str, Any]:
    """The main metric of the reference and the artifact on the validation inputs, and whether the drop holds."""
    reference = validation.score(run_batched(model.reference(), validation.inputs, model.input_spec))
    value = validation.score(run_batched(session.run, validation.inputs, model.input_spec))
    drop = validation.drop_points(reference, value)
    return {"metric": validation.metric, "reference": reference, "value": value, "drop_points": drop,
            "max_drop_points": validation.max_drop, "reached": validation.holds(reference, value),
            "samples": validation.samples}


def _guarded(what: str, function, *args):
    """Call ``function``; turn a runtime library's exception into one BackendError line."""
    try:
        return function(*args)
    except EdgeoptError:
        raise
    except Exception as exc:  # runtimes raise their own exception types
        raise BackendError(f"{what}: {first_line(exc)[:300]}") from exc


def _output_records(model: LoadedModel, reference: list[np.ndarray], dynamic_batch: bool) -> list[dict[str, Any]]:
    names = _onnx_output_names(model) or [f"output{i}" for i in range(len(reference))]
    return [
        {"name": name, "shape": [-1 if dynamic_batch else out.shape[0], *out.shape[1:]]}
        for name, out in zip(names, reference)
    ]


def _onnx_output_names(model: LoadedModel) -> list[str] | None:
    if model.kind != "onnx":
        return None
    import onnx

    return [o.name for o in onnx.load(str(model.onnx_path), load_external_data=False).graph.output]
