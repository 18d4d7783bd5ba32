"""The search loop: build, measure and judge candidates until the budget is spent.

Cheap first: stage 1 exports the baseline to every runtime and precision (minutes);
stage 2 fine-tunes (pruning, lower resolution, students, extra steps, QAT), but only
after the candidate's untrained architecture has been exported and timed, so training
time is never spent on a model that cannot meet the latency or size goal, cannot beat
the best found so far (latency and memory priorities), or cannot finish inside the budget.

Every compiled candidate is scored on the test split and judged by the goals; the
parity check at export only refuses compiles that are broken. Accuracy-aware INT8 is not
built where plain INT8 of the same model on the same runtime already meets the goals.

The budget is wall-clock and holds inside candidates: one ``Deadline`` goes down into every
build, and the long steps (fine-tuning batches, calibration, accuracy-aware INT8) stop at it.
A candidate stopped so is journaled as ``stopped``, the best so far stays as it was, and
``resume`` with budget left builds it again (a fine-tune from its last epoch). Every check
of the deadline is also a progress report (``events.CandidateProgress``), so the caller's
clock moves while a candidate works. The objective is latency
measured on the device by its agent (``agent``), or here with the device's thread count,
or, for a device that is neither, the corrected roofline estimate with its interval
(labelled so) — never MACs. A candidate the agent could not measure (it stopped
answering through every retry) is journaled as ``unmeasured``, never estimated, and
``resume`` measures it. Every
finished candidate is journaled, the best so far is copied to ``OUT/best`` as it
changes, and ``resume`` continues a killed search without repeating finished candidates.
Progress goes out as typed events (``search.events``); this module words nothing.

Example:
    >>> outcome = Search(SearchConfig(model="runs/digits.safetensors", data="digits", out=Path("out/opt"))).run()  # doctest: +SKIP
    >>> outcome.chosen.label                                                                                       # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from edgeopt.agent.client import AgentTarget
from edgeopt.core.deadline import BudgetExhausted, Deadline
from edgeopt.core.errors import ConfigError, EdgeoptError
from edgeopt.core.size import of_shape
from edgeopt.measure.latency import TimingConfig
from edgeopt.pipeline.recipe import Recipe
from edgeopt.search import events, pareto
from edgeopt.search.goals import Goals
from edgeopt.search.executor import ClusterConfig, Executor, executor_for
from edgeopt.search.journal import Journal
from edgeopt.search.meter import Meter
from edgeopt.search.outcome import SearchOutcome
from edgeopt.search.candidate import Candidate, ModelScore, Probe
from edgeopt.search.space import (
    SearchSpace,
    aware_not_needed,
    export_candidates,
    fine_tune_candidates,
    runtime_candidates,
    stage2_exports,
)

LATENCY_MARGIN = 1.10  # an untrained probe may time a little faster than the final (partly FP32) model
SEARCH_TIMING = TimingConfig(min_seconds=1.0)  # per candidate: a second of runs gives stable p50s
RUNOFF_ROUNDS = 3  # more timings of each near-equal candidate before one is chosen over the others


@dataclass(frozen=True)
class SearchConfig:
    """One search: the baseline and its data, where to write, what to aim for, how long."""

    model: str
    data: str
    out: Path
    goals: Goals = field(default_factory=Goals)
    device: str = "host"
    budget_s: float = 1800.0
    space: SearchSpace = field(default_factory=SearchSpace)
    resume: bool = False
    force: bool = False
    arch: str | None = None
    seed: int = 0
    timing: TimingConfig = SEARCH_TIMING
    agent: AgentTarget | None = None
    farm: tuple[AgentTarget, ...] = ()  # more devices' agents: each candidate timed on all at once; ``device`` decides
    sustained_s: float = 60.0  # how long each candidate runs back to back when a goal names sustained p99
    measurements: Path | None = None  # the measurement store (None: ~/.cache/edgeopt/measurements)
    cluster: ClusterConfig | None = None  # build candidates on a Ray cluster (None: here, one after another)

    def identity(self) -> dict[str, Any]:
        """What must match for ``resume`` to continue a search (the budget, and the agent's address, may change)."""
        return {"model": self.model, "data": self.data, "goals": self.goals.to_dict(), "device": self.device,
                "space": self.space.to_dict(), "arch": self.arch, "seed": self.seed,
                **({"measured_by": "agent"} if self.agent else {}),
                **({"farm": len(self.farm)} if self.farm else {})}


Listener = Callable[[events.Event], None]


class Search:
    """Runs one ``SearchConfig``; ``on_event`` receives progress as typed events."""

    def __init__(self, config: SearchConfig, on_event: Listener | None = None) -> None:
        self.started = time.monotonic()  # the budget's clock: from the call, set-up included
        from edgeopt.devices import get_device, host_profile
        from edgeopt.measure import environment

        self.config = config
        self.out = Path(config.out)
        self.emit = on_event or (lambda event: None)
        self.agent, self.agent_identity, self.farm = self._connect_farm(config.agent, config.farm, config.device)
        # the deciding device: the agent's own (a farm's by its name), unless a device profile is named
        named = bool(self.farm) and config.device == (self.agent_identity or {}).get("name")
        if self.agent_identity and (config.device == "host" or named):
            from edgeopt.agent.identity import profile_of

            self.device = profile_of(self.agent_identity)  # the agent's device is the target
        else:
            self.device = get_device(config.device)
        if self.device.mcu is not None:  # a microcontroller's SRAM and flash are goals a candidate must meet
            self.config = dataclasses.replace(config, goals=within_part(config.goals, self.device.mcu))
        self.host = host_profile()
        self.threads = self.device.threads_here(environment.cpu_count())
        self.not_tried: list[dict[str, Any]] = []
        self.epoch_s: dict[str, float] = {}  # fine-tuning seconds per epoch, by the model the steps make
        self.best_key: str | None = None
        self.training_label = ""
        self.executor: Executor | None = None
        self.stage_of: dict[str, int] = {}  # builds in flight: their stage

    # -- set-up ------------------------------------------------------------------------
    @classmethod
    def _connect_farm(cls, target: AgentTarget | None, farm: tuple[AgentTarget, ...], device: str):
        """(the deciding agent's client, its identity, [(client, identity)] of the farm's other devices): the agent
        named ``device`` decides, else the first one. Every agent must answer at the start."""
        if target is None and farm:
            raise ConfigError("a farm needs its first agent as --agent")
        connected = [cls._connect(t) for t in (target, *farm) if t is not None] or [(None, None)]
        names = [identity["name"] for _, identity in connected if identity]
        if len(set(names)) < len(names):
            raise ConfigError(f"the farm's agents must have distinct names (edgeopt agent --name), not {names}")
        first = next((i for i, (_, identity) in enumerate(connected) if identity and identity["name"] == device), 0)
        client, identity = connected.pop(first)
        return client, identity, connected

    @staticmethod
    def _connect(target: AgentTarget | None):
        """(client, the device's identity) for an agent; (None, None) without one. An agent that does not
        answer at the start is an error: nothing could be measured."""
        if target is None:
            return None, None
        client = target.connect()
        return client, client.identity()

    def _open(self) -> Journal:
        state = self.out / "search.json"
        identity = json.loads(json.dumps(self.config.identity()))  # tuples become lists, as when read back
        if self.out.is_dir() and any(self.out.iterdir()) and not state.is_file():
            # never delete (or write into) a folder that is not a search's own
            raise ConfigError(f"{self.out} exists and is not an edgeopt search folder; choose another output folder")
        if state.is_file() and self.config.force:
            shutil.rmtree(self.out)
        elif state.is_file():
            if not self.config.resume:
                raise ConfigError(f"{self.out} already holds a search: resume it, or force a fresh start "
                                  "(--resume / --force)")
            previous = json.loads(state.read_text())
            changed = sorted(k for k in identity.keys() | previous.keys() if previous.get(k) != identity.get(k))
            if changed:
                raise ConfigError(f"the search in {self.out} was started with different settings ({', '.join(changed)}); "
                                  "use another output folder, or force a fresh start (--force)")
        self.out.mkdir(parents=True, exist_ok=True)
        state.write_text(json.dumps(identity, indent=2) + "\n")
        return Journal(self.out / "journal.jsonl")

    def _remaining_s(self) -> float:
        return self.deadline.remaining()

    def _used_s(self) -> float:
        return self.config.budget_s - self._remaining_s()

    def _progress(self, step: str, done: int | None, total: int | None) -> None:
        self.emit(events.CandidateProgress(self.training_label, step, done, total, self._used_s(),
                                           self.config.budget_s))

    # -- the loop ----------------------------------------------------------------------
    def run(self) -> "SearchOutcome":
        from edgeopt.pipeline.builder import BuildContext

        goals = self.config.goals
        base = Recipe(model=self.config.model, data=self.config.data, seed=self.config.seed, arch=self.config.arch)
        # the model, its data and its metric are checked before anything is written
        self.context = BuildContext.create(base, self.out, self.threads, show_progress=False, on_epoch=self._epoch)
        self.context.task.metric(goals.metric)
        # the cluster too (its address, its nodes, files that cannot travel) is checked before anything is written
        self.executor = executor_for(self.config.cluster, self.context, self.out, base)
        try:
            return self._search(base)
        finally:
            self.executor.close()

    def _search(self, base: Recipe) -> "SearchOutcome":
        goals = self.config.goals
        self.journal = self._open()
        _quiet_libraries()
        # wall-clock from the start of this run (loading the data counts), less what earlier runs spent
        self.deadline = Deadline(self.started + self.config.budget_s - self.journal.elapsed_s(), self._progress)
        from edgeopt.agent.identity import label
        from edgeopt.backends import get_backend
        from edgeopt.devices.calibration import MeasurementStore

        self.meter = Meter(self.context, goals, self.device, self.host, self.threads, self.out, self.config.timing,
                           agent=self.agent, agent_label=label(self.agent_identity) if self.agent_identity else None,
                           farm=[(client, label(identity)) for client, identity in self.farm],
                           store=MeasurementStore(self.config.measurements),
                           sustained_s=self.config.sustained_s if goals.max_sustained_p99_ms else 0.0)
        backends = [get_backend(name) for name in self._backends()]
        stage1 = export_candidates(self.config.space, base, backends, goals.max_drop)
        self.emit(events.StageStarted(1, len(stage1), goals.priority))
        self._consider_all(stage1, stage=1)
        self._runoff([record for _, record in runtime_candidates([(r, self.journal.get(r.hash)) for r in stage1])])
        exports = stage2_exports([(r, self.journal.get(r.hash)) for r in stage1], goals.priority, self.meter.metric)
        qat_backends = [b.name for b in backends if "qat" in b.capabilities.int8_modes]
        spec = self.context.baseline.input_spec
        input_size = of_shape(spec.shape) if len(spec.shape) == 4 else None
        task = self.context.task
        stage2 = fine_tune_candidates(self.config.space, base, goals.priority, exports, input_size, qat_backends,
                                      task.micro_students if goals.microcontroller else task.students)
        self.emit(events.StageStarted(2, len(stage2), goals.priority))
        self._consider_all(stage2, stage=2)
        self._runoff([r for r in self.journal.candidates() if r.meets_goals])
        return self._outcome()

    def _epoch(self, record: dict[str, float]) -> None:
        self.emit(events.TrainingEpoch(self.training_label, int(record["epoch"]), int(record["epochs"]),
                                       record["train_loss"], record["val"]))

    def _backends(self) -> list[str]:
        from edgeopt.backends import all_backends, get_backend

        names = self.config.space.backends or tuple(b.name for b in all_backends())
        usable = []
        for name in names:
            reason = get_backend(name).unavailable_reason()
            if reason:
                self._not_tried(f"{name} (any precision)", f"unavailable here: {reason}")
            elif not self.device.runs(name):
                self._not_tried(f"{name} (any precision)", f"does not run on {self.device.name}")
            elif self.config.goals.microcontroller and not get_backend(name).capabilities.microcontroller:
                self._not_tried(f"{name} (any precision)", "the goals bound a microcontroller's SRAM and flash, which "
                                                            "only a microcontroller runtime's artifacts record")
            elif self.agent_identity and name not in self.agent_identity["backends"]:
                runs = ", ".join(self.agent_identity["backends"]) or "nothing yet"
                self._not_tried(f"{name} (any precision)", f"the device's agent cannot run it (it runs {runs})")
            else:
                usable.append(name)
        if "eager" in usable:  # the baseline first
            usable.remove("eager")
            usable.insert(0, "eager")
        return usable

    def _consider_all(self, recipes: list[Recipe], stage: int) -> None:
        """Consider ``recipes`` in their order, but one whose model is being built elsewhere waits (see
        ``_builds_its_model``) while the next ones go ahead; then wait for every build of the stage. Building
        here, nothing is ever in flight: exactly the order given."""
        waiting = list(recipes)
        while waiting:
            ready = next((r for r in waiting if not self._builds_its_model(r)), None)
            if ready is None:
                self._collect(wait=True)
                continue
            waiting.remove(ready)
            self._consider(ready, stage)
        self._drain()

    def _consider(self, recipe: Recipe, stage: int) -> None:
        key = recipe.hash
        known = self.journal.get(key)
        if known is not None and known.status not in Candidate.RETRIED:
            self.emit(events.FromJournal(known))
            self._update_best()
            return
        remaining = self._remaining_s()
        if remaining <= 0:
            self._not_tried(recipe.label, "the budget was spent", key)
            return
        reason = aware_not_needed(recipe, self.journal.get, self.config.goals.priority)
        if reason:
            self._skip(recipe, stage, reason)
            return
        short = self._too_little_left(recipe, remaining)
        if short:
            self._not_tried(recipe.label, short, key)
            return
        self.training_label = recipe.label
        if stage == 2 and not self._worth_training(recipe, remaining):
            return
        self.emit(events.CandidateStarted(recipe.label, self._used_s(), self.config.budget_s))
        self.stage_of[key] = stage
        self.executor.submit(recipe, self.deadline)
        self._collect(wait=len(self.executor.in_flight()) >= self.executor.slots())

    # -- builds in flight (on a cluster; a local build has ended when it is submitted) ---------------
    def _collect(self, wait: bool) -> None:
        """Judge (score, time) and journal the builds that ended; ``wait``: for one at least."""
        for recipe, built in self.executor.collect(wait):
            record = self._journal(self.meter.judge(recipe, self.stage_of.pop(recipe.hash), built, self.deadline))
            self.emit(events.CandidateFinished(record))
            self._update_best()

    def _drain(self) -> None:
        while self.executor.in_flight():
            self._collect(wait=True)

    def _builds_its_model(self, recipe: Recipe) -> bool:
        """Whether a build in flight makes ``recipe``'s model: a trained model is trained once (its siblings
        start from the cache once it is back), and whether accuracy-aware INT8 is needed reads the plain INT8
        sibling's result. The baseline's exports wait only for their own runtime's."""
        def same_model(other: Recipe) -> bool:
            return (other.prefix_hash(len(other.steps)) == recipe.prefix_hash(len(recipe.steps))
                    and (bool(recipe.steps) or other.export.backend == recipe.export.backend))

        return any(same_model(other) for other in self.executor.in_flight())

    def _runoff(self, pool: list[Candidate]) -> None:
        """Time again, side by side, the candidates of ``pool`` (those the next decision ranks: the runtimes
        for stage 2, then the winners) too close to the fastest for one timing each to rank
        (``pareto.runoff_contenders``): on a busy machine one process's p50 of a sub-millisecond model
        can be off by half, and the decision would follow the noise. Each gets ``RUNOFF_ROUNDS`` more
        timings, in turn, and its latency becomes their median; journaled, so a resumed search keeps them.
        Only where latency is measured here: an estimate for another device, or the agent's timing, is not
        re-timed. Out of budget, it is left out."""
        if not self.device.is_host or self.agent is not None:
            return
        contenders = pareto.runoff_contenders(pool, self.meter.metric)
        if len(contenders) < 2 or all(len(c.measurement.p50_runs) > RUNOFF_ROUNDS for c in contenders):
            return
        self.training_label = "side by side"
        self.emit(events.RunoffStarted(tuple(c.label for c in contenders), RUNOFF_ROUNDS))
        started = time.monotonic()
        try:
            p50s = self.meter.runoff(contenders, RUNOFF_ROUNDS, self.deadline)
        except (BudgetExhausted, EdgeoptError) as exc:
            self._not_tried("timing side by side", str(exc))
            return
        share = (time.monotonic() - started) / len(contenders)
        retimed = [self._journal(self.meter.retimed(c, p50s[c.key], share)) for c in contenders]
        self.emit(events.RunoffFinished(tuple((c.label, c.latency_ms, r.latency_ms) for c, r in zip(contenders, retimed))))
        self._update_best()

    def _journal(self, record):
        """Journal ``record`` stamped with the search's clock: a resume carries the budget on from there."""
        record.finished_at_s = self._used_s()
        return self.journal.add(record)

    def _too_little_left(self, recipe: Recipe, remaining: float) -> str | None:
        """Why ``recipe`` cannot finish in the ``remaining`` seconds, or None. Started anyway, it would be stopped
        at the deadline with its work lost, after running past it by as much as its runtime's export takes
        (that part cannot stop). Its least cost: what the quickest finished candidate of the same runtime took
        (an INT8 export costs an FP32 one and more; a fine-tune only adds); for a runtime not tried yet, what
        a typical candidate took (the median), since one runtime's export can take several times another's."""
        done = [r for r in self.journal.candidates() if r.ok and r.elapsed_s > 0]
        same = [r for r in done if r.backend == recipe.export.backend]
        if same:
            reference = min(same, key=lambda r: r.elapsed_s)
            need, said = reference.elapsed_s, f"as {reference.label} took"
        elif done:
            need, said = statistics.median(r.elapsed_s for r in done), "the median candidate's time so far"
        else:
            return None
        if need <= remaining:
            return None
        return f"it needs at least {need:.0f} s ({said}), {max(remaining, 0):.0f} s of the budget were left"

    def _skip(self, recipe: Recipe, stage: int, reason: str, predicted_ms: float | None = None) -> None:
        self._journal(Candidate(recipe.hash, recipe.label, stage, "skipped", recipe.to_dict(), reason=reason,
                                predicted_ms=predicted_ms))
        self.emit(events.Skipped(recipe.label, reason))

    def _worth_training(self, recipe: Recipe, remaining: float) -> bool:
        """Check its fine-tuning fits the budget, then probe the untrained architecture; journal a skip (or
        note a budget miss) when it is not worth it. The training estimate (a few timed batches) comes
        first: it is cheaper than a probe (an export and a timing run), and decides more often late in a search.

        A probe that fails (its untrained INT8 export refused, say) predicts nothing and skips nothing:
        fine-tuning, or QAT, may be exactly what the model needs.
        """
        from edgeopt.pipeline.builder import seconds_per_epoch

        epochs = self.context.epochs_left(recipe)  # PTQ and accuracy-aware share one model; a resume continues
        training_s = 0.0
        if epochs:
            model = recipe.prefix_hash(len(recipe.steps))  # PTQ and accuracy-aware share one estimate too
            try:
                if model not in self.epoch_s:
                    self.epoch_s[model] = seconds_per_epoch(recipe, self.context, deadline=self.deadline)
            except BudgetExhausted:
                self._not_tried(recipe.label, "the budget was spent (while estimating its fine-tuning time)",
                                recipe.hash)
                return False
            training_s = self.epoch_s[model] * epochs
            remaining = self._remaining_s()
        if training_s > remaining:
            self._not_tried(recipe.label, f"fine-tuning needs about {training_s / 60:.1f} min, {remaining / 60:.1f} min "
                                          "of budget left", recipe.hash)
            return False
        goals = self.config.goals
        probe = self._probe(recipe)
        if probe.status == "stopped":
            self._not_tried(recipe.label, "the budget was spent (while probing its architecture)", recipe.hash)
            return False
        measured = probe.measurement if probe.status == "ok" else None
        reason = None
        if measured and goals.max_latency_ms and measured.latency_ms > goals.max_latency_ms * LATENCY_MARGIN:
            reason = f"predicted {self._ms(measured.latency_ms)} > the latency goal of {goals.max_latency_ms:g} ms (untrained probe)"
        elif measured and goals.max_size_mb and measured.size_mb > goals.max_size_mb:
            reason = f"its size {measured.size_mb:.2f} MB > the size goal of {goals.max_size_mb:g} MB"
        elif measured and (misses := over_budget(goals, measured)):
            reason = f"{misses} (untrained probe: weights change neither)"
        else:
            reason = self._cannot_win(recipe, measured) or self._fine_tuned_too_inaccurate(recipe)
        if reason:
            self._skip(recipe, 2, reason, measured.latency_ms if measured else None)
            return False
        self.emit(events.TrainingPlanned(recipe.label, measured.latency_ms if measured else None,
                                         not (self.device.is_host or self.agent), training_s,
                                         None if measured else probe.reason))
        return True

    def _fine_tuned_too_inaccurate(self, recipe: Recipe) -> str | None:
        """When the fine-tuned FP32 model is already built and already misses the quality goal,
        no export of it can meet it (quantization does not recover accuracy): say so, skip it."""
        max_drop = self.config.goals.max_drop
        trained = self.context.model_path(recipe)
        if max_drop is None or not recipe.steps or not trained.is_file() or recipe.steps[-1].technique.quantizes:
            return None
        key = f"fp32:{trained.stem}"
        score = self.journal.get(key) or self._journal(self.meter.model_score(trained, key))
        if isinstance(score, ModelScore) and score.drop_points > max_drop:
            return (f"the fine-tuned model already loses {score.drop_points:.2f} points of {self.meter.metric.title} "
                    f"in FP32 (the goal allows {max_drop:g})")
        return None

    def _probe(self, recipe: Recipe) -> Probe:
        """The untrained architecture's probe, from the journal or measured now (and journaled)."""
        untrained = recipe.untrained()
        key = f"probe:{untrained.hash}"
        known = self.journal.get(key)
        if isinstance(known, Probe):
            return known
        measured = self.journal.get(untrained.hash)  # e.g. QAT's architecture is the stage-1 INT8 one
        if isinstance(measured, Candidate) and measured.ok:
            return Probe(key, "ok", measured.measurement)
        full_width = self.journal.get(dataclasses.replace(untrained, steps=()).hash)
        probe = self.meter.probe(recipe, full_width if isinstance(full_width, Candidate) else None, self.deadline)
        return probe if probe.status in ("unmeasured", "stopped") else self._journal(probe)

    def _cannot_win(self, recipe: Recipe, measured) -> str | None:
        best = self.journal.get(self.best_key)
        if best is None or measured is None:
            return None
        priority = self.config.goals.priority
        if priority == "latency" and measured.latency_ms >= best.latency_ms:
            return f"predicted {self._ms(measured.latency_ms)} cannot beat the best so far ({self._ms(best.latency_ms)})"
        if priority == "memory":  # what the choice ranks by (pareto.memory_of)
            on_a_part = self.config.goals.microcontroller
            mine, theirs = pareto.memory_of(measured, on_a_part), pareto.memory_of(best.measurement, on_a_part)
            if None in (*mine, *theirs):
                return None  # a prediction from another model's figures: no arena of its own to compare
            if all(a >= b for a, b in zip(mine, theirs)):
                what = f"its arena {measured.arena_kb:.0f} KB and flash" if on_a_part else f"size {measured.size_mb:.2f} MB and memory"
                return f"{what} cannot beat the best so far"
        return None

    def _ms(self, latency_ms: float) -> str:
        """A latency as text, marked when it is an estimate for a device that is not this machine."""
        return f"{latency_ms:.2f} ms" + ("" if self.device.is_host or self.agent else " (estimated)")

    def _not_tried(self, label: str, reason: str, key: str | None = None) -> None:
        self.not_tried.append({"key": key, "label": label, "reason": reason})
        self.emit(events.NotTried(label, reason))

    # -- best so far and the outcome -------------------------------------------------------
    def _update_best(self) -> None:
        chosen = pareto.choose(self.journal.candidates(), self.config.goals.priority, self.meter.metric)
        if chosen is None or chosen.key == self.best_key:
            return
        self.best_key = chosen.key
        staging = self.out / "best.partial"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(self.out / chosen.artifact, staging)
        shutil.rmtree(self.out / "best", ignore_errors=True)
        staging.rename(self.out / "best")  # a reader sees the old best or the new one, never half of one
        shutil.copyfile(self.out / "candidates" / chosen.key / "recipe.toml", self.out / "best.toml")
        (self.out / "best.json").write_text(json.dumps(chosen.to_dict(), indent=2) + "\n")
        self.emit(events.BestChanged(chosen))

    def _outcome(self) -> SearchOutcome:
        from edgeopt.agent.identity import label as label_of
        from edgeopt.measure import environment

        records, metric = self.journal.candidates(), self.meter.metric
        chosen = pareto.choose(records, self.config.goals.priority, metric)
        return SearchOutcome(
            config=self.config, baseline=self.meter.baseline, records=records, chosen=chosen,
            front=pareto.pareto_front(records, metric), closest=[] if chosen else pareto.closest(records),
            device=self.device.to_dict() | {"threads_here": self.threads, "memory_cap_mb": self.device.memory_cap_mb,
                                            "measured_on": self.meter.agent_label, "agent": self.agent_identity,
                                            "farm": [label_of(identity) for _, identity in self.farm],
                                            "host_threads": self.meter.host_threads,
                                            "built_by": self.executor.describe()},
            environment=environment.collect(), elapsed_s=self._used_s(),
            not_tried=self.not_tried, winner_details=self.meter.winner_details(chosen) if chosen else {},
            smallest_footprint=smallest_footprint(self.journal.records.values(), self.config.goals)
            if self.config.goals.microcontroller
            else None,
        )


def within_part(goals: Goals, part) -> Goals:
    """``goals`` bounded by a microcontroller's SRAM and flash (a tighter bound the user gave stays)."""
    return dataclasses.replace(goals, max_sram_kb=min(goals.max_sram_kb or part.sram_kb, part.sram_kb),
                               max_flash_kb=min(goals.max_flash_kb or part.flash_kb, part.flash_kb))


BUDGETS = {"max_sram_kb": "arena", "max_flash_kb": "flash"}  # the goals of a microcontroller's budget


def over_budget(goals: Goals, measured) -> str | None:
    """How a candidate's arena or flash breaks the microcontroller's budget (as the goals judge it), or None."""
    misses = [f"its {BUDGETS[v.goal]} {v.value:.0f} KB > the budget of {v.bound:g} KB"
              for v in goals.violations(measured, None) if v.goal in BUDGETS]
    return "; ".join(misses) or None


def smallest_footprint(records, goals: Goals) -> dict[str, Any] | None:
    """The smallest arena and flash (KB) among measured candidates and probes, and whether any of them fits both
    budgets (a probe's architecture counts: weights change neither figure); None when none was measured."""
    measured = [r.measurement for r in records if getattr(r, "status", None) == "ok" and r.measurement is not None
                and r.measurement.arena_kb is not None]
    if not measured:
        return None
    return {"arena_kb": min(m.arena_kb for m in measured), "flash_kb": min(m.flash_kb for m in measured),
            "fits": any(over_budget(goals, m) is None for m in measured)}


def _quiet_libraries() -> None:
    """NNCF logs every accuracy-control step at INFO; a search reports one event per candidate."""
    import logging

    logging.getLogger("nncf").setLevel(logging.WARNING)
    try:
        import nncf

        nncf.set_log_level(logging.WARNING)
    except ImportError:
        pass
