"""edgeopt's Flower ServerApp: rounds of a Flower strategy over the global model, checkpointed.

The SuperLink runs this (``[tool.flwr.app.components] serverapp``) with the run config
``edgeopt federate server`` submitted (``FederationSettings``). It starts from the user's model
(or, when ``state.json`` in the run folder names a finished round, from that round's
checkpoint with the rounds left), runs Flower's ``strategy.start`` and, after every round,
scores the global model on the server's test data (when given) and checkpoints it. Every
site's reply is checked before it is aggregated (names, shapes, finite numbers, scalar
metrics) and summarised in ``OUT/replies.jsonl``; a reply that fails is left out of the round. A round
that no reply survives, or whose aggregate is not a finite model, stops the run with the last good
round checkpointed.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAdam, FedAvg, FedProx

from edgeopt.core.errors import EdgeoptError, ModelSourceError
from edgeopt.federated.settings import FederationSettings
from edgeopt.federated.state import RunState, save_round
from edgeopt.federated.statistics import pool, pooled_problem, statistic_shapes, statistics_problem
from edgeopt.federated.weights import (ARRAYS, CONFIG, METRICS, describe, load_arrays, read_arrays, reply_problem,
                                       shapes_of, to_arrays)

STRATEGY_CLASSES = {"fedavg": FedAvg, "fedprox": FedProx, "fedadam": FedAdam}
REPLIES = "replies.jsonl"
ONLY_MIN = 1e-9  # Flower samples max(int(n · fraction), min_train_nodes): a tiny fraction lets the count decide

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    settings = FederationSettings.from_run_config(context.run_config)
    run_federation(grid, settings)


def run_federation(grid: Grid, settings: FederationSettings) -> RunState | None:
    """The rounds ``settings`` ask for, continued from the run folder's state when it has one."""
    from edgeopt.models.sources import load_model

    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    state = RunState.read(out)
    if state is not None and state.finished:
        return state
    done = state.round if state else 0
    model = load_model(str(state.model_path(out)) if state else settings.model)
    strategy = checked_strategy(settings, model.module, out / REPLIES, done)
    rounds = Rounds(settings, model, strategy, out, done, state.history if state else [])
    # the sites seed each round's shuffling with seed + round; Flower counts rounds from 1 again on a resume
    train_config = ConfigRecord({**settings.train_config(), "seed": settings.seed + done, **describe(model)})
    strategy.start(grid, to_arrays(model.module), num_rounds=settings.rounds - done, timeout=settings.round_timeout,
                   train_config=train_config, evaluate_fn=rounds.after_round)
    return RunState.read(out)


class Rounds:
    """What happens after each round: score the global model, checkpoint it, log the round."""

    def __init__(self, settings: FederationSettings, model: Any, strategy: "CheckedReplies", out: Path, done: int,
                 history: list[dict[str, Any]]) -> None:
        self.settings, self.model, self.strategy, self.out = settings, model, strategy, out
        self.done, self.history = done, history
        self.test = self._test_split() if settings.data else None
        self.started = time.monotonic()

    def _test_split(self):
        from edgeopt.tasks import task_of

        task = task_of(self.model)
        return task, task.load(self.settings.data, self.model.input_spec).test

    def after_round(self, server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        if server_round == 0:  # Flower scores the starting model too (a resumed run scored it the first time)
            metrics = None if self.done else self._score()
            if metrics is not None:
                self.history.append({"round": 0, **dict(metrics)})
            return metrics
        round_done = self.done + server_round
        taken = self.strategy.take_round()
        if not taken.get("replies"):
            raise RoundFailed(f"round {round_done}: no site's reply could be used ({REPLIES} in the run folder says "
                              f"why); the global model after round {round_done - 1} is kept: --resume continues")
        try:
            load_arrays(self.model.module, read_arrays(arrays, "the strategy"), "the strategy")
        except ModelSourceError as exc:
            raise RoundFailed(f"round {round_done}: the aggregate is not a usable model ({exc}); the global model "
                              f"after round {round_done - 1} is kept: --resume continues") from None
        metrics = self._score()
        entry = {"round": round_done, "seconds": round(time.monotonic() - self.started, 2), **taken,
                 **(dict(metrics) if metrics else {})}
        self.history.append(entry)
        save_round(self.out, self.model, round_done, self.settings.rounds, self.settings.to_run_config(), self.history)
        self.started = time.monotonic()
        return metrics

    def _score(self) -> MetricRecord | None:
        if self.test is None:
            return None
        from edgeopt.passes.train import score_module

        task, test = self.test
        scores = score_module(self.model.module, test, self.model.input_spec, task)
        return MetricRecord({k: float(v) for k, v in scores.items()})


class RoundFailed(EdgeoptError):
    """A round that produced no model worth keeping: the run stops, its last good round checkpointed."""


class CheckedReplies:
    """A Flower strategy whose training replies are checked before they are aggregated.

    Mixed in before FedAvg, FedProx or FedAdam: ``configure_train`` sends the round's learning rate;
    ``aggregate_train`` drops a reply whose arrays are not the model's names and shapes (or not finite),
    whose metrics are not scalars or which holds any other record, writes a line per reply to the run's
    ``replies.jsonl`` and, when the model has BatchNorm statistics to pool, puts the sites' pooled
    statistics into the aggregate.
    """

    settings: FederationSettings
    done: int  # rounds finished before this start: Flower counts a resumed run's rounds from 1 again
    shapes: dict[str, tuple[int, ...]]
    statistics: dict[str, tuple[int, ...]]  # the BatchNorm statistics the sites measure ({}: none)
    journal: Path
    _round: dict[str, Any]

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
                        ) -> Iterable[Message]:
        lr = self.settings.round_lr(self.done + server_round)
        self._grid, self._config = grid, ConfigRecord({**dict(config), "lr": lr})
        messages = list(super().configure_train(server_round, arrays, self._config, grid))  # type: ignore[misc]
        self._round = {"sampled": len(messages), "bytes_down": arrays.count_bytes() * len(messages), "lr": lr}
        return messages

    def aggregate_train(self, server_round: int, replies: Iterable[Message]):
        accepted = []
        with open(self.journal, "a") as journal:
            for reply in replies:
                entry = self._entry(server_round, reply)
                if "problem" not in entry:
                    accepted.append(reply)
                journal.write(json.dumps(entry) + "\n")
        self._round.update(replies=len(accepted), bytes_up=sum(r.content.array_records[ARRAYS].count_bytes()
                                                                for r in accepted))
        arrays, metrics = super().aggregate_train(server_round, accepted)  # type: ignore[misc]
        if arrays is None or not self.statistics:
            return arrays, metrics
        if accepted and self.settings.bn_statistics:
            arrays, pooled = self._with_site_statistics(server_round, arrays, accepted)
            if pooled:  # pooled variances are never negative
                return arrays, metrics
        # the aggregate's own statistics: FedAdam steps them too, and a variance may cross 0
        return ArrayRecord({name: Array(np.maximum(array.numpy(), 0)) if name.endswith(".running_var") else array
                            for name, array in arrays.items()}), metrics

    def _entry(self, server_round: int, reply: Message) -> dict[str, Any]:
        entry: dict[str, Any] = {"round": self.done + server_round, "node": reply.metadata.src_node_id,
                                 "kind": "train"}
        if reply.has_error():
            return {**entry, "problem": f"the site failed: {reply.error.reason}"}
        content = reply.content
        entry["records"] = sorted(content.keys())
        entry["arrays"] = {name: [list(a.shape), a.dtype] for record in content.array_records.values()
                           for name, a in record.items()}
        entry["metrics"] = {name: value if isinstance(value, (int, float)) else type(value).__name__
                            for record in content.metric_records.values() for name, value in record.items()}
        problem = reply_problem(content, self.shapes)
        return {**entry, "problem": problem} if problem else entry

    def _with_site_statistics(self, server_round: int, arrays: ArrayRecord, trained: list[Message]
                              ) -> tuple[ArrayRecord, bool]:
        """``arrays`` with the BatchNorm statistics that the sites which ``trained`` measured on it, pooled and
        weighted by their training replies' example counts, and True; ``arrays`` and False when those cannot be
        used (each reply's fate, and the pool's, is a line of the journal). Sites with differential privacy are
        not asked."""
        counts = {reply.metadata.src_node_id: int(reply.content.metric_records[METRICS]["num-examples"])
                  for reply in trained}
        asked = [reply.metadata.src_node_id for reply in trained
                 if reply.content.metric_records[METRICS]["dp-clip"] == 0]
        content = RecordDict({ARRAYS: arrays, CONFIG: self._config})
        timeout = self.settings.round_timeout
        queries = [Message(content=content, message_type=MessageType.QUERY, dst_node_id=node, ttl=timeout)
                   for node in asked]
        measured: list[tuple[dict, int]] = []
        round_done = self.done + server_round
        with open(self.journal, "a") as journal:
            for reply in self._grid.send_and_receive(queries, timeout=timeout) if queries else ():
                node = reply.metadata.src_node_id
                entry: dict[str, Any] = {"round": round_done, "node": node, "kind": "statistics"}
                if reply.has_error():
                    entry["problem"] = f"the site did not measure: {reply.error.reason}"
                else:
                    problem, stats = statistics_problem(reply.content, self.statistics, counts.get(node, -1))
                    if problem:
                        entry["problem"] = problem
                    else:
                        measured.append((stats, counts[node]))
                        entry["num-examples"] = counts[node]
                        self._round["bytes_up"] += reply.content.array_records[ARRAYS].count_bytes()
                journal.write(json.dumps(entry) + "\n")
            self._round["bytes_down"] += arrays.count_bytes() * len(queries)
            pooled = pool(measured) if measured else {}
            problem = pooled_problem(pooled, self.statistics, sum(n for _, n in measured), sum(counts.values()))
            if problem:
                journal.write(json.dumps({"round": round_done, "kind": "pool", "problem": problem}) + "\n")
        self._round["statistics_sites"] = 0 if problem else len(measured)
        if problem:
            return arrays, False
        return ArrayRecord({name: Array(pooled[name].astype(np.dtype(array.dtype))) if name in pooled else array
                            for name, array in arrays.items()}), True

    def take_round(self) -> dict[str, Any]:
        """The last round's replies, bytes and learning rate, for the run's history."""
        taken, self._round = getattr(self, "_round", {}), {}
        return taken


def checked_strategy(settings: FederationSettings, module: Any, journal: Path, done: int = 0) -> CheckedReplies:
    """The strategy ``settings`` name, checking replies against ``module``'s tensors, ``done`` rounds already
    finished; no client-side evaluation (the server scores the global model on its own test data)."""
    base = STRATEGY_CLASSES[settings.strategy]
    options: dict[str, Any] = dict(
        fraction_train=ONLY_MIN if settings.clients_per_round else 1.0,
        min_train_nodes=settings.clients_per_round or settings.min_clients,
        min_available_nodes=max(settings.min_clients, settings.clients_per_round),
        fraction_evaluate=0.0, min_evaluate_nodes=0)
    if settings.strategy == "fedprox":
        options["proximal_mu"] = settings.proximal_mu
    if settings.strategy == "fedadam":
        options["eta"] = settings.server_lr
    strategy = type(f"Checked{base.__name__}", (CheckedReplies, base), {})(**options)
    strategy.settings, strategy.done, strategy.journal = settings, done, journal
    strategy.shapes, strategy.statistics = shapes_of(module), statistic_shapes(module)
    return strategy
