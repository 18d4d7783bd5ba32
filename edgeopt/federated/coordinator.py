"""The two roles as processes: the coordinator (a SuperLink and the run) and a site (a SuperNode).

``coordinate`` starts Flower's SuperLink, submits edgeopt's app with the federation's settings,
follows the rounds as ``state.json`` records them, and returns when the run ends, with the
SuperLink stopped. ``join`` runs one site's SuperNode until it is told to stop. Both refuse
what would lose work: a run folder that already holds a federation is continued only with
``resume``, and a run that stops before its last round says which round it reached and where
its log is.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

from edgeopt.core.errors import ConfigError, EdgeoptError
from edgeopt.federated.processes import (Address, free_port, start_gateway, start_superlink, start_supernode, submit,
                                        write_app)
from edgeopt.federated.settings import FederationSettings, SiteSettings
from edgeopt.federated.state import RunState

POLL = 0.5


class FederationError(EdgeoptError):
    """A federation stopped before its last round."""


def prepare(settings: FederationSettings, resume: bool) -> tuple[FederationSettings, RunState | None]:
    """The settings to run with and the state to continue from. A folder that holds a federation is
    continued only when asked, with the settings it was started with, in the folder it is in now (it
    may have moved), to ``settings.rounds`` rounds in all (the command line's --rounds defaults to the
    saved number on --resume)."""
    out = Path(settings.out)
    state = RunState.read(out)
    if state is None:
        return settings, None
    if not resume:
        raise ConfigError(f"{out} already holds a federation (round {state.round} of {state.rounds}); pass --resume "
                          "to continue it, or choose another --out")
    if settings.rounds < state.round:
        raise ConfigError(f"{out} has finished {state.round} rounds already; --rounds must be at least that")
    saved = FederationSettings.from_run_config(state.settings)
    return dataclasses.replace(saved, out=str(out), rounds=settings.rounds), state


@contextlib.contextmanager
def run_folder_lock(out: Path) -> Iterator[None]:
    """One coordinator per run folder: a second one (a --resume while the first still runs) is refused."""
    import fcntl

    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"another edgeopt federate server is running in {out}; wait for it or stop it") from None
        yield


def coordinate(settings: FederationSettings, address: Address, *, resume: bool = False,
               on_round: Callable[[dict], None] | None = None, stop: threading.Event | None = None) -> RunState:
    """Run the federation ``settings`` describe, the sites connecting at ``address``; the state after its last round.

    The SuperLink itself listens on 127.0.0.1 only; at ``address`` a gateway passes the sites' fleet
    API through and nothing else (``edgeopt.federated.gateway``). ``on_round`` gets each round's history entry as it is
    checkpointed; ``stop`` ends the run early (its last finished round stays checkpointed, for ``resume``).
    """
    out = Path(settings.out).resolve()
    with run_folder_lock(out):
        settings, state = prepare(dataclasses.replace(settings, out=str(out)), resume)
        if state is not None and state.finished:
            return state
        if state is None:  # the ServerApp runs elsewhere (Flower's process, its own folder): paths made absolute
            settings = dataclasses.replace(settings, model=_absolute(settings.model), data=_absolute(settings.data))
            from edgeopt.models.sources import load_model

            load_model(settings.model)  # a model that does not load is refused here, before any process starts
        return _run(settings, address, out, state, on_round, stop)


def _run(settings: FederationSettings, address: Address, out: Path, state: RunState | None,
         on_round: Callable[[dict], None] | None, stop: threading.Event | None) -> RunState:
    workdir = out / "flower"
    internal = Address("127.0.0.1", free_port())
    link = start_superlink(internal, workdir)
    gateway = run = None
    try:
        gateway = start_gateway(address, internal, workdir)
        run = submit(write_app(workdir, FederationSettings), settings.to_run_config(), workdir, internal)
        seen = state.round if state else 0
        while run.alive() and not (stop and stop.is_set()):
            seen = _report(out, seen, on_round)
            for child in (link, gateway):
                if not child.alive():
                    raise FederationError(f"{child.name} exited (code {child.process.returncode}):\n{child.tail()}")
            time.sleep(POLL)
        _report(out, seen, on_round)
    finally:
        for child in (run, gateway, link):
            if child is not None:
                child.stop()
    final = RunState.read(out)
    if final is None or not final.finished:
        reached = final.round if final else 0
        raise FederationError(f"the federation stopped after round {reached} of {settings.rounds}; its log is "
                              f"{workdir / 'logs' / 'run.log'}; continue it with --resume:\n{run.tail() if run else ''}")
    return final


def _absolute(source: str) -> str:
    """A path that exists, made absolute; anything else (``digits``, ``torchvision:resnet18``) as it is."""
    return str(Path(source).resolve()) if source and Path(source).exists() else source


def _report(out: Path, seen: int, on_round: Callable[[dict], None] | None) -> int:
    try:
        state = RunState.read(out)
    except ConfigError:  # being replaced this instant: read it next time
        return seen
    if state is None:
        return seen
    for entry in state.history:
        if seen < entry.get("round", 0) and on_round:
            on_round(entry)
    return max(seen, state.round)


def join(site: SiteSettings, superlink: Address, workdir: Path, name: str = "site",
         stop: threading.Event | None = None) -> None:
    """Run this site's SuperNode, connected to ``superlink`` (retrying while it is away), until ``stop``."""
    if not Path(site.data).exists() and site.data != "digits":
        raise ConfigError(f"the site's data {site.data} does not exist; pass --data with its images (.npz or a folder)")
    site = dataclasses.replace(site, data=_absolute(site.data))
    node = start_supernode(superlink, site.to_node_config(), Path(workdir), name)
    try:
        while node.alive() and not (stop and stop.is_set()):
            time.sleep(POLL)
        if not node.alive() and not (stop and stop.is_set()):
            raise FederationError(f"the SuperNode of {name} exited (code {node.process.returncode}):\n{node.tail()}")
    finally:
        node.stop()
