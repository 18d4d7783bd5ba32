"""Shared by the ONNX-based backends: write the model as one ONNX file.

A PyTorch model goes through the dynamo-based ``torch.onnx.export`` (the maintained
exporter) with a dynamic batch dimension; an ONNX source is copied with its external
data folded in, so the artifact is self-contained.

A quantization-aware-trained model (NNCF fake-quantizers) is stripped to native torch
fake-quantize ops and exported with the TorchScript-based exporter, which turns them into
QuantizeLinear/DequantizeLinear pairs; torch.export cannot trace NNCF's hooked module.
"""

from __future__ import annotations

from pathlib import Path

from edgeopt.core.errors import BackendError, first_line

OPSET = 18
# Protobuf cannot hold more than 2 GiB; larger models keep their weights beside the file.
PROTOBUF_LIMIT_BYTES = 2 * 1024**3 - 1024**2


def write_onnx(model, path: Path) -> None:
    """Write ``model`` (a LoadedModel) as ONNX at ``path``."""
    if model.kind == "onnx":
        import onnx

        onnx.save(onnx.load(str(model.onnx_path)), str(path))
        return
    import torch

    spec = model.input_spec
    example = torch.from_numpy(spec.example(batch=2 if spec.dynamic_batch else None))
    if model.quantized:
        _write_qat_onnx(model.module, example, spec, path)
        return
    dynamic = ({0: torch.export.Dim("batch", min=1, max=4096)},) if spec.dynamic_batch else None
    weight_bytes = sum(p.numel() * p.element_size() for p in model.module.parameters())
    try:
        program = torch.onnx.export(
            model.module, (example,), dynamo=True, opset_version=OPSET,
            input_names=[spec.name], dynamic_shapes=dynamic, verbose=False,
        )
        program.save(str(path), external_data=weight_bytes > PROTOBUF_LIMIT_BYTES)
    except Exception as exc:  # the exporter raises many types; all mean "cannot export"
        raise BackendError(f"torch.onnx.export failed: {first_line(exc)}") from exc


def _write_qat_onnx(module, example, spec, path: Path) -> None:
    import warnings

    import nncf
    import torch

    # NNCF's quantizers as native torch fake-quantize ops, which the exporter writes as Q/DQ pairs
    native = nncf.strip(module, do_copy=True, strip_format=nncf.StripFormat.NATIVE, example_input=example)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(native.eval(), (example,), str(path), dynamo=False,
                              opset_version=OPSET, input_names=[spec.name],
                              dynamic_axes={spec.name: {0: "batch"}} if spec.dynamic_batch else None)
    except Exception as exc:  # noqa: BLE001 - the exporter raises many types; all mean "cannot export"
        raise BackendError(f"exporting the QAT model to ONNX failed: {first_line(exc)}") from exc
