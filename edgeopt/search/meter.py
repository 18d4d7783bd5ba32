"""Measuring candidates: accuracy on the test split, latency here (or estimated), size, memory.

A ``Meter`` holds what every measurement of one search shares — the built baseline and
its test-split logits, the device profile and the thread count that emulates it — and
turns a recipe into a journal record. Deciding what to measure next is ``loop``'s job.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from edgeopt.errors import EdgeoptError
from edgeopt.search.goals import Goals
from edgeopt.search.recipe import Recipe

MB = 2**20


class Meter:
    """Builds and measures recipes for one search (see the module docstring)."""

    def __init__(self, context, goals: Goals, device, host, threads: int, out: Path) -> None:
        self.context, self.goals, self.device, self.host = context, goals, device, host
        self.threads, self.out = threads, out
        self.baseline()

    def baseline(self) -> dict[str, Any]:
        from edgeopt.measure.accuracy import predict, top1_accuracy
        from edgeopt.measure.profile import count_flops_and_params

        model, test = self.context.baseline, self.context.splits.test
        self.baseline_logits = predict(model.reference(), test, model.input_spec)
        cost = count_flops_and_params(model)
        self.baseline_record = {"source": model.source, "top1": top1_accuracy(self.baseline_logits, test.labels),
                                "test_samples": len(test), "macs": cost["macs"], "params": cost["params"],
                                "input": list(model.input_spec.shape), "classes": list(self.context.splits.classes)}
        return self.baseline_record

    def fp32_accuracy(self, checkpoint: Path) -> dict[str, Any]:
        """Top-1 of a built PyTorch model (eager FP32) on the test split, and its drop in points."""
        from edgeopt.measure.accuracy import predict, top1_accuracy
        from edgeopt.models import load_model

        started = time.monotonic()
        model = load_model(str(checkpoint))
        top1 = top1_accuracy(predict(model.reference(), self.context.splits.test, model.input_spec),
                             self.context.splits.test.labels)
        return {"top1": top1, "drop_points": 100.0 * (self.baseline_record["top1"] - top1),
                "elapsed_s": time.monotonic() - started}

    def probe(self, recipe: Recipe, reference: dict[str, Any] | None) -> dict[str, Any]:
        """Latency, size and memory of ``recipe``'s architecture, untrained.

        ``reference``: the same export's full-width record, for a MAC-scaled prediction
        when the untrained architecture cannot be exported.
        """
        from edgeopt.search.builder import build

        untrained = recipe.untrained()
        key = f"probe:{untrained.hash}"
        started = time.monotonic()
        try:
            _, artifact = build(untrained, self.context, self.out / "probes" / untrained.hash / "artifact", overwrite=True)
            record = {"key": key, "kind": "probe", "status": "ok", **self._timing(artifact, self._macs(untrained))}
        except EdgeoptError as exc:
            record = self._predicted_from_macs(untrained, key, str(exc), reference)
        record["elapsed_s"] = time.monotonic() - started
        return record

    def _predicted_from_macs(self, untrained: Recipe, key: str, failure: str,
                             reference: dict[str, Any] | None) -> dict[str, Any]:
        """When the untrained architecture cannot be exported (an INT8 parity miss on random-ish
        weights, say): the same export's measured latency at full width, scaled by MACs."""
        if not reference or reference.get("status") != "ok":
            return {"key": key, "kind": "probe", "status": "failed", "reason": failure}
        cost = self._macs(untrained)
        scale = cost["macs"] / max(reference["macs"], 1)
        return {"key": key, "kind": "probe", "status": "ok", "predicted_from": "MACs", "probe_failure": failure,
                "latency_ms": reference["latency_ms"] * scale, "size_mb": reference["size_mb"] * cost["params"] / max(reference["params"], 1),
                "peak_rss_mb": reference["peak_rss_mb"], "macs": cost["macs"], "params": cost["params"]}

    def _macs(self, recipe: Recipe) -> dict[str, int]:
        from edgeopt.measure.profile import count_flops_and_params
        from edgeopt.search.builder import build_model

        return count_flops_and_params(build_model(recipe.untrained(), self.context))

    def _timing(self, artifact, cost: dict[str, int]) -> dict[str, Any]:
        """Latency (measured here; estimated for a remote device), size and peak memory."""
        from edgeopt.devices import estimate_ms
        from edgeopt.measure.bench import BenchConfig, measure_artifact

        measured = measure_artifact(artifact.path, BenchConfig(threads=self.threads))
        if "error" in measured:
            raise EdgeoptError(measured["error"])
        row = measured["batches"]["1"]
        timing = {"measured_ms": row["p50"], "measured_p90_ms": row["p90"], "measured_p99_ms": row["p99"],
                  "peak_rss_mb": row["peak_rss_mb"], "size_mb": artifact.size_bytes / MB, "threads": self.threads,
                  "macs": cost["macs"], "params": cost["params"], "estimated": not self.device.is_host}
        if self.device.is_host:
            timing["latency_ms"] = row["p50"]
        else:
            timing["latency_ms"] = estimate_ms(row["p50"], self.device, self.host, artifact.precision, cost["macs"],
                                               artifact.size_bytes, self.threads)
        return timing

    def candidate(self, recipe: Recipe, stage: int) -> dict[str, Any]:
        from edgeopt.backends import open_session
        from edgeopt.measure.accuracy import fidelity, predict, top1_accuracy
        from edgeopt.search.builder import build

        started = time.monotonic()
        folder = self.out / "candidates" / recipe.hash
        recipe.write(folder / "recipe.toml")
        try:
            _, artifact = build(recipe, self.context, folder / "artifact", overwrite=True)
            session = open_session(artifact.path, threads=self.threads)
            logits = predict(session.run, self.context.splits.test, artifact.input_spec)
            del session
            metrics = {"top1": top1_accuracy(logits, self.context.splits.test.labels),
                       **fidelity(self.baseline_logits, logits), "artifact": f"candidates/{recipe.hash}/artifact",
                       "notes": artifact.manifest.get("notes", [])}
            metrics["drop_points"] = 100.0 * (self.baseline_record["top1"] - metrics["top1"])
            metrics.update(self._timing(artifact, self._macs(recipe)))
            record = candidate_record(recipe, stage, "ok", **metrics)
            record["violations"] = self._violations(record)
            record["shortfall"] = self.goals.shortfall(record)
        except EdgeoptError as exc:
            record = candidate_record(recipe, stage, "failed", reason=str(exc))
        record["elapsed_s"] = time.monotonic() - started
        return record

    def _violations(self, record: dict[str, Any]) -> list[str]:
        missed = self.goals.violations(record)
        cap = self.device.memory_cap_mb
        if record["peak_rss_mb"] > cap:
            missed.append(f"{self.device.id} memory cap {cap:.0f} MB: {record['peak_rss_mb']:.0f} MB")
        return missed

    def winner_details(self, chosen: dict[str, Any]) -> dict[str, Any]:
        """Per-class accuracy, confusion matrix and the runtime's operator profile of the winner."""
        from edgeopt.artifact import Artifact
        from edgeopt.backends import get_backend, open_session
        from edgeopt.measure.accuracy import classification_metrics, predict

        artifact = Artifact.open(self.out / chosen["artifact"])
        test = self.context.splits.test
        logits = predict(open_session(artifact.path, threads=self.threads).run, test, artifact.input_spec)
        details: dict[str, Any] = {"metrics": classification_metrics(logits, test.labels, test.classes)}
        try:
            layers = get_backend(artifact.backend).profile(artifact, self.out / "profile", threads=self.threads)
            details["profile"] = {"backend": artifact.backend, "layers": layers[:25],
                                  "total_ms": sum(row["ms"] for row in layers)}
        except EdgeoptError as exc:
            details["profile"] = {"backend": artifact.backend, "note": str(exc)}
        return details


def candidate_record(recipe: Recipe, stage: int, status: str, **fields: Any) -> dict[str, Any]:
    """A journal record of one candidate: what it is, and what was measured."""
    return {"key": recipe.hash, "kind": "candidate", "label": recipe.label, "stage": stage, "status": status,
            "recipe": recipe.to_dict(), "backend": recipe.backend, "precision": recipe.precision,
            "quantization": recipe.quantization, "violations": [], **fields}
