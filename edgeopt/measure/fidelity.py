"""Fidelity: how closely a compiled model's outputs follow the FP32 reference.

Tolerances are named per precision: FP32 round trips must agree to 1e-3 of the
output scale with identical top-1; reduced precisions are judged by top-1 agreement
and SQNR instead, since their element-wise error is expected.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np


@dataclass(frozen=True)
class Tolerance:
    """Outputs pass when close (element-wise or by SQNR) and, for classifiers, top-1 agrees."""

    max_abs_diff: float  # relative to the reference output scale (max |ref|)
    min_top1_agreement: float
    min_sqnr_db: float


TOLERANCES = {
    # FP32 must match element-wise; SQNR alone never passes it.
    "fp32": Tolerance(max_abs_diff=1e-3, min_top1_agreement=1.0, min_sqnr_db=math.inf),
    "fp16": Tolerance(max_abs_diff=2e-2, min_top1_agreement=0.99, min_sqnr_db=25.0),
    "int8": Tolerance(max_abs_diff=math.inf, min_top1_agreement=0.9, min_sqnr_db=16.5),
    "int8-dynamic": Tolerance(max_abs_diff=math.inf, min_top1_agreement=0.9, min_sqnr_db=16.5),
}


def sqnr_db(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio in dB (inf when identical)."""
    noise = float(np.sum((reference.astype(np.float64) - candidate) ** 2))
    signal = float(np.sum(reference.astype(np.float64) ** 2))
    if noise == 0.0:
        return math.inf
    return 10.0 * math.log10(max(signal, 1e-30) / noise)


def top1_agreement(reference: np.ndarray, candidate: np.ndarray) -> float | None:
    """Share of rows whose argmax agrees, for (batch, classes) outputs; None otherwise."""
    if reference.ndim != 2 or reference.shape[1] < 2:
        return None
    return float(np.mean(reference.argmax(axis=1) == candidate.argmax(axis=1)))


def compare(
    reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray], precision: str, task: str = "unknown"
) -> dict[str, Any]:
    """Parity record of ``candidate`` against ``reference`` outputs, with a pass verdict."""
    tolerance = TOLERANCES[precision]
    if len(reference) != len(candidate):
        return {"passed": False, "reason": f"{len(candidate)} outputs, reference has {len(reference)}"}
    for ref, got in zip(reference, candidate):
        if ref.shape != np.shape(got):
            return {"passed": False, "reason": f"output shape {np.shape(got)}, reference {ref.shape}"}
    candidate = [np.asarray(c, dtype=np.float64) for c in candidate]
    scale = max(float(np.max(np.abs(r))) for r in reference) or 1.0
    unscaled = max(float(np.max(np.abs(r - c))) for r, c in zip(reference, candidate))
    sqnr = min(sqnr_db(r, c) for r, c in zip(reference, candidate))
    top1 = top1_agreement(reference[0], candidate[0])
    record = {
        "max_abs_diff": unscaled / scale,
        "max_abs_diff_unscaled": unscaled,
        "output_scale": scale,
        "top1_agreement": top1,
        "sqnr_db": sqnr if math.isfinite(sqnr) else None,
        "tolerance": asdict(tolerance),
    }
    finite = all(np.isfinite(c).all() for c in candidate)
    close = record["max_abs_diff"] <= tolerance.max_abs_diff or sqnr >= tolerance.min_sqnr_db
    # Top-1 is a verdict only for classifiers; for other tasks it is reported, not judged.
    agrees = task != "classification" or top1 is None or top1 >= tolerance.min_top1_agreement
    record["passed"] = bool(finite and close and agrees)
    if not record["passed"]:
        record["reason"] = "non-finite outputs" if not finite else (
            f"max abs diff {record['max_abs_diff']:.2e} of output scale (tolerance {tolerance.max_abs_diff:g})"
            if not close else f"top-1 agreement {top1:.3f} (tolerance {tolerance.min_top1_agreement:g})"
        )
    return record
