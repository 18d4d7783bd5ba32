"""The search loop: build, measure and judge candidates until the budget is spent.

Cheap first: stage 1 exports the baseline to every runtime and precision (minutes);
stage 2 fine-tunes (pruning, lower resolution, students, QAT), but only after the
candidate's untrained architecture has been exported and timed, so training time is
never spent on a model that cannot meet the latency or size goal, cannot beat the best
found so far (latency and memory priorities), or cannot finish inside the budget.

The objective is latency measured here with the device's thread count (or, for a device
that is not this machine, the roofline estimate from that measurement, labelled so),
never MACs. Every finished candidate is journaled, the best so far is copied to
``OUT/best`` as it changes, and ``--resume`` continues a killed search without repeating
finished candidates.

Example:
    >>> outcome = Search(SearchConfig(model="runs/digits.safetensors", data="digits", out=Path("out/opt"))).run()  # doctest: +SKIP
    >>> outcome.chosen["label"]                                                                                    # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from edgeopt.errors import ConfigError
from edgeopt.search import pareto
from edgeopt.search.goals import Goals
from edgeopt.search.journal import Journal
from edgeopt.search.meter import Meter, candidate_record
from edgeopt.search.recipe import Recipe
from edgeopt.search.space import SearchSpace, export_candidates, fine_tune_candidates

LATENCY_MARGIN = 1.10  # an untrained probe may time a little faster than the final (partly FP32) model


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
    calibration_samples: int = 300

    def identity(self) -> dict[str, Any]:
        """What must match for ``--resume`` to continue a search (the budget may change)."""
        return {"model": self.model, "data": self.data, "goals": self.goals.to_dict(), "device": self.device,
                "space": self.space.to_dict(), "arch": self.arch, "seed": self.seed,
                "calibration_samples": self.calibration_samples}


@dataclass
class SearchOutcome:
    """Everything the report shows: records, baseline, choice, front, context."""

    config: SearchConfig
    baseline: dict[str, Any]
    records: list[dict[str, Any]]
    chosen: dict[str, Any] | None
    front: list[dict[str, Any]]
    closest: list[dict[str, Any]]
    device: dict[str, Any]
    environment: dict[str, Any]
    elapsed_s: float
    not_tried: list[dict[str, Any]]
    winner_details: dict[str, Any] = field(default_factory=dict)

    @property
    def estimated(self) -> bool:
        return self.config.device != "host"

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.config.model, "data": self.config.data, "goals": self.config.goals.to_dict(),
            "device": self.device, "estimated": self.estimated, "budget_s": self.config.budget_s,
            "elapsed_s": self.elapsed_s, "baseline": self.baseline, "chosen": self.chosen,
            "pareto_front": [r["key"] for r in self.front], "closest": [r["key"] for r in self.closest],
            "candidates": self.records, "not_tried": self.not_tried, "winner": self.winner_details,
            "space": self.config.space.to_dict(), "environment": self.environment,
        }


Event = Callable[[str, str], None]  # (kind, message): kind is stage | candidate | skip | best | train


class Search:
    """Runs one ``SearchConfig``; ``on_event`` receives progress lines."""

    def __init__(self, config: SearchConfig, on_event: Event | None = None, show_training: bool = True) -> None:
        from edgeopt.devices import get_device, host_profile
        from edgeopt.measure import environment

        self.config = config
        self.out = Path(config.out)
        self.emit = on_event or (lambda kind, message: None)
        self.device = get_device(config.device)
        self.host = host_profile()
        self.threads = self.device.threads_here(environment.cpu_count())
        self.show_training = show_training
        self.started = time.monotonic()
        self.not_tried: list[dict[str, Any]] = []
        self.best_key: str | None = None

    # -- set-up ------------------------------------------------------------------------
    def _open(self) -> Journal:
        state = self.out / "search.json"
        identity = json.loads(json.dumps(self.config.identity()))  # tuples become lists, as when read back
        if self.out.is_dir() and any(self.out.iterdir()) and not state.is_file():
            # never delete (or write into) a folder that is not a search's own
            raise ConfigError(f"{self.out} exists and is not an edgeopt search folder; choose another --out")
        if state.is_file() and self.config.force:
            shutil.rmtree(self.out)
        elif state.is_file():
            if not self.config.resume:
                raise ConfigError(f"{self.out} already holds a search: pass --resume to continue it, or --force to "
                                  f"start over")
            previous = json.loads(state.read_text())
            if previous != identity:
                changed = sorted(k for k in identity if previous.get(k) != identity[k])
                raise ConfigError(f"the search in {self.out} was started with different settings ({', '.join(changed)}); "
                                  f"use another --out, or --force to start over")
        self.out.mkdir(parents=True, exist_ok=True)
        state.write_text(json.dumps(identity, indent=2) + "\n")
        return Journal(self.out / "journal.jsonl")

    def _remaining_s(self) -> float:
        return self.config.budget_s - self.used_before - (time.monotonic() - self.started)

    # -- the loop ----------------------------------------------------------------------
    def run(self) -> SearchOutcome:
        from edgeopt.backends import get_backend
        from edgeopt.search.builder import BuildContext

        self.journal = self._open()
        _quiet_libraries()
        self.used_before = self.journal.elapsed_s()
        goals = self.config.goals
        base = Recipe(model=self.config.model, data=self.config.data, seed=self.config.seed, arch=self.config.arch,
                      calibration_samples=self.config.calibration_samples)
        self.context = BuildContext.create(base, self.out, self.threads, self.show_training)
        if self.context.baseline.task != "classification":
            raise ConfigError(f"optimize scores candidates by top-1 accuracy, which needs a classification model; "
                              f"this one's task is {self.context.baseline.task!r}")
        self.meter = Meter(self.context, goals, self.device, self.host, self.threads, self.out)
        backends = [get_backend(name) for name in self._backends()]
        stage1 = export_candidates(self.config.space, base, backends, goals.max_accuracy_drop)
        self.emit("stage", f"stage 1: {len(stage1)} exports of the baseline (no training)")
        for recipe in stage1:
            self._consider(recipe, stage=1)
        exports = self._stage2_exports(stage1)
        qat_backends = [b.name for b in backends if b.capabilities.qat_int8]
        input_size = self.context.baseline.input_spec.shape[-1] if len(self.context.baseline.input_spec.shape) == 4 else None
        stage2 = fine_tune_candidates(self.config.space, base, goals.priority, exports, input_size, qat_backends)
        self.emit("stage", f"stage 2: up to {len(stage2)} fine-tuned candidates, {goals.priority} first")
        for recipe in stage2:
            self._consider(recipe, stage=2)
        return self._outcome()

    def _backends(self) -> list[str]:
        from edgeopt.backends import all_backends, get_backend

        names = self.config.space.backends or tuple(b.name for b in all_backends())
        usable = []
        for name in names:
            reason = get_backend(name).unavailable_reason()
            if reason:
                self.not_tried.append({"label": f"{name} (any precision)", "reason": f"unavailable here: {reason}"})
            elif not self.device.runs(name):
                self.not_tried.append({"label": f"{name} (any precision)", "reason": f"does not run on {self.device.name}"})
            else:
                usable.append(name)
        if "eager" in usable:  # the baseline first
            usable.remove("eager")
            usable.insert(0, "eager")
        return usable

    def _stage2_exports(self, stage1: list[Recipe]) -> list[Recipe]:
        """How to export fine-tuned models: the fastest INT8 backend's PTQ, then its accuracy-aware
        PTQ (when plain PTQ of a fine-tuned model loses too much); for accuracy first, also the
        fastest FP32 backend."""
        records = {r["key"]: r for r in pareto.measured(self.journal.candidates())}
        done = [(records[recipe.hash]["latency_ms"], recipe.hash, recipe) for recipe in stage1 if recipe.hash in records]
        exports = []
        int8 = sorted(item for item in done if item[2].precision == "int8")
        if int8:
            backend = int8[0][2].backend
            exports += [r for _, _, r in sorted(int8, key=lambda item: item[2].quantization != "ptq")
                        if r.backend == backend]
        fp32 = sorted(item for item in done if item[2].precision == "fp32")
        if fp32 and (not exports or self.config.goals.priority == "accuracy"):
            exports.append(fp32[0][2])
        return exports

    def _consider(self, recipe: Recipe, stage: int) -> None:
        key = recipe.hash
        if key in self.journal:
            self.emit("candidate", f"{recipe.label}: from the journal ({self.journal.get(key)['status']})")
            self._update_best()
            return
        remaining = self._remaining_s()
        if remaining <= 0:
            self._not_tried(recipe, "the budget was spent")
            return
        if stage == 2:
            reason = self._pre_check(recipe, remaining)
            if reason:
                return
        self.emit("candidate", f"{recipe.label}: building and measuring ({self._budget_text()})")
        record = self.meter.candidate(recipe, stage)
        self.journal.add(record)
        self.emit("result", _result_line(record))
        self._update_best()

    def _pre_check(self, recipe: Recipe, remaining: float) -> str | None:
        """Probe the untrained architecture; journal a skip (or note a budget miss) and say why."""
        goals = self.config.goals
        probe = self._probe(recipe)
        if probe.get("status") != "ok":
            reason = f"its architecture could not be exported: {probe.get('reason')}"
        elif goals.max_latency_ms and probe["latency_ms"] > goals.max_latency_ms * LATENCY_MARGIN:
            reason = f"predicted {self._ms(probe)} > --max-latency-ms {goals.max_latency_ms:g} (untrained probe)"
        elif goals.max_size_mb and probe["size_mb"] > goals.max_size_mb:
            reason = f"its size {probe['size_mb']:.2f} MB > --max-size-mb {goals.max_size_mb:g}"
        else:
            reason = self._cannot_win(recipe, probe) or self._fine_tuned_too_inaccurate(recipe)
        if reason:
            self.journal.add(candidate_record(recipe, 2, "skipped", reason=reason, predicted_ms=probe.get("latency_ms")))
            self.emit("skip", f"{recipe.label}: skipped, {reason}")
            return reason
        from edgeopt.search.builder import seconds_per_epoch

        already_built = self.context.model_path(recipe).is_file()  # PTQ and accuracy-aware share one model
        epochs = 0 if already_built else sum(int(s.get("epochs") or 0) for s in recipe.steps)
        training_s = seconds_per_epoch(recipe, self.context) * epochs if epochs else 0.0
        if training_s > remaining:
            self._not_tried(recipe, f"fine-tuning needs about {training_s / 60:.1f} min, {remaining / 60:.1f} min "
                                    f"of budget left")
            return "budget"
        work = f"fine-tuning about {training_s / 60:.1f} min" if epochs else "its fine-tuned model is already built"
        self.emit("train", f"{recipe.label}: predicted {self._ms(probe)}; {work}")
        return None

    def _fine_tuned_too_inaccurate(self, recipe: Recipe) -> str | None:
        """When the fine-tuned FP32 model is already built and already misses the accuracy goal,
        no export of it can meet it (quantization does not recover accuracy): say so, skip it."""
        drop_goal = self.config.goals.max_accuracy_drop
        trained = self.context.model_path(recipe)
        if drop_goal is None or not recipe.steps or not trained.is_file():
            return None
        key = f"fp32:{trained.stem}"
        record = self.journal.get(key) or self.journal.add({"key": key, "kind": "fp32", **self.meter.fp32_accuracy(trained)})
        if record["drop_points"] > drop_goal:
            return (f"the fine-tuned model already loses {record['drop_points']:.2f} points in FP32 "
                    f"(--max-accuracy-drop {drop_goal:g})")
        return None

    def _probe(self, recipe: Recipe) -> dict[str, Any]:
        """The untrained architecture's probe, from the journal or measured now (and journaled)."""
        untrained = recipe.untrained()
        key = f"probe:{untrained.hash}"
        if key in self.journal:
            return self.journal.get(key)
        measured = self.journal.get(untrained.hash)  # e.g. QAT's architecture is the stage-1 INT8 one
        if measured and measured.get("status") == "ok":
            return measured
        full_width = dataclasses.replace(untrained, steps=())
        return self.journal.add(self.meter.probe(recipe, self.journal.get(full_width.hash)))

    def _cannot_win(self, recipe: Recipe, probe: dict[str, Any]) -> str | None:
        best = self.journal.get(self.best_key) if self.best_key else None
        if best is None:
            return None
        priority = self.config.goals.priority
        plain = (self.journal.get(dataclasses.replace(recipe, quantization="ptq", max_accuracy_drop=None).hash)
                 if recipe.quantization == "aware" else None)
        if priority != "accuracy" and plain and plain["status"] == "ok" and not plain["violations"]:
            return "plain PTQ of the same model already meets the goals; accuracy-aware PTQ can only keep more FP32"
        if priority == "latency" and probe["latency_ms"] >= best["latency_ms"]:
            return f"predicted {self._ms(probe)} cannot beat the best so far ({self._ms(best)})"
        if priority == "memory" and probe["size_mb"] >= best["size_mb"] and probe["peak_rss_mb"] >= best["peak_rss_mb"]:
            return f"size {probe['size_mb']:.2f} MB and memory cannot beat the best so far"
        return None

    def _ms(self, record: dict[str, Any]) -> str:
        """A latency as text, marked when it is an estimate for a device that is not this machine."""
        return f"{record['latency_ms']:.2f} ms" + ("" if self.device.is_host else " (estimated)")

    def _not_tried(self, recipe: Recipe, reason: str) -> None:
        self.not_tried.append({"key": recipe.hash, "label": recipe.label, "reason": reason})
        self.emit("skip", f"{recipe.label}: not tried, {reason}")

    # -- best so far and the outcome -------------------------------------------------------
    def _update_best(self) -> None:
        chosen = pareto.choose(self.journal.candidates(), self.config.goals.priority)
        if chosen is None or chosen["key"] == self.best_key:
            return
        self.best_key = chosen["key"]
        source = self.out / chosen["artifact"]
        staging = self.out / "best.partial"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(source, staging)
        shutil.rmtree(self.out / "best", ignore_errors=True)
        staging.rename(self.out / "best")  # a reader sees the old best or the new one, never half of one
        shutil.copyfile(self.out / "candidates" / chosen["key"] / "recipe.toml", self.out / "best.toml")
        (self.out / "best.json").write_text(json.dumps(chosen, indent=2) + "\n")
        self.emit("best", f"best so far: {chosen['label']} · {self._ms(chosen)} · top-1 {chosen['top1']:.2%}")

    def _budget_text(self) -> str:
        used = self.config.budget_s - self._remaining_s()
        return f"{used / 60:.1f} of {self.config.budget_s / 60:.3g} min"

    def _outcome(self) -> SearchOutcome:
        from edgeopt.measure import environment

        records = self.journal.candidates()
        chosen = pareto.choose(records, self.config.goals.priority)
        return SearchOutcome(
            config=self.config, baseline=self.meter.baseline_record, records=records, chosen=chosen,
            front=pareto.pareto_front(records), closest=[] if chosen else pareto.closest(records),
            device=self.device.to_dict() | {"threads_here": self.threads, "memory_cap_mb": self.device.memory_cap_mb},
            environment=environment.collect(), elapsed_s=self.used_before + time.monotonic() - self.started,
            not_tried=self.not_tried, winner_details=self.meter.winner_details(chosen) if chosen else {},
        )

def _quiet_libraries() -> None:
    """NNCF logs every accuracy-control step at INFO; a search prints its own one line per candidate."""
    import logging

    logging.getLogger("nncf").setLevel(logging.WARNING)
    try:
        import nncf

        nncf.set_log_level(logging.WARNING)
    except ImportError:
        pass


def _result_line(record: dict[str, Any]) -> str:
    from edgeopt.report.search import points

    if record["status"] != "ok":
        return f"{record['label']}: {record['status']} — {record.get('reason')}"
    verdict = "meets the goals" if not record["violations"] else "misses " + "; ".join(record["violations"])
    estimate = " (estimated)" if record["estimated"] else ""
    return (f"{record['label']}: {record['latency_ms']:.2f} ms{estimate} · top-1 {record['top1']:.2%} "
            f"({points(record)}) · {record['size_mb']:.2f} MB · {verdict}")
