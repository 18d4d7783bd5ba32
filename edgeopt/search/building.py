"""Building one candidate: its recipe's steps and export, into ``OUT/candidates/<hash>/`` — wherever it runs.

The search splits a candidate in two. Building (fine-tuning, export, the export's own
verification) is the long part and may run anywhere: here, or on a cluster's worker node
(``search.executor``). Judging it (scoring on the test split, timing, the goals) is
``Meter.judge``'s and always happens where the journal is. ``Built`` is what crosses between
the two: whether the build finished, stopped at the deadline or failed, and why.

Example:
    >>> Built("failed", "parity: top-1 agreement 0.41").ok
    False
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edgeopt.core.deadline import NO_DEADLINE, BudgetExhausted, Deadline
from edgeopt.core.errors import EdgeoptError
from edgeopt.search.native_log import native_output_to

if TYPE_CHECKING:
    from edgeopt.pipeline.builder import BuildContext
    from edgeopt.pipeline.recipe import Recipe


@dataclass
class Built:
    """How one build ended: ``ok``, ``stopped`` (at the deadline; ``--resume`` builds it again) or ``failed``;
    ``built_on``: the cluster node that built it (None: this machine)."""

    status: str
    reason: str | None = None
    elapsed_s: float = 0.0
    built_on: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def candidate_folder(out: Path, recipe: "Recipe") -> Path:
    return out / "candidates" / recipe.hash


def build_candidate(recipe: "Recipe", context: "BuildContext", out: Path, deadline: Deadline = NO_DEADLINE) -> Built:
    """Build ``recipe`` into ``candidate_folder(out, recipe)``: recipe.toml, artifact/ and build.log (what native
    libraries print goes there, not to the console). Never raises for the candidate's own failure."""
    from edgeopt.pipeline.builder import build

    started = time.monotonic()
    folder = candidate_folder(out, recipe)
    recipe.write(folder / "recipe.toml")
    try:
        with native_output_to(folder / "build.log"):
            build(recipe, context, folder / "artifact", overwrite=True, deadline=deadline)
    except BudgetExhausted as exc:  # not a failure: --resume with budget left builds it again
        return Built("stopped", f"{exc}; `--resume` with more budget continues it", time.monotonic() - started)
    except EdgeoptError as exc:
        return Built("failed", str(exc), time.monotonic() - started)
    except Exception as exc:  # a bug in one candidate must not end a search of hours: record it, go on
        return Built("failed", unexpected(exc, folder / "build.log"), time.monotonic() - started)
    return Built("ok", elapsed_s=time.monotonic() - started)


def unexpected(exc: Exception, log: Path) -> str:
    """The reason a candidate failed on a bug (``exc``, being handled), its traceback appended to ``log``."""
    import traceback

    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as handle:
        traceback.print_exc(file=handle)
    return f"unexpected {type(exc).__name__}: {str(exc).strip()[:200]} (traceback in its build.log)"
