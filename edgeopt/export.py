"""Export: compile a model with one backend into a verified artifact.

Every artifact is loaded back and run on a probe batch against the eager FP32
reference before it is called good; one whose outputs diverge raises ParityError and
nothing is left on disk. This is the only place that turns a model into files.

Example:
    >>> from edgeopt import load_model, export
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

from edgeopt.artifact import Artifact, ArtifactWriter
from edgeopt.backends import Backend, all_backends, get_backend
from edgeopt.backends.base import Validation
from edgeopt.errors import BackendError, BackendUnavailable, ConfigError, EdgeoptError, ParityError
from edgeopt.measure.accuracy import top1_accuracy
from edgeopt.measure.fidelity import compare
from edgeopt.models import LoadedModel

PROBE_BATCH = 4
INT8_PROBE = 32  # enough real samples that one flipped prediction does not fail top-1 agreement


def unsupported_reason(backend: Backend, model: LoadedModel, precision: str) -> str | None:
    """Why ``backend`` cannot take ``model`` at ``precision`` on this machine, or None."""
    caps = backend.capabilities
    if precision not in caps.precisions:
        return f"supports precisions {', '.join(caps.precisions)}, not {precision}"
    if model.kind not in caps.sources:
        return f"needs a PyTorch model; {model.source} is an {model.kind.upper()} file"
    if model.quantized and not (precision == "int8" and caps.qat_int8):
        return "cannot convert a quantization-aware-trained model" if not caps.qat_int8 else "a QAT model exports as int8"
    return backend.unavailable_reason()


def export(
    model: LoadedModel,
    backend: str,
    out: str | os.PathLike,
    precision: str = "fp32",
    threads: int | None = None,
    options: dict[str, Any] | None = None,
    overwrite: bool = False,
    calibration: np.ndarray | None = None,
    validation: Validation | None = None,
) -> Artifact:
    """Compile ``model`` for ``backend`` into the folder ``out``, verified for parity.

    ``calibration``: real, preprocessed inputs (N, ...), required for INT8; its first
    ``INT8_PROBE`` samples also serve as the parity probe, since a quantized model is only
    expected to agree with the reference on data like the data it was calibrated on.
    ``validation``: labelled inputs and a max accuracy drop, for accuracy-aware INT8; the
    manifest's ``accuracy_control`` then says whether the drop was reached (the best
    candidate is kept either way).
    """
    runtime = get_backend(backend)
    reason = unsupported_reason(runtime, model, precision)
    if reason:
        raise BackendUnavailable(f"{backend} cannot be used here: {reason}")
    options = dict(options or {})
    unknown = sorted(set(options) - set(runtime.capabilities.options))
    if unknown:
        raise ConfigError(f"{backend} has no option(s) {unknown}; it accepts {list(runtime.capabilities.options)}")
    if precision == "int8" and (calibration is None or len(calibration) == 0):
        raise ConfigError("INT8 needs calibration data: pass --calibrate DATA (a few hundred real images)")
    if calibration is not None:
        calibration = model.input_spec.validate(np.asarray(calibration))  # same checks as any input
    if validation is not None and (model.quantized or not (precision == "int8" and runtime.capabilities.accuracy_aware_int8)):
        raise ConfigError(f"a max accuracy drop applies to INT8 on backends with accuracy-aware quantization "
                          f"({', '.join(b.name for b in all_backends() if b.capabilities.accuracy_aware_int8)})")
    spec = dataclasses.replace(model.input_spec, max_batch=runtime.capabilities.max_batch if model.input_spec.dynamic_batch else None)
    try:
        return _build(runtime, dataclasses.replace(model, input_spec=spec), out, precision, threads, options,
                      overwrite, [], calibration, validation)
    except (ParityError, BackendUnavailable):
        raise
    except BackendError as exc:
        if not spec.dynamic_batch:
            raise
        # Some lowerings cannot keep the batch dimension dynamic for every model (XNNPACK
        # with a channel shuffle, say). A fixed-batch artifact at the spec's own batch is
        # still useful for latency; say so in the manifest rather than fail.
        fixed = dataclasses.replace(spec, dynamic_batch=False, max_batch=None)
        note = f"dynamic batch failed ({exc}); built for fixed batch {fixed.shape[0]}"
        return _build(runtime, dataclasses.replace(model, input_spec=fixed), out, precision, threads, options,
                      overwrite, [note], calibration, validation)


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


def _run_probe(session, probe: np.ndarray, spec) -> list[np.ndarray]:
    """Run ``probe`` through ``session`` in batches the artifact accepts; concatenate outputs."""
    step = (spec.max_batch or len(probe)) if spec.dynamic_batch else spec.shape[0]
    chunks = [session.run([probe[i:i + step]]) for i in range(0, len(probe), step)]
    return [np.concatenate([chunk[k] for chunk in chunks]) for k in range(len(chunks[0]))]


def _build(runtime: Backend, model: LoadedModel, out, precision: str, threads: int | None,
           options: dict[str, Any], overwrite: bool, notes: list[str], calibration: np.ndarray | None,
           validation: Validation | None) -> Artifact:
    """Compile, write, load back, run the probe, check parity; commit only if it holds."""
    backend, spec = runtime.name, model.input_spec
    probe = _probe(spec, calibration)
    reference = model.reference()(probe)

    with ArtifactWriter(out, overwrite=overwrite) as writer:
        result = _guarded(f"{backend} could not compile the model", runtime.compile, model, precision, writer.dir,
                          options, calibration, validation)
        manifest = {
            "backend": backend,
            "precision": precision,
            "entry": result.entry,
            "input": spec.to_dict(),
            "outputs": _output_records(model, reference, spec.dynamic_batch),
            "task": model.task,
            "labels": model.labels,
            "source": model.source,
            "options": options,
            "compile": result.details,
            "notes": notes + result.notes,
        }
        staged = writer.write_manifest(manifest)
        session = _guarded(f"{backend} could not load its own artifact", runtime.load, staged, threads)
        outputs = _guarded(f"{backend} could not run its own artifact", _run_probe, session, probe, spec)
        parity = compare(reference, outputs, precision, model.task)
        parity["probe_batch"] = int(probe.shape[0])
        if not parity["passed"]:
            raise ParityError(
                f"{backend} {precision} outputs diverge from the FP32 reference: {parity['reason']}",
                detail=parity["reason"], parity=parity,
            )
        if validation is not None:
            manifest["accuracy_control"] = _accuracy_control(model, session, validation)
            if not manifest["accuracy_control"]["reached"]:
                manifest["notes"].append(
                    f"cannot reach the max accuracy drop of {validation.max_drop:g} points: the best candidate found "
                    f"drops {manifest['accuracy_control']['drop_points']:.2f}; it is kept")
        writer.write_manifest({**manifest, "parity": parity})
        return writer.commit()


def _accuracy_control(model: LoadedModel, session, validation: Validation) -> dict[str, Any]:
    """Top-1 of the reference and the artifact on the validation set, and whether the drop holds."""
    reference = top1_accuracy(model.reference()(validation.inputs)[0], validation.labels)
    top1 = top1_accuracy(_run_probe(session, validation.inputs, model.input_spec)[0], validation.labels)
    drop = 100.0 * (reference - top1)
    return {"fp32_top1": reference, "top1": top1, "drop_points": drop, "max_drop_points": validation.max_drop,
            "reached": drop <= validation.max_drop + 1e-9, "samples": int(len(validation.labels))}


def _guarded(what: str, function, *args):
    """Call ``function``; turn a runtime library's exception into one BackendError line."""
    try:
        return function(*args)
    except EdgeoptError:
        raise
    except Exception as exc:  # runtimes raise their own exception types
        text = str(exc).strip()
        first = text.splitlines()[0] if text else type(exc).__name__
        raise BackendError(f"{what}: {first[:300]}") from exc


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
