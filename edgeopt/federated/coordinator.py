"""The two roles as processes: the coordinator (a SuperLink and the run) and a site (a SuperNode).

``coordinate`` starts Flower's SuperLink, submits edgeopt's app with the federation's settings,
follows the rounds as ``state.json`` records them, and returns when the run ends, with the
SuperLink stopped. ``join`` runs one site's SuperNode until it is told to stop. Both refuse
what would lose work: a run folder that already holds a federation is continued only with
``resume``, and a run that stops before its last round says which round it reached and where
its log is.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path
from typing import Callable

from edgeopt.core.errors import ConfigError, EdgeoptError
from edgeopt.federated.processes import Address, start_superlink, start_supernode, submit, write_app
from edgeopt.federated.settings import FederationSettings, SiteSettings
from edgeopt.federated.state import RunState

POLL = 0.5


class FederationError(EdgeoptError):
    """A federation stopped before its last round."""


def prepare(settings: FederationSettings, resume: bool) -> tuple[FederationSettings, RunState | None]:
    """The settings to run with and the state to continue from: a folder that holds a federation
    is continued (with the settings it was started with) only when asked."""
    out = Path(settings.out)
    state = RunState.read(out)
    if state is None:
        return settings, None
    if not resume:
        raise ConfigError(f"{out} already holds a federation (round {state.round} of {state.rounds}); pass --resume "
                          "to continue it, or choose another --out")
    saved = FederationSettings.from_run_config(state.settings)
    return dataclasses.replace(saved, rounds=max(saved.rounds, settings.rounds)), state


def coordinate(settings: FederationSettings, address: Address, *, resume: bool = False,
               on_round: Callable[[dict], None] | None = None, stop: threading.Event | None = None) -> RunState:
    """Run the federation ``settings`` describe on a SuperLink at ``address``; the state after its last round.

    ``on_round`` gets each round's history entry as it is checkpointed; ``stop`` ends the run early
    (its last finished round stays checkpointed, for ``resume``).
    """
    settings, state = prepare(settings, resume)
    out = Path(settings.out).resolve()
    data = str(Path(settings.data).resolve()) if settings.data and Path(settings.data).exists() else settings.data
    settings = dataclasses.replace(settings, out=str(out), model=str(Path(settings.model).resolve()), data=data)
    if state is not None and state.finished:
        return state
    workdir = out / "flower"
    link = start_superlink(address, workdir)
    run = None
    try:
        run = submit(write_app(workdir, FederationSettings), settings.to_run_config(), workdir, address)
        seen = state.round if state else 0
        while run.alive() and not (stop and stop.is_set()):
            seen = _report(out, seen, on_round)
            if not link.alive():
                raise FederationError(f"the SuperLink exited (code {link.process.returncode}):\n{link.tail()}")
            time.sleep(POLL)
        _report(out, seen, on_round)
    finally:
        if run is not None:
            run.stop()
        link.stop()
    final = RunState.read(out)
    if final is None or not final.finished:
        reached = final.round if final else 0
        raise FederationError(f"the federation stopped after round {reached} of {settings.rounds}; its log is "
                              f"{workdir / 'logs' / 'run.log'}; continue it with --resume:\n{run.tail() if run else ''}")
    return final


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
    site = dataclasses.replace(site, data=str(Path(site.data).resolve()) if site.data != "digits" else site.data)
    node = start_supernode(superlink, site.to_node_config(), Path(workdir), name)
    try:
        while node.alive() and not (stop and stop.is_set()):
            time.sleep(POLL)
        if not node.alive() and not (stop and stop.is_set()):
            raise FederationError(f"the SuperNode of {name} exited (code {node.process.returncode}):\n{node.tail()}")
    finally:
        node.stop()
