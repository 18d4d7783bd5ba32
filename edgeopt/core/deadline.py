"""A deadline that long work checks as it goes, and the error it stops that work with.

A search has a wall-clock budget; the work inside one candidate (fine-tuning epochs,
calibration, accuracy-aware INT8) can be long enough to overrun it. The search hands one
``Deadline`` down to that work explicitly (never a global): at each point where the work
can stop cleanly — a training batch, a calibration sample, an accuracy evaluation — it
calls ``check``, which raises ``BudgetExhausted`` once the deadline has passed. The same
call reports how far the work is (``on_check``), so the caller's clock and progress move
while a candidate works. ``NO_DEADLINE`` never expires and reports nothing.

Example:
    >>> deadline = Deadline.after(60.0)
    >>> 59.0 < deadline.remaining() <= 60.0
    True
    >>> deadline.check("calibration samples", 10, 300)       # well inside the budget: returns
    >>> Deadline.after(0.0).check("training batches", 340, 2250)
    Traceback (most recent call last):
    ...
    edgeopt.core.deadline.BudgetExhausted: the time budget ran out during training batches (340/2250)
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Callable

from edgeopt.core.errors import EdgeoptError

# (step, done, total): what the work is doing and how far it is (done/total may be None)
ProgressHook = Callable[[str, "int | None", "int | None"], None]


class BudgetExhausted(EdgeoptError):
    """The time budget ran out while some work was under way; it stopped at a clean point.

    Not a failure of that work: a search journals it as stopped, and ``--resume`` (with
    budget left) runs it again, continuing from its checkpoints.
    """

    def __init__(self, step: str = "", done: int | None = None, total: int | None = None) -> None:
        where = f" during {step}" if step else ""
        if step and done is not None:
            where += f" ({done}/{total})" if total is not None else f" ({done})"
        super().__init__(f"the time budget ran out{where}")
        self.step = step


@dataclass(frozen=True)
class Deadline:
    """An instant on the monotonic clock (``at``), and who hears of each check (``on_check``)."""

    at: float = math.inf
    on_check: ProgressHook | None = None

    @classmethod
    def after(cls, seconds: float, on_check: ProgressHook | None = None) -> "Deadline":
        return cls(time.monotonic() + seconds, on_check)

    def remaining(self) -> float:
        """Seconds left (negative once passed; infinite without a deadline)."""
        return self.at - time.monotonic()

    @property
    def expired(self) -> bool:
        return self.remaining() <= 0

    def check(self, step: str = "", done: int | None = None, total: int | None = None) -> None:
        """Report progress, then raise ``BudgetExhausted`` if the deadline has passed."""
        if self.on_check is not None and step:
            self.on_check(step, done, total)
        if self.expired:
            raise BudgetExhausted(step, done, total)

    def reporting_to(self, on_check: ProgressHook | None) -> "Deadline":
        """The same instant, with another listener."""
        return dataclasses.replace(self, on_check=on_check)


NO_DEADLINE = Deadline()
