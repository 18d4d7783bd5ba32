"""Measuring candidates: quality on the test split, latency on the device (or here, or estimated), size, memory.

A ``Meter`` holds what every measurement of one search shares — the built baseline and
its outputs on the test split, the task and the goal's metric, the device profile and
the thread count that emulates it, the device's agent when there is one — and turns a
recipe into a journal record. Deciding what to measure next is ``loop``'s job. A
candidate's build and measurement write what native libraries print to its ``build.log``,
not to the console.

Latency comes from one of three places, and the record says which:

- **the device**, when an agent runs there (``measured_on``): timed by the agent, its outputs
  checked against this machine's, also timed here (``host_ms``, for the two rankings side
  by side), and filed in the measurement store that corrects later estimates;
- **this machine** with the device's thread count, when the device is this machine;
- **an estimate** otherwise: the roofline ratio, corrected by the store's measurements of
  that device kind, with an interval and the number of measurements behind it.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from pathlib import Path
from typing import Any

from edgeopt.agent.client import AgentClient, AgentUnavailable
from edgeopt.core.deadline import NO_DEADLINE, BudgetExhausted, Deadline
from edgeopt.devices.calibration import MeasurementStore, Observation
from edgeopt.core.errors import BackendError, EdgeoptError, ParityError
from edgeopt.devices.mcu import footprint_kb
from edgeopt.measure.fidelity import finite_or_none, sqnr_db
from edgeopt.measure.latency import TimingConfig
from edgeopt.measure.process import MeasureConfig, measurement_from, time_artifact
from edgeopt.measure.measurement import Measurement
from edgeopt.pipeline.builder import BuildContext, build, build_model
from edgeopt.search.building import Built, candidate_folder, unexpected
from edgeopt.pipeline.recipe import Recipe
from edgeopt.search.goals import Goals
from edgeopt.search.native_log import native_output_to
from edgeopt.search.candidate import Candidate, ModelScore, Probe
from edgeopt.tasks import task_of


def _spent(record: Candidate, started: float) -> Candidate:
    """``record`` with the time judging it took added to its build's."""
    record.elapsed_s += time.monotonic() - started
    return record


class Meter:
    """Builds and measures recipes for one search (see the module docstring)."""

    def __init__(self, context: BuildContext, goals: Goals, device, host, threads: int, out: Path,
                 timing: TimingConfig, agent: AgentClient | None = None, agent_label: str | None = None,
                 store: MeasurementStore | None = None, sustained_s: float = 0.0,
                 farm: list[tuple[AgentClient, str]] | None = None) -> None:
        from edgeopt.measure import environment

        self.context, self.goals, self.device, self.host = context, goals, device, host
        self.threads, self.out, self.timing = threads, out, timing
        self.agent, self.agent_label, self.sustained_s = agent, agent_label, sustained_s
        self.farm = farm or []  # the other devices of a farm: (client, label), each timing every candidate too
        self.farm_down: set[str] = set()  # farm devices that stopped answering
        self.store = store or MeasurementStore()
        self.host_threads = environment.cpu_count()  # the side-by-side ranking: this machine at its own width
        self.task = context.task
        self.metric = self.task.metric(goals.metric)
        self.baseline = self._baseline()

    def _baseline(self) -> dict[str, Any]:
        from edgeopt.measure.inference import outputs_on
        from edgeopt.measure.profile import count_flops_and_params

        model, test = self.context.baseline, self.context.splits.test
        self.baseline_outputs = outputs_on(model.reference(), test, model.input_spec)
        cost = count_flops_and_params(model)
        return {"source": model.source, "task": self.task.name, "metric": self.metric.name,
                "metric_title": self.metric.title, "metrics": self.task.score(self.baseline_outputs, test),
                "test_samples": len(test), "macs": cost["macs"], "params": cost["params"],
                "input": list(model.input_spec.shape), "classes": list(self.context.splits.classes)}

    @property
    def baseline_value(self) -> float:
        return self.baseline["metrics"][self.metric.name]

    def model_score(self, checkpoint: Path, key: str) -> ModelScore:
        """The quality of a built PyTorch model (eager FP32) on the test split, and its drop in points."""
        from edgeopt.measure.inference import outputs_on
        from edgeopt.models.sources import load_model

        started = time.monotonic()
        model = load_model(str(checkpoint))
        metrics = task_of(model).score(outputs_on(model.reference(), self.context.splits.test, model.input_spec),
                                  self.context.splits.test)
        return ModelScore(key, metrics, self.metric.drop_points(self.baseline_value, metrics[self.metric.name]),
                          time.monotonic() - started)

    def probe(self, recipe: Recipe, reference: Candidate | None, deadline: Deadline = NO_DEADLINE) -> Probe:
        """Latency, size and memory of ``recipe``'s architecture, untrained.

        ``reference``: the same export's full-width record, for a MAC-scaled prediction
        when the untrained architecture cannot be exported.
        """
        untrained = recipe.untrained()
        key = f"probe:{untrained.hash}"
        started = time.monotonic()
        folder = self.out / "probes" / untrained.hash
        try:
            with native_output_to(folder / "build.log"):
                # untrained weights compute nothing meaningful: only the latency counts here
                _, artifact = build(_lightly_calibrated(untrained), self.context, folder / "artifact", overwrite=True,
                                    verify=False, deadline=deadline)
                deadline.check("timing the untrained probe")
                measured = self._timing(artifact, self._cost(untrained), sustained=False)
            probe = Probe(key, "ok", measured)
        except AgentUnavailable as exc:  # not journaled: --resume probes it on the device
            probe = Probe(key, "unmeasured", reason=str(exc))
        except BudgetExhausted as exc:  # not journaled either: a resume with budget left probes it
            probe = Probe(key, "stopped", reason=str(exc))
        except EdgeoptError as exc:
            probe = self._predicted_from_macs(untrained, key, str(exc), reference)
        probe.elapsed_s = time.monotonic() - started
        return probe

    def _predicted_from_macs(self, untrained: Recipe, key: str, failure: str, reference: Candidate | None) -> Probe:
        """When the untrained architecture cannot be exported: the same export's latency at full
        width, scaled by MACs (a prediction, and labelled so)."""
        if reference is None or not reference.ok or not reference.measurement.macs:
            return Probe(key, "failed", reason=failure)
        cost, full = self._cost(untrained), reference.measurement
        scale = cost["macs"] / max(full.macs, 1)
        predicted = dataclasses.replace(full, latency_ms=full.latency_ms * scale, measured_ms=full.measured_ms * scale,
                                        size_mb=full.size_mb * cost["params"] / max(full.params or 1, 1),
                                        macs=cost["macs"], params=cost["params"], metrics={}, fidelity={},
                                        arena_kb=None, flash_kb=None)  # another model's: not this one's to judge
        return Probe(key, "ok", predicted, reason=failure, predicted_from="MACs")

    def _cost(self, recipe: Recipe) -> dict[str, int]:
        from edgeopt.measure.profile import count_flops_and_params

        return count_flops_and_params(build_model(recipe.untrained(), self.context))

    def _timing(self, artifact, cost: dict[str, int], sustained: bool = True) -> Measurement:
        """Latency (on the device's agent, here, or estimated for the device), size and peak memory;
        ``sustained``: also the sustained run a goal asks for (a probe predicts p50 only)."""
        from edgeopt.images import to_input

        inputs = to_input(self.context.splits.test.images[:16], artifact.input_spec)  # a detector's NMS needs real images
        sustained_s = self.sustained_s if sustained else 0.0
        footprint = footprint_kb(artifact.manifest.get("compile") or {})
        if footprint is None and self.goals.microcontroller:  # unjudgeable: it must not pass for fitting
            raise BackendError(f"{artifact.backend} artifacts record no tensor arena or flash size, which the goals "
                               "bound; only a microcontroller runtime's (tflm) do")
        arena_kb, flash_kb = footprint or (None, None)
        if self.agent is not None:
            measured, on_devices = self._timing_on_farm(artifact, cost, inputs, sustained_s, everywhere=sustained)
            return dataclasses.replace(measured, arena_kb=arena_kb, flash_kb=flash_kb, on_devices=on_devices)
        config = MeasureConfig(threads=self.threads, timing=self.timing, sustained_s=sustained_s)
        measured = measurement_from(time_artifact(artifact.path, config, inputs), artifact.size_bytes, self.threads,
                                    macs=cost["macs"], params=cost["params"], arena_kb=arena_kb, flash_kb=flash_kb)
        if self.device.is_host:
            return measured
        if self.device.mcu is not None:
            return self._on_microcontroller(measured, artifact)
        estimate, low, high, basis = self._estimate(measured.latency_ms, artifact, cost)
        return dataclasses.replace(measured, latency_ms=estimate, estimated=True, p90_ms=None, p99_ms=None,
                                   estimate_low_ms=low, estimate_high_ms=high, estimate_basis=basis)

    def _on_microcontroller(self, measured: Measurement, artifact) -> Measurement:
        """A microcontroller's latency: estimated from the flatbuffer's MACs and the part's assumed int8 rate
        (``edgeopt.devices.mcu``); what this machine timed (TFLM's reference kernels here) stays as ``host_ms``."""
        macs = (artifact.manifest.get("compile") or {}).get("macs")
        if not isinstance(macs, int):
            raise BackendError(f"{artifact.backend} artifacts carry no MAC count: a microcontroller's latency cannot "
                               "be estimated; export with tflm")
        estimate, low, high = self.device.mcu.estimate_ms(macs)
        return dataclasses.replace(measured, latency_ms=estimate, estimated=True, p90_ms=None, p99_ms=None,
                                   host_ms=measured.measured_ms, estimate_low_ms=low, estimate_high_ms=high,
                                   estimate_basis=0)

    def _roofline_ms(self, here_ms: float, threads_here: int, artifact, cost: dict[str, int]) -> float:
        from edgeopt.devices import estimate_ms

        return estimate_ms(here_ms, self.device, self.host, artifact.precision, cost["macs"], artifact.size_bytes,
                           threads_here)

    @property
    def store_key(self) -> str:
        """The device kind measurements are filed under: the profile id (an agent's own kind for its profile)."""
        return self.device.id.removeprefix("agent:")

    def _estimate(self, here_ms: float, artifact, cost: dict[str, int]) -> tuple[float, float, float, int]:
        """The roofline estimate corrected by this device kind's measurements: (ms, low, high, measurements behind it)."""
        correction = self.store.correction(self.store_key, artifact.backend, artifact.precision)
        centre, low, high = correction.apply(self._roofline_ms(here_ms, self.threads, artifact, cost))
        return centre, low, high, correction.basis

    def _timing_on_farm(self, artifact, cost: dict[str, int], inputs, sustained_s: float,
                        everywhere: bool) -> tuple[Measurement, dict[str, float | None]]:
        """The deciding device's measurement and, at the same time (a thread per device: each device measures one
        artifact at a time), every other device's p50 (None where it could not measure); ``everywhere`` False:
        the deciding device only (a probe's prediction)."""
        devices = [(client, label) for client, label in self.farm if label not in self.farm_down]
        if not devices or not everywhere:
            return self._timing_on_device(artifact, cost, inputs, sustained_s), {}
        from concurrent.futures import ThreadPoolExecutor

        from edgeopt.backends import open_session

        try:  # this machine's outputs once, before anything is timed here: the devices' threads only wait on them
            here = open_session(artifact.path, threads=self.host_threads).run([inputs])
        except BackendError:
            here = None
        with ThreadPoolExecutor(max_workers=len(devices)) as pool:
            others = {label: pool.submit(self._p50_on, client, label, artifact, inputs, here)
                      for client, label in devices}
            measured = self._timing_on_device(artifact, cost, inputs, sustained_s, here)
            return measured, {label: future.result() for label, future in others.items()}

    def _p50_on(self, client: AgentClient, label: str, artifact, inputs, here) -> float | None:
        """One farm device's p50 of ``artifact`` (outputs checked against this machine's ``here``); None, noted in
        the candidate's farm.log, when it cannot run it or its outputs differ. A device that does not answer (through
        its retries) is left out for the rest of the search: one down device must not stall every candidate."""
        from edgeopt.agent.remote import measure_on_device

        try:
            remote = measure_on_device(client, artifact.path, MeasureConfig(timing=self.timing), inputs,
                                       threads_here=self.host_threads, here=here)
            p50 = remote["timing"]["batches"]["1"]["p50"]
        except AgentUnavailable as exc:
            self.farm_down.add(label)
            reason = f"{exc}; left out for the rest of the search"
        except Exception as exc:  # a thread's failure must not fail a candidate the deciding device measured
            reason = f"{type(exc).__name__}: {exc}"
        else:
            if remote["parity"]["passed"] is False:
                reason = f"outputs differ from this machine's: {remote['parity']['reason']}"
            elif isinstance(p50, (int, float)) and math.isfinite(p50) and p50 > 0:
                return float(p50)
            else:
                reason = f"the device answered a p50 of {p50!r}"
        with open(artifact.path.parent / "farm.log", "a") as log:
            log.write(f"{label}: not measured: {reason}\n")
        return None

    def _timing_on_device(self, artifact, cost: dict[str, int], inputs, sustained_s: float,
                          here: list | None = None) -> Measurement:
        """Timed by the agent, outputs checked against this machine's (``here``, when already computed), also
        timed here; filed in the store."""
        from edgeopt.agent.remote import measure_on_device

        config = MeasureConfig(timing=self.timing, sustained_s=sustained_s)
        remote = measure_on_device(self.agent, artifact.path, config, inputs, threads_here=self.host_threads, here=here)
        parity = remote["parity"]
        if parity["passed"] is False:
            raise ParityError(f"on {self.agent_label} the outputs differ from this machine's: {parity['reason']}",
                              parity=parity)
        here = time_artifact(artifact.path, MeasureConfig(threads=self.host_threads, timing=self.timing), inputs)
        here_ms = here["batches"]["1"]["p50"]
        measured = measurement_from(remote["timing"], artifact.size_bytes, remote["threads"], macs=cost["macs"],
                                    params=cost["params"], measured_on=self.agent_label, host_ms=here_ms)
        self.store.add(Observation(self.store_key, artifact.backend, artifact.precision,
                                   estimate_ms=self._roofline_ms(here_ms, self.host_threads, artifact, cost),
                                   measured_ms=measured.latency_ms, host_ms=here_ms, host_threads=self.host_threads,
                                   macs=cost["macs"],
                                   size_bytes=artifact.size_bytes,
                                   artifact=artifact.manifest["files"][artifact.manifest["entry"]]["sha256"]))
        return measured

    def judge(self, recipe: Recipe, stage: int, built: Built, deadline: Deadline = NO_DEADLINE) -> Candidate:
        """Score the built ``recipe`` (its folder under ``OUT/candidates``, built here or on a cluster's node)
        on the test split, time it, and judge it against the goals."""
        from edgeopt.backends import open_session
        from edgeopt.core.artifact import Artifact
        from edgeopt.measure.inference import outputs_on

        started = time.monotonic()
        folder = candidate_folder(self.out, recipe)
        record = Candidate(recipe.hash, recipe.label, stage, built.status, recipe.to_dict(), reason=built.reason,
                           metric=self.metric.name, metric_title=self.metric.title, built_on=built.built_on,
                           log=str((folder / "build.log").relative_to(self.out)), elapsed_s=built.elapsed_s)
        if not built.ok:
            return record
        record.status = "failed"
        test = self.context.splits.test
        try:
            with native_output_to(folder / "build.log"):
                artifact = Artifact.open(folder / "artifact")
                deadline.check("scoring on the test split")
                session = open_session(artifact.path, threads=self.threads)
                outputs = outputs_on(session.run, test, artifact.input_spec)
                del session
                deadline.check("timing")
                measured = self._timing(artifact, self._cost(recipe))
        except BudgetExhausted as exc:  # not a failure: --resume with budget left builds it again
            record.status, record.reason = "stopped", f"{exc}; `--resume` with more budget continues it"
            return _spent(record, started)
        except AgentUnavailable as exc:  # never silently estimated: --resume measures it on the device
            record.status, record.reason = "unmeasured", f"{exc}; `--resume` measures it"
            record.artifact = str((folder / "artifact").relative_to(self.out))
            return _spent(record, started)
        except EdgeoptError as exc:
            record.reason = str(exc)
            return _spent(record, started)
        except Exception as exc:  # a bug in one candidate must not end a search of hours: record it, go on
            record.reason = unexpected(exc, folder / "build.log")
            return _spent(record, started)
        task = task_of(artifact)  # a student at another resolution decodes with its own anchors
        metrics = task.score(outputs, test)
        fidelity = task.fidelity(self.baseline_outputs, outputs)
        if self.baseline_outputs[0].shape == outputs[0].shape:
            fidelity["sqnr_db"] = finite_or_none(sqnr_db(self.baseline_outputs[0], outputs[0]))
        record.measurement = dataclasses.replace(measured, metrics=metrics, fidelity=fidelity)
        record.drop_points = self.metric.drop_points(self.baseline_value, metrics[self.metric.name])
        record.violations = self.goals.violations(record.measurement, record.drop_points, self.metric.title,
                                                  self.device.memory_cap_mb, self.device.id)
        record.status, record.shortfall = "ok", self.goals.shortfall(record.violations)
        record.artifact = str((folder / "artifact").relative_to(self.out))
        record.notes = list(artifact.manifest.get("notes", []))
        return _spent(record, started)

    def runoff(self, records: list[Candidate], rounds: int, deadline: Deadline = NO_DEADLINE) -> dict[str, list[float]]:
        """The p50 of each of ``records``, timed ``rounds`` more times here, a fresh process each time and in
        turn, round after round, so a slow spell of the machine falls on all of them alike (by key)."""
        from edgeopt.core.artifact import Artifact
        from edgeopt.images import to_input

        artifacts = {r.key: Artifact.open(self.out / r.artifact) for r in records}
        inputs_of = {key: to_input(self.context.splits.test.images[:16], artifact.input_spec)  # as ``_timing`` times
                     for key, artifact in artifacts.items()}
        config = MeasureConfig(threads=self.threads, timing=RUNOFF_TIMING)
        p50s: dict[str, list[float]] = {key: [] for key in artifacts}
        for round_index in range(rounds):
            for number, (key, artifact) in enumerate(artifacts.items()):
                deadline.check("timing side by side", round_index * len(artifacts) + number, rounds * len(artifacts))
                inputs = inputs_of[key]
                with native_output_to(self.out / "runoff.log"):
                    p50s[key].append(time_artifact(artifact.path, config, inputs)["batches"]["1"]["p50"])
        return p50s

    def retimed(self, record: Candidate, p50s: list[float], seconds: float) -> Candidate:
        """``record`` with its latency the median of all its timings (its first included), judged again
        (a latency bound may now hold, or not); ``seconds``: the share of the re-timing it cost."""
        measured = record.measurement
        runs = (measured.p50_runs or [measured.measured_ms]) + p50s
        median = statistics.median(runs)
        measured = dataclasses.replace(measured, latency_ms=median, measured_ms=median, p50_runs=runs)
        violations = self.goals.violations(measured, record.drop_points, self.metric.title, self.device.memory_cap_mb,
                                           self.device.id)
        return dataclasses.replace(record, measurement=measured, violations=violations,
                                   shortfall=self.goals.shortfall(violations), elapsed_s=record.elapsed_s + seconds)


    def winner_details(self, chosen: Candidate) -> dict[str, Any]:
        """What the task reports beyond its metrics (per-class figures, drawn samples) and the runtime's operator profile."""
        from edgeopt.core.artifact import Artifact
        from edgeopt.backends import get_backend, open_session
        from edgeopt.measure.inference import outputs_on

        artifact = Artifact.open(self.out / chosen.artifact)
        test = self.context.splits.test
        with native_output_to(self.out / "profile" / "profile.log"):
            outputs = outputs_on(open_session(artifact.path, threads=self.threads).run, test, artifact.input_spec)
            task = task_of(artifact)
            details: dict[str, Any] = {"task": task.details(outputs, test)}
            drawn = task.draw_samples(outputs, test, self.out)
            if drawn:
                details["task"]["samples_drawn"] = drawn
            try:
                layers = get_backend(artifact.backend).profile(artifact, self.out / "profile", threads=self.threads)
                details["profile"] = {"backend": artifact.backend, "layers": layers[:25],
                                      "total_ms": sum(row["ms"] for row in layers)}
            except EdgeoptError as exc:
                details["profile"] = {"backend": artifact.backend, "note": str(exc)}
        return details


RUNOFF_TIMING = TimingConfig(min_seconds=0.5)  # one of several timings: half a second each suffices
PROBE_CALIBRATION = 16  # samples: a probe is timed, never scored, so its INT8 ranges need only exist


def _lightly_calibrated(recipe: Recipe) -> Recipe:
    """``recipe`` with its INT8 calibrated on ``PROBE_CALIBRATION`` samples: the same graph, so the same
    latency, for a fraction of the calibration (300 samples through a detector take half a minute)."""
    quantization = recipe.export.quantization
    if quantization is None or quantization.calibration_samples <= PROBE_CALIBRATION:
        return recipe
    lighter = dataclasses.replace(quantization, calibration_samples=PROBE_CALIBRATION)
    return dataclasses.replace(recipe, export=dataclasses.replace(recipe.export, quantization=lighter))
