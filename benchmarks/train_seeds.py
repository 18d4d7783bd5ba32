"""The demo's training (ResNet-18 on digits at 48x48, 8 epochs, no augmentation) with several seeds: how much
the test top-1 moves from seed to seed, to tell a change in the demo's baseline from luck.

    .venv/bin/python benchmarks/train_seeds.py --seeds 0,1,2 [--out runs/train-seeds]

Run it on two checkouts (PYTHONPATH=OTHER_CHECKOUT) to compare code; RESULTS.md (the demo section) has a run.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import edgeopt

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "train-seeds")
    args = parser.parse_args()
    top1 = []
    for seed in (int(s) for s in args.seeds.split(",")):
        trained = edgeopt.train("digits", "torchvision:resnet18", args.out / f"seed{seed}.safetensors", args.epochs,
                                augment=False, input_size=48, seed=seed, progress=False)
        top1.append(trained.measurement.metrics["top1"])
        print(f"seed {seed}: test top-1 {top1[-1]:.2%}", flush=True)
    print(f"{edgeopt.__file__}: mean {statistics.mean(top1):.2%}, range {min(top1):.2%}–{max(top1):.2%}")


if __name__ == "__main__":
    main()
