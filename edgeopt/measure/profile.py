"""Operator-level profiles: torch.profiler tables and traces, FLOPs, MACs and parameters.

``count_macs`` is edgeopt's one MAC counter (``torch.utils.flop_counter``): pruning to a
MAC target, the printed MMACs and the device estimates all count the same way.

The trace is written with ``tensorboard_trace_handler``, so the same file opens in
TensorBoard (torch-tb-profiler) and in chrome://tracing / Perfetto. Runtime-native
per-layer profiles (ONNX Runtime, OpenVINO) come from each backend's ``profile``.

Example:
    >>> summary = torch_profile(load_model("torchvision:resnet18"), Path("prof"))  # doctest: +SKIP
    >>> summary["operators"][0]["name"]                                          # doctest: +SKIP
    'aten::mkldnn_convolution'
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from edgeopt.models.sources import LoadedModel


def count_macs(module: "torch.nn.Module", example: "torch.Tensor") -> tuple[int, int]:
    """(MACs of one forward pass on ``example``, parameters) of ``module``."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    was_training = module.training
    module.eval()
    try:
        with counter, torch.no_grad():
            module(example)
    finally:
        module.train(was_training)
    return int(counter.get_total_flops()) // 2, int(sum(p.numel() for p in module.parameters()))


def count_flops_and_params(model: "LoadedModel") -> dict[str, int]:
    """FLOPs and MACs of one forward pass at the model's InputSpec shape, and its parameters."""
    import torch

    example = torch.from_numpy(model.input_spec.example())
    macs, params = count_macs(model.module, example)
    return {"flops": 2 * macs, "macs": macs, "params": params, "batch": int(example.shape[0])}


def torch_profile(model: "LoadedModel", out_dir: Path, iters: int = 10, threads: int | None = None,
                  top: int = 25) -> dict[str, Any]:
    """Profile ``iters`` eager forward passes; return the operator table and the trace path."""
    import torch
    from torch.profiler import ProfilerActivity, profile, schedule, tensorboard_trace_handler

    if threads:
        torch.set_num_threads(threads)
    out_dir.mkdir(parents=True, exist_ok=True)
    example = torch.from_numpy(model.input_spec.example())
    module = model.module.eval()
    with torch.inference_mode():
        for _ in range(3):
            module(example)
        with profile(
            activities=[ProfilerActivity.CPU],
            record_shapes=True,
            schedule=schedule(wait=0, warmup=1, active=iters, repeat=1),
            on_trace_ready=tensorboard_trace_handler(str(out_dir), worker_name="edgeopt"),
        ) as prof:
            for _ in range(iters + 1):
                module(example)
                prof.step()
    events = prof.key_averages(group_by_input_shape=True)
    rows = [
        {
            "name": e.key,
            "input_shapes": str(e.input_shapes),
            "calls": int(e.count // iters) if e.count >= iters else int(e.count),
            "self_cpu_ms": e.self_cpu_time_total / 1000.0 / iters,
            "cpu_total_ms": e.cpu_time_total / 1000.0 / iters,
        }
        for e in events
    ]
    rows.sort(key=lambda r: r["self_cpu_ms"], reverse=True)
    traces = sorted(out_dir.glob("*.pt.trace.json"), key=lambda p: p.stat().st_mtime)
    return {"operators": rows[:top], "trace": str(traces[-1]) if traces else None, "iters": iters}
