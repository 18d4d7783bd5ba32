"""Dynamic INT8 (ONNX Runtime quantize_dynamic): where it helps and where it does not.

    .venv/bin/python benchmarks/dynamic_int8.py

Times FP32 against dynamic INT8 at batch 1 for a Linear-heavy model (edgeopt.models.zoo:mlp,
512 -> 2048 -> 2048 -> 10) and a convolutional one (MobileNetV2 at 64x64), each in a fresh
worker process, and prints the table (random weights: latency does not depend on them).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from edgeopt import export, load_model
from edgeopt.measure.process import MeasureConfig, time_artifact

MODELS = {"mlp (Linear-heavy)": ("edgeopt.models.zoo:mlp", "1x512"),
          "mobilenet_v2 64x64 (convolutions)": ("torchvision:mobilenet_v2?num_classes=10", "1x3x64x64")}


def main() -> int:
    config = MeasureConfig(threads=2)
    print("| model | FP32 p50 ms | dynamic INT8 p50 ms | speed-up |\n|---|---|---|---|")
    with tempfile.TemporaryDirectory() as scratch:
        for name, (source, shape) in MODELS.items():
            model = load_model(source, input=shape)
            p50 = {}
            for precision in ("fp32", "int8-dynamic"):
                artifact = export(model, "onnxruntime", Path(scratch) / f"{len(p50)}-{name[:3]}", precision, threads=2)
                p50[precision] = time_artifact(artifact.path, config)["batches"]["1"]["p50"]
            print(f"| {name} | {p50['fp32']:.2f} | {p50['int8-dynamic']:.2f} | {p50['fp32'] / p50['int8-dynamic']:.2f}× |",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
