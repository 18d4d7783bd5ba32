"""Builds a search's candidates as tasks on a Ray cluster (``optimize --cluster auto|HOST:PORT``, ``edgeopt[ray]``).

Each build is one Ray task declaring its CPUs (``--cluster-cpus``); Ray places it on a node with
room, and tries it again elsewhere when its worker or node is lost (``--cluster-retries``): a build
lost more often than that is journaled ``failed`` with the reason, never dropped. As many builds
are in flight as the cluster has CPUs for them. The baseline's model and data go to the cluster
once (Ray's object store); each task gets the cached models its steps start from and returns
the candidate's folder and the models it made (``remote_build``).

Timing stays off the nodes that train: the search times candidates on the device's agent or on its
own node, and its own node must offer the cluster no CPUs (``ray start --head --num-cpus 0``) — with
an agent too, since this machine's timing is the side-by-side ranking — else the search refuses to
start, since a latency would be taken beside another candidate's training.

A Ray cluster runs what its members send it, and Ray's transport is pickle: a member can run code
on the search's machine. Join only nodes you trust, with Ray's token authentication on (its
default); the checks on what a build sends back guard against a broken worker, not a hostile one.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from edgeopt.core.deadline import Deadline
from edgeopt.core.errors import ConfigError
from edgeopt.search.building import Built, candidate_folder
from edgeopt.search.executor import ClusterConfig
from edgeopt.search.remote_build import (BuildJob, build_remotely, cached_models, digest, files_of, pack_files,
                                         sources_of, unpack_files)

if TYPE_CHECKING:
    from edgeopt.pipeline.builder import BuildContext
    from edgeopt.pipeline.recipe import Recipe

GRACE_S = 120.0  # past the deadline, how long a build may take to stop at its next check before it is cancelled


def _build_on_node(job: BuildJob, sources) -> tuple[Built, bytes]:
    """The task: ``remote_build.build_remotely``, its record naming the node (host and Ray node id) that built it."""
    import ray

    built, files = build_remotely(job, sources)
    built.built_on = f"{built.built_on} ({ray.get_runtime_context().get_node_id()[:8]})"
    return built, files


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[-1][:200] if text else type(exc).__name__


def _check_recipe(out: Path, recipe: "Recipe") -> None:
    """The artifact a worker returned was built from ``recipe`` (its manifest says so), or ConfigError."""
    from edgeopt.core.artifact import Artifact
    from edgeopt.core.errors import ArtifactError

    try:
        made_from = Artifact.open(candidate_folder(out, recipe) / "artifact").manifest.get("recipe")
    except ArtifactError as exc:
        raise ConfigError(f"an artifact that does not open ({exc})") from None
    if made_from != recipe.to_dict():
        raise ConfigError("an artifact whose manifest names another recipe")


def _ray():
    try:
        import ray
    except ImportError:
        raise ConfigError("--cluster needs Ray: pip install 'edgeopt[ray]' (on every node of the cluster too)") from None
    return ray


class RayExecutor:
    """Builds on a Ray cluster (see the module docstring)."""

    name = "ray"

    def __init__(self, cluster: ClusterConfig, context: "BuildContext", out: Path, base: "Recipe") -> None:
        import edgeopt

        ray = _ray()
        self.cluster, self.context, self.out, self.base = cluster, context, out, base
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # nothing leaves for Ray's usage statistics
        try:
            ray.init(address=cluster.address, logging_level="WARNING", log_to_driver=False)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise ConfigError(f"cannot join the Ray cluster at {cluster.address}: {exc}") from None
        # a build declares the CPUs it trains with: the cluster's scheduling then matches what runs
        self.cpus = cluster.cpus or context.threads or 1
        try:
            self.driver_node, self.sharing = self._check_timing_node(ray)
            if self.slots() == 0:
                raise ConfigError(f"no node of the cluster at {cluster.address} offers the {self.cpus} CPUs one build "
                                  "declares: start workers with more (ray start --num-cpus N), or lower --cluster-cpus")
            sources = sources_of(base)
            self.sources, self.sources_sha256 = ray.put(sources), digest(sources)
        except BaseException:
            ray.shutdown()
            raise
        self.version = edgeopt.__version__
        self.task = ray.remote(_build_on_node).options(num_cpus=self.cpus, max_retries=cluster.retries,
                                                       retry_exceptions=False)
        self.pending: dict = {}  # ObjectRef -> (recipe, deadline, submitted at, bytes sent)
        self.builds: list[dict] = []  # per build back: its node, its time on the worker and around it (overhead)
        # the baseline's files go to the cluster once (each node fetches them once); cached models with each build
        self.moved_bytes = {"sources": sum(len(data) for _, data in sources.values()), "to_workers": 0,
                            "from_workers": 0}

    @staticmethod
    def _check_timing_node(ray) -> tuple[str, int]:
        """The search's own node's address, and how many CPU-offering nodes share that address (the same machine
        running several Ray nodes, as in tests). Refused when the search's node itself offers CPUs to tasks:
        candidates are judged and timed here (with an agent, this machine's timing is the side-by-side one)."""
        mine = ray.get_runtime_context().get_node_id()
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        node = next((n for n in nodes if n["NodeID"] == mine), {})
        address = node.get("NodeManagerAddress", "this machine")
        if node.get("Resources", {}).get("CPU", 0) > 0:
            raise ConfigError(f"this machine ({address}) offers {node['Resources']['CPU']:g} CPUs to the cluster's "
                              "tasks, and candidates are timed here: a latency would be taken beside another "
                              "candidate's training. Start this node with `ray start --head --num-cpus 0` (or join "
                              "with --num-cpus 0)")
        sharing = sum(1 for n in nodes if n.get("NodeManagerAddress") == address and n["Resources"].get("CPU", 0) > 0)
        return address, sharing

    def slots(self) -> int:
        """Builds that fit at once: each live node's CPUs divided by a build's, summed (a build never spans nodes)."""
        return sum(int(n["Resources"].get("CPU", 0) // self.cpus) for n in _ray().nodes() if n.get("Alive"))

    def submit(self, recipe: "Recipe", deadline: Deadline) -> None:
        cache = pack_files(self.context.workdir, cached_models(self.context, recipe))
        job = BuildJob(recipe, self.base, self.context.baseline.source, self.cpus, time.time() + deadline.remaining(),
                       cache, self.version, self.sources_sha256)
        self.moved_bytes["to_workers"] += len(cache)
        self.pending[self.task.remote(job, self.sources)] = (recipe, deadline, time.monotonic(), len(cache))

    def in_flight(self) -> list["Recipe"]:
        return [recipe for recipe, *_ in self.pending.values()]

    def collect(self, wait: bool) -> list[tuple["Recipe", Built]]:
        ray = _ray()
        if not self.pending:
            return []
        timeout = self._wait_s() if wait else 0
        ready, _ = ray.wait(list(self.pending), num_returns=1 if wait else len(self.pending), timeout=timeout)
        if wait and not ready:  # past the deadline and its grace: whatever still runs is stopped
            return self._cancel_all()
        # waited for: the time around the build is the cluster's overhead (not so when it was ready earlier)
        return [self._ended(ref, waited=wait and len(ready) == 1) for ref in ready]

    def _wait_s(self) -> float:
        """Until the earliest pending deadline, plus the grace a build has to stop at its next check."""
        earliest = min(deadline.remaining() for _, deadline, *_ in self.pending.values())
        return max(earliest, 0.0) + GRACE_S

    def _ended(self, ref, waited: bool) -> tuple["Recipe", Built]:
        ray = _ray()
        recipe, _, submitted, sent = self.pending.pop(ref)
        recipe.write(candidate_folder(self.out, recipe) / "recipe.toml")  # the search's own, never a worker's
        try:
            built, files = ray.get(ref)
        except ray.exceptions.RayTaskError as exc:  # raised on the worker outside the build (loading the baseline)
            return recipe, Built("failed", f"its build could not start on the worker: {_first_line(exc)}",
                                 time.monotonic() - submitted)
        except ray.exceptions.RayError as exc:  # its worker or node lost more often than the retries allow
            return recipe, Built("failed", f"its build was lost with its worker {self.cluster.retries + 1} time(s) "
                                           f"({type(exc).__name__}: {_first_line(exc)}); the search went on without it",
                                 time.monotonic() - submitted)
        self.moved_bytes["from_workers"] += len(files)
        try:
            unpack_files(files, self.out, files_of(recipe))
            if built.ok:
                _check_recipe(self.out, recipe)
        except ConfigError as exc:
            return recipe, Built("failed", f"its worker {built.built_on} sent back {exc}", built.elapsed_s,
                                 built.built_on)
        around = time.monotonic() - submitted
        self.builds.append({"key": recipe.hash, "label": recipe.label, "node": built.built_on, "build_s": built.elapsed_s,
                            "round_trip_s": around, "overhead_s": around - built.elapsed_s if waited else None,
                            "bytes_sent": sent, "bytes_back": len(files)})
        return recipe, built

    def _cancel_all(self) -> list[tuple["Recipe", Built]]:
        ray = _ray()
        ended = []
        for ref, (recipe, _, submitted, _) in list(self.pending.items()):
            ray.cancel(ref, force=True)
            ended.append((recipe, Built("stopped", "the budget was spent while it was still building on the cluster; "
                                                   "`--resume` with more budget builds it again",
                                        time.monotonic() - submitted)))
        self.pending.clear()
        return ended

    def describe(self) -> dict:
        nodes = sorted({b["node"] for b in self.builds if b["node"]})
        return {"name": self.name, "address": self.cluster.address, "cpus_per_build": self.cpus, "builds": self.builds,
                "nodes_sharing_timing_machine": self.sharing, "cluster_cpus": _ray().cluster_resources().get("CPU", 0),
                "built_on": nodes, "timed_on": self.driver_node, **self.moved_bytes}

    def close(self) -> None:
        ray = _ray()
        for ref in self.pending:
            ray.cancel(ref, force=True)
        self.pending.clear()
        ray.shutdown()
