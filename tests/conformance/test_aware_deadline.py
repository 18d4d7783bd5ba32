"""Accuracy-aware INT8 on every backend that offers it stops at a search's deadline, leaving nothing on disk."""

from __future__ import annotations

import pytest

from edgeopt.backends import all_backends
from edgeopt.compile import export
from edgeopt.core.deadline import BudgetExhausted
from edgeopt.pipeline.builder import quantization_data
from edgeopt.core.quantization import QuantizationConfig
from edgeopt.tasks import get_task


class PassesDuringAccuracyAware:
    """A deadline that passes once accuracy-aware INT8 is under way (after the export, the calibration and the
    first checks of its own), whatever the machine's speed."""

    def __init__(self, grace: int = 3) -> None:
        self.grace, self.steps = grace, []

    def check(self, step: str = "", done: int | None = None, total: int | None = None) -> None:
        self.steps.append(step)
        if step.startswith("accuracy-aware"):
            self.grace -= 1
            if self.grace < 0:
                raise BudgetExhausted(step, done, total)


def aware_backends():
    return [pytest.param(b.name, id=b.name, marks=[pytest.mark.skip(reason=b.unavailable_reason())]
                         if b.unavailable_reason() else [])
            for b in all_backends() if "aware" in b.capabilities.int8_modes]


@pytest.mark.parametrize("backend", aware_backends())
def test_accuracy_aware_int8_stops_at_the_deadline_with_nothing_written(backend, trained_digits, tmp_path):
    model, splits, _, _ = trained_digits
    deadline = PassesDuringAccuracyAware()
    # -50: no variant can hold it, so the whole method would run
    config = QuantizationConfig(mode="aware", max_drop=-50.0, calibration_samples=100)
    calibration, validation = quantization_data(splits, get_task("classification"), model, config)
    with pytest.raises(BudgetExhausted, match="ran out during accuracy-aware INT8"):
        export(model, backend, tmp_path / "aware", precision="int8", quantization=config, calibration=calibration,
               validation=validation, deadline=deadline)
    assert not (tmp_path / "aware").exists()
    assert deadline.steps[0].startswith("compiling") and "accuracy-aware" in deadline.steps[-1]
