"""Fidelity: how closely a compiled model's outputs follow the FP32 reference.

Two different questions, with named tolerances per precision:

- **Is it the same model?** FP32 (and FP16) round trips must match element-wise (1e-3 of
  the output scale; FP16 by SQNR) and agree on the task's fidelity measure (top-1 for
  classifiers) exactly.
- **Is the compile broken?** Reduced precisions (INT8) are expected to differ; there the
  check only refuses outputs that no longer mean anything: non-finite values, outputs that
  do not change with the input while the reference's do, or outputs whose deviation from
  the reference is as large as the reference's own input-dependent variation (the
  input-dependent SQNR at or below 0 dB). A working INT8 model that flips borderline
  predictions passes; whether it is good enough is for the measured metric against the goal.

Example:
    >>> ref = [np.array([[2.0, 1.0], [0.0, 3.0]])]
    >>> compare(ref, [ref[0] + 0.01], "int8")["passed"]
    True
    >>> compare(ref, [np.ones((2, 2))], "int8")["reason"]
    'constant outputs: output 0 is the same for every input of the probe (the compiled model ignores its input)'
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Protocol, Sequence

import numpy as np


@dataclass(frozen=True)
class Tolerance:
    """``max_abs_diff`` relative to the output scale; ``min_agreement``: the task's fidelity
    measure (e.g. top-1 agreement) that must hold, 0 for none; ``min_sqnr_db`` passes an
    element-wise miss when the SQNR is at least this high; ``min_signal_db`` is the floor of
    the input-dependent SQNR under which outputs are called broken."""

    max_abs_diff: float
    min_agreement: float
    min_sqnr_db: float
    min_signal_db: float


TOLERANCES = {
    "fp32": Tolerance(max_abs_diff=1e-3, min_agreement=1.0, min_sqnr_db=math.inf, min_signal_db=0.0),
    "fp16": Tolerance(max_abs_diff=2e-2, min_agreement=0.99, min_sqnr_db=25.0, min_signal_db=0.0),
    "int8": Tolerance(max_abs_diff=math.inf, min_agreement=0.0, min_sqnr_db=-math.inf, min_signal_db=0.0),
    "int8-dynamic": Tolerance(max_abs_diff=math.inf, min_agreement=0.0, min_sqnr_db=-math.inf, min_signal_db=0.0),
}


class Judge(Protocol):
    """What a task adds to the comparison (``edgeopt.tasks`` implements it): its own fidelity
    measures, which of them must agree for FP32, and when outputs are broken for it."""

    agreement: str | None  # the key of the measure FP32 must match exactly, e.g. "top1_agreement"

    def fidelity(self, reference: list[np.ndarray], candidate: list[np.ndarray]) -> dict[str, Any]: ...

    def broken(self, record: dict[str, Any], reference: list[np.ndarray]) -> str | None: ...


def sqnr_db(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio in dB (inf when identical)."""
    noise = float(np.sum((reference.astype(np.float64) - candidate) ** 2))
    signal = float(np.sum(reference.astype(np.float64) ** 2))
    if noise == 0.0:
        return math.inf
    return 10.0 * math.log10(max(signal, 1e-30) / noise)


def signal_db(reference: np.ndarray, candidate: np.ndarray) -> float:
    """SQNR of the input-dependent part: the reference's variation across the batch against the error.

    A constant offset shared by every input (large logits, say) inflates the plain SQNR;
    measured against the reference's own batch mean, outputs that ignore their input score
    at most 0 dB, and ones unrelated to the reference below it.
    """
    reference = reference.astype(np.float64)
    noise = float(np.sum((reference - candidate) ** 2))
    variation = float(np.sum((reference - reference.mean(axis=0, keepdims=True)) ** 2))
    if noise == 0.0:
        return math.inf
    return 10.0 * math.log10(max(variation, 1e-30) / noise)


def is_constant(outputs: np.ndarray, scale: float) -> bool:
    """Whether every sample of the batch got the same output (to 1e-6 of ``scale``)."""
    if outputs.shape[0] < 2:
        return False
    return float(np.max(np.abs(outputs - outputs[:1]))) <= 1e-6 * max(scale, 1e-30)


def compare(reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray], precision: str,
            judge: Judge | None = None) -> dict[str, Any]:
    """Parity record of ``candidate`` against ``reference`` outputs, with a verdict and its reason."""
    tolerance = TOLERANCES[precision]
    if len(reference) != len(candidate):
        return {"passed": False, "reason": f"{len(candidate)} outputs, reference has {len(reference)}"}
    for ref, got in zip(reference, candidate):
        if ref.shape != np.shape(got):
            return {"passed": False, "reason": f"output shape {np.shape(got)}, reference {ref.shape}"}
    reference = [np.asarray(r, dtype=np.float64) for r in reference]
    candidate = [np.asarray(c, dtype=np.float64) for c in candidate]
    scale = max(float(np.max(np.abs(r))) if r.size else 0.0 for r in reference) or 1.0
    unscaled = max(float(np.max(np.abs(r - c))) if r.size else 0.0 for r, c in zip(reference, candidate))
    record: dict[str, Any] = {
        "max_abs_diff": unscaled / scale,
        "max_abs_diff_unscaled": unscaled,
        "output_scale": scale,
        "sqnr_db": finite_or_none(min(sqnr_db(r, c) for r, c in zip(reference, candidate))),
        "signal_db": finite_or_none(min((signal_db(r, c) for r, c in zip(reference, candidate)
                                  if len(r) > 1 and not is_constant(r, scale)), default=math.inf)),
        **(judge.fidelity(reference, candidate) if judge else {}),
        "tolerance": asdict(tolerance),
    }
    reason = _broken(candidate, reference, scale, record, tolerance) or (judge.broken(record, reference) if judge else None)
    reason = reason or _not_the_same_model(record, tolerance, judge.agreement if judge else None)
    record["passed"] = reason is None
    if reason:
        record["reason"] = reason
    return record


def _broken(candidate, reference, scale: float, record: dict[str, Any], tolerance: Tolerance) -> str | None:
    """Outputs that mean nothing, at any precision."""
    if not all(np.isfinite(c).all() for c in candidate):
        return "non-finite outputs (NaN or infinity)"
    for index, (ref, got) in enumerate(zip(reference, candidate)):
        if is_constant(got, scale) and not is_constant(ref, scale):
            return (f"constant outputs: output {index} is the same for every input of the probe "
                    "(the compiled model ignores its input)")
    signal = record["signal_db"]
    if signal is not None and signal <= tolerance.min_signal_db:
        return (f"outputs no longer follow the input: the error is as large as the reference's own variation "
                f"(input-dependent SQNR {signal:.1f} dB)")
    return None


def _not_the_same_model(record: dict[str, Any], tolerance: Tolerance, agreement: str | None) -> str | None:
    """Where the precision promises the same model (FP32, FP16): element-wise and task agreement."""
    sqnr = math.inf if record["sqnr_db"] is None else record["sqnr_db"]
    if not (record["max_abs_diff"] <= tolerance.max_abs_diff or sqnr >= tolerance.min_sqnr_db):
        return f"max abs diff {record['max_abs_diff']:.2e} of output scale (tolerance {tolerance.max_abs_diff:g})"
    value = record.get(agreement) if agreement else None
    if value is not None and value < tolerance.min_agreement:
        return f"{agreement.replace('_', ' ')} {value:.3f} (tolerance {tolerance.min_agreement:g})"
    return None


def finite_or_none(value: float) -> float | None:
    """``value``, or None where it is infinite (identical outputs) or undefined: JSON has neither."""
    return value if math.isfinite(value) else None
