"""The search loop: build, measure and judge candidates until the budget is spent.

Cheap first: stage 1 exports the baseline to every runtime and precision (minutes);
stage 2 fine-tunes (pruning, lower resolution, students, extra steps, QAT), but only
after the candidate's untrained architecture has been exported and timed, so training
time is never spent on a model that cannot meet the latency or size goal, cannot beat
the best found so far (latency and memory priorities), or cannot finish inside the budget.

Every compiled candidate is scored on the test split and judged by the goals; the
parity check at export only refuses compiles that are broken. The objective is latency
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
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from edgeopt.agent.client import AgentTarget
from edgeopt.errors import ConfigError
from edgeopt.measure.latency import TimingConfig
from edgeopt.pipeline.recipe import Recipe
from edgeopt.quantization import QuantizationConfig
from edgeopt.search import events, pareto
from edgeopt.search.goals import Goals
from edgeopt.search.journal import Journal
from edgeopt.search.meter import Meter
from edgeopt.search.record import Candidate, ModelScore, Probe
from edgeopt.search.space import SearchSpace, export_candidates, fine_tune_candidates, stage2_exports

LATENCY_MARGIN = 1.10  # an untrained probe may time a little faster than the final (partly FP32) model
SEARCH_TIMING = TimingConfig(min_seconds=1.0)  # per candidate: a second of runs gives stable p50s


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
    sustained_s: float = 60.0  # how long each candidate runs back to back when a goal names sustained p99
    measurements: Path | None = None  # the measurement store (None: ~/.cache/edgeopt/measurements)

    def identity(self) -> dict[str, Any]:
        """What must match for ``resume`` to continue a search (the budget, and the agent's address, may change)."""
        return {"model": self.model, "data": self.data, "goals": self.goals.to_dict(), "device": self.device,
                "space": self.space.to_dict(), "arch": self.arch, "seed": self.seed,
                **({"measured_by": "agent"} if self.agent else {})}


@dataclass
class SearchOutcome:
    """Everything the report shows: records, baseline, choice, front, context."""

    config: SearchConfig
    baseline: dict[str, Any]
    records: list[Candidate]
    chosen: Candidate | None
    front: list[Candidate]
    closest: list[Candidate]
    device: dict[str, Any]
    environment: dict[str, Any]
    elapsed_s: float
    not_tried: list[dict[str, Any]]
    winner_details: dict[str, Any] = field(default_factory=dict)

    SCHEMA = 2

    @property
    def estimated(self) -> bool:
        return self.config.device != "host" and self.config.agent is None

    @property
    def measured_on(self) -> str | None:
        """The device whose agent timed the candidates, or None (timed here, or estimated)."""
        return self.device.get("measured_on")

    def eager_baseline(self) -> Candidate | None:
        """The baseline's eager FP32 candidate, when it was measured (the speed-up reference)."""
        return next((r for r in self.records if r.ok and r.backend == "eager" and r.precision == "fp32"
                     and not r.steps), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.SCHEMA, "model": self.config.model, "data": self.config.data,
            "goals": self.config.goals.to_dict(), "device": self.device, "estimated": self.estimated,
            "budget_s": self.config.budget_s, "elapsed_s": self.elapsed_s, "baseline": self.baseline,
            "chosen": self.chosen.to_dict() if self.chosen else None,
            "pareto_front": [r.key for r in self.front], "closest": [r.key for r in self.closest],
            "candidates": [r.to_dict() for r in self.records], "not_tried": self.not_tried,
            "winner": self.winner_details, "space": self.config.space.to_dict(), "environment": self.environment,
        }


Listener = Callable[[events.Event], None]


class Search:
    """Runs one ``SearchConfig``; ``on_event`` receives progress as typed events."""

    def __init__(self, config: SearchConfig, on_event: Listener | None = None) -> None:
        from edgeopt.devices import get_device, host_profile
        from edgeopt.measure import environment

        self.config = config
        self.out = Path(config.out)
        self.emit = on_event or (lambda event: None)
        self.agent, self.agent_identity = self._connect(config.agent)
        if self.agent_identity and config.device == "host":
            from edgeopt.agent.identity import profile_of

            self.device = profile_of(self.agent_identity)  # the agent's device is the target
        else:
            self.device = get_device(config.device)
        self.host = host_profile()
        self.threads = self.device.threads_here(environment.cpu_count())
        self.started = time.monotonic()
        self.not_tried: list[dict[str, Any]] = []
        self.best_key: str | None = None
        self.training_label = ""

    # -- set-up ------------------------------------------------------------------------
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
        return self.config.budget_s - self.used_before - (time.monotonic() - self.started)

    # -- the loop ----------------------------------------------------------------------
    def run(self) -> "SearchOutcome":
        from edgeopt.backends import get_backend
        from edgeopt.pipeline.builder import BuildContext

        goals = self.config.goals
        base = Recipe(model=self.config.model, data=self.config.data, seed=self.config.seed, arch=self.config.arch)
        # the model, its data and its metric are checked before anything is written
        self.context = BuildContext.create(base, self.out, self.threads, show_progress=False, on_epoch=self._epoch)
        self.context.task.metric(goals.metric)
        self.journal = self._open()
        _quiet_libraries()
        self.used_before = self.journal.elapsed_s()
        from edgeopt.agent.identity import label
        from edgeopt.devices.calibration import MeasurementStore

        self.meter = Meter(self.context, goals, self.device, self.host, self.threads, self.out, self.config.timing,
                           agent=self.agent, agent_label=label(self.agent_identity) if self.agent_identity else None,
                           store=MeasurementStore(self.config.measurements),
                           sustained_s=self.config.sustained_s if goals.max_sustained_p99_ms else 0.0)
        backends = [get_backend(name) for name in self._backends()]
        stage1 = export_candidates(self.config.space, base, backends, goals.max_drop)
        self.emit(events.StageStarted(1, len(stage1), goals.priority))
        for recipe in stage1:
            self._consider(recipe, stage=1)
        exports = stage2_exports([(r, self.journal.get(r.hash)) for r in stage1], goals.priority)
        qat_backends = [b.name for b in backends if "qat" in b.capabilities.int8_modes]
        spec = self.context.baseline.input_spec
        input_size = spec.shape[-1] if len(spec.shape) == 4 else None
        stage2 = fine_tune_candidates(self.config.space, base, goals.priority, exports, input_size, qat_backends,
                                      self.context.task.students)
        self.emit(events.StageStarted(2, len(stage2), goals.priority))
        for recipe in stage2:
            self._consider(recipe, stage=2)
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
            elif self.agent_identity and name not in self.agent_identity["backends"]:
                runs = ", ".join(self.agent_identity["backends"]) or "nothing yet"
                self._not_tried(f"{name} (any precision)", f"the device's agent cannot run it (it runs {runs})")
            else:
                usable.append(name)
        if "eager" in usable:  # the baseline first
            usable.remove("eager")
            usable.insert(0, "eager")
        return usable

    def _consider(self, recipe: Recipe, stage: int) -> None:
        key = recipe.hash
        known = self.journal.get(key)
        if known is not None and known.status != "unmeasured":
            self.emit(events.FromJournal(known))
            self._update_best()
            return
        remaining = self._remaining_s()
        if remaining <= 0:
            self._not_tried(recipe.label, "the budget was spent", key)
            return
        if stage == 2 and not self._worth_training(recipe, remaining):
            return
        self.emit(events.CandidateStarted(recipe.label, self.config.budget_s - remaining, self.config.budget_s))
        self.training_label = recipe.label
        record = self.meter.candidate(recipe, stage)
        self.journal.add(record)
        self.emit(events.CandidateFinished(record))
        self._update_best()

    def _worth_training(self, recipe: Recipe, remaining: float) -> bool:
        """Probe the untrained architecture; journal a skip (or note a budget miss) when it is not worth it.

        A probe that fails (its untrained INT8 export refused, say) predicts nothing and skips nothing:
        fine-tuning, or QAT, may be exactly what the model needs.
        """
        goals = self.config.goals
        probe = self._probe(recipe)
        measured = probe.measurement if probe.status == "ok" else None
        reason = None
        if measured and goals.max_latency_ms and measured.latency_ms > goals.max_latency_ms * LATENCY_MARGIN:
            reason = f"predicted {self._ms(measured.latency_ms)} > the latency goal of {goals.max_latency_ms:g} ms (untrained probe)"
        elif measured and goals.max_size_mb and measured.size_mb > goals.max_size_mb:
            reason = f"its size {measured.size_mb:.2f} MB > the size goal of {goals.max_size_mb:g} MB"
        else:
            reason = self._cannot_win(recipe, measured) or self._fine_tuned_too_inaccurate(recipe)
        if reason:
            self.journal.add(Candidate(recipe.hash, recipe.label, 2, "skipped", recipe.to_dict(), reason=reason,
                                       predicted_ms=measured.latency_ms if measured else None))
            self.emit(events.Skipped(recipe.label, reason))
            return False
        from edgeopt.pipeline.builder import seconds_per_epoch

        already_built = self.context.model_path(recipe).is_file()  # PTQ and accuracy-aware share one model
        epochs = 0 if already_built else sum(step.epochs for step in recipe.steps)
        training_s = seconds_per_epoch(recipe, self.context) * epochs if epochs else 0.0
        if training_s > remaining:
            self._not_tried(recipe.label, f"fine-tuning needs about {training_s / 60:.1f} min, {remaining / 60:.1f} min "
                                          "of budget left", recipe.hash)
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
        score = self.journal.get(key) or self.journal.add(self.meter.model_score(trained, key))
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
        probe = self.meter.probe(recipe, full_width if isinstance(full_width, Candidate) else None)
        return probe if probe.status == "unmeasured" else self.journal.add(probe)

    def _cannot_win(self, recipe: Recipe, measured) -> str | None:
        best = self.journal.get(self.best_key)
        if best is None:
            return None
        priority = self.config.goals.priority
        quantization = recipe.export.quantization
        if quantization is not None and quantization.mode == "aware":
            plain = dataclasses.replace(recipe, export=dataclasses.replace(
                recipe.export, quantization=QuantizationConfig(calibration_samples=quantization.calibration_samples)))
            plain_record = self.journal.get(plain.hash)
            if priority != "accuracy" and isinstance(plain_record, Candidate) and plain_record.meets_goals:
                return "plain PTQ of the same model already meets the goals; accuracy-aware PTQ can only keep more FP32"
        if measured is None:
            return None
        if priority == "latency" and measured.latency_ms >= best.latency_ms:
            return f"predicted {self._ms(measured.latency_ms)} cannot beat the best so far ({self._ms(best.latency_ms)})"
        if (priority == "memory" and measured.size_mb >= best.measurement.size_mb
                and measured.peak_rss_mb >= best.measurement.peak_rss_mb):
            return f"size {measured.size_mb:.2f} MB and memory cannot beat the best so far"
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
        from edgeopt.measure import environment

        records, metric = self.journal.candidates(), self.meter.metric
        chosen = pareto.choose(records, self.config.goals.priority, metric)
        return SearchOutcome(
            config=self.config, baseline=self.meter.baseline, records=records, chosen=chosen,
            front=pareto.pareto_front(records, metric), closest=[] if chosen else pareto.closest(records),
            device=self.device.to_dict() | {"threads_here": self.threads, "memory_cap_mb": self.device.memory_cap_mb,
                                            "measured_on": self.meter.agent_label, "agent": self.agent_identity,
                                            "host_threads": self.meter.host_threads},
            environment=environment.collect(), elapsed_s=self.used_before + time.monotonic() - self.started,
            not_tried=self.not_tried, winner_details=self.meter.winner_details(chosen) if chosen else {},
        )


def _quiet_libraries() -> None:
    """NNCF logs every accuracy-control step at INFO; a search reports one event per candidate."""
    import logging

    logging.getLogger("nncf").setLevel(logging.WARNING)
    try:
        import nncf

        nncf.set_log_level(logging.WARNING)
    except ImportError:
        pass
