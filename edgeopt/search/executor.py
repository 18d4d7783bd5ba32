"""Where a search's candidates are built: here, one after another (``local``, the default), or on a cluster.

An executor takes builds (``submit``) and hands back the ones that ended (``collect``), as
``building.Built`` records with the candidate's folder written under the search's output.
The search alone decides what to build next, judges what comes back (scoring, timing),
keeps the journal and the best so far — so kill -9 of the search and ``--resume`` behave
the same whatever builds. ``local`` builds in this process at once: a search with it is
exactly a search without a cluster. ``ray`` (``edgeopt.search.ray_executor``, the
``edgeopt[ray]`` extra) sends each build to a Ray cluster as a task with declared resources
and keeps as many in flight as the cluster has room for.

Example:
    >>> executor = LocalExecutor(context, Path("out/opt"))   # doctest: +SKIP
    >>> executor.submit(recipe, deadline); executor.collect(wait=True)   # doctest: +SKIP
    [(Recipe(...), Built(status='ok', ...))]
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from edgeopt.core.deadline import Deadline
from edgeopt.core.errors import ConfigError
from edgeopt.search.building import Built, build_candidate

if TYPE_CHECKING:
    from edgeopt.pipeline.builder import BuildContext
    from edgeopt.pipeline.recipe import Recipe


class Executor(Protocol):
    name: str

    def slots(self) -> int:
        """How many builds may be in flight at once."""

    def submit(self, recipe: "Recipe", deadline: Deadline) -> None:
        """Start building ``recipe`` (stopping at ``deadline``)."""

    def collect(self, wait: bool) -> list[tuple["Recipe", Built]]:
        """The builds that ended since the last call; ``wait``: block until at least one has (if any is in flight)."""

    def in_flight(self) -> list["Recipe"]:
        """The recipes submitted and not yet collected."""

    def describe(self) -> dict:
        """What built the candidates, for the report (name, nodes, CPUs per build)."""

    def close(self) -> None:
        """Let go of the cluster (nothing of the search's is left running)."""


@dataclass(frozen=True)
class ClusterConfig:
    """A search's cluster: ``address`` as Ray takes it ("auto": the one this machine belongs to; or
    host:port), the CPUs each build declares and trains with (None: the search's own thread count, so a
    build's weights and artifact bytes are a local search's), and how often a build whose worker was lost
    is tried again."""

    address: str
    cpus: int | None = None
    retries: int = 2

    def __post_init__(self) -> None:
        if not self.address.strip():
            raise ConfigError("--cluster needs an address: auto, or the head node's host:port")
        if self.cpus is not None and self.cpus < 1:
            raise ConfigError(f"--cluster-cpus must be at least 1 (got {self.cpus})")
        if self.retries < 0:
            raise ConfigError(f"--cluster-retries cannot be negative (got {self.retries})")


class LocalExecutor:
    """Builds here, in this process, when submitted: today's search, one candidate after another."""

    name = "local"

    def __init__(self, context: "BuildContext", out: Path) -> None:
        self.context, self.out = context, out
        self.done: list[tuple["Recipe", Built]] = []

    def slots(self) -> int:
        return 1

    def submit(self, recipe: "Recipe", deadline: Deadline) -> None:
        self.done.append((recipe, build_candidate(recipe, self.context, self.out, deadline)))

    def collect(self, wait: bool) -> list[tuple["Recipe", Built]]:
        done, self.done = self.done, []
        return done

    def in_flight(self) -> list["Recipe"]:
        return []

    def describe(self) -> dict:
        return {"name": self.name}

    def close(self) -> None:
        pass


def executor_for(cluster: ClusterConfig | None, context: "BuildContext", out: Path, base: "Recipe") -> Executor:
    """The local executor, or a Ray cluster's (``edgeopt[ray]``) when ``cluster`` names one."""
    if cluster is None:
        return LocalExecutor(context, out)
    from edgeopt.search.ray_executor import RayExecutor

    return RayExecutor(cluster, context, out, base)
