"""Recipe: how one candidate is made — model-level steps, then one export — with a stable hash.

A recipe is the whole provenance of a result: the baseline model and data, the ordered
PyTorch passes (prune, distil into a student or a lower resolution, quantization-aware
training) and the backend/precision/quantization of the export. It is written as TOML
beside every candidate; ``edgeopt build recipe.toml`` rebuilds it (see ``builder``).

Example:
    >>> r = Recipe(model="runs/neu.safetensors", data="neu.npz",
    ...            steps=(Step.of("prune", ratio=0.5, epochs=15),), backend="openvino", precision="int8",
    ...            quantization="aware", max_accuracy_drop=1.0)
    >>> r.label
    'prune 0.5 (15 ep) → openvino int8 aware'
    >>> len(r.hash)
    12
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from edgeopt.errors import ConfigError

STEP_KINDS = {
    "prune": ("ratio", "epochs"),            # Torch-Pruning + KD fine-tune from the baseline
    "distill": ("student", "input_size", "epochs"),  # a lighter student and/or a lower resolution
    "qat": ("epochs",),                      # NNCF fake-quantizers, fine-tuned
}
QUANTIZATIONS = ("none", "ptq", "aware", "qat")


@dataclass(frozen=True)
class Step:
    """One PyTorch-level pass: its kind and its parameters (sorted, hashable)."""

    kind: str
    params: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in STEP_KINDS:
            raise ConfigError(f"unknown recipe step {self.kind!r}; steps are {', '.join(STEP_KINDS)}")
        unknown = set(dict(self.params)) - set(STEP_KINDS[self.kind])
        if unknown:
            raise ConfigError(f"step {self.kind} has no parameter(s) {sorted(unknown)}; it takes {STEP_KINDS[self.kind]}")

    @classmethod
    def of(cls, kind: str, **params: Any) -> "Step":
        return cls(kind, tuple(sorted((k, v) for k, v in params.items() if v is not None)))

    def get(self, name: str, default: Any = None) -> Any:
        return dict(self.params).get(name, default)

    def with_params(self, **changes: Any) -> "Step":
        return Step.of(self.kind, **{**dict(self.params), **changes})

    @property
    def label(self) -> str:
        epochs = f" ({self.get('epochs')} ep)" if self.get("epochs") else ""
        if self.kind == "prune":
            return f"prune {self.get('ratio'):g}{epochs}"
        if self.kind == "distill":
            student = (self.get("student") or "same arch").split(":")[-1].split("?")[0]
            size = f" @{self.get('input_size')}px" if self.get("input_size") else ""
            return f"distil→{student}{size}{epochs}"
        return f"QAT{epochs}"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **dict(self.params)}


@dataclass(frozen=True)
class Recipe:
    """Baseline + steps + export. Everything that decides the result, nothing that does not."""

    model: str
    data: str
    steps: tuple[Step, ...] = ()
    backend: str = "eager"
    precision: str = "fp32"
    quantization: str = "none"
    max_accuracy_drop: float | None = None
    calibration_samples: int = 300
    seed: int = 0
    arch: str | None = None
    notes: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if self.quantization not in QUANTIZATIONS:
            raise ConfigError(f"quantization must be one of {', '.join(QUANTIZATIONS)}; got {self.quantization!r}")
        if (self.precision == "fp32") != (self.quantization == "none"):
            raise ConfigError(f"precision {self.precision} does not go with quantization {self.quantization}")
        if self.quantization == "qat" and not (self.steps and self.steps[-1].kind == "qat"):
            raise ConfigError("a QAT recipe ends with a qat step")
        if self.quantization == "aware" and self.max_accuracy_drop is None:
            raise ConfigError("accuracy-aware quantization needs max_accuracy_drop")

    @property
    def label(self) -> str:
        parts = [s.label for s in self.steps if s.kind != "qat"]
        quant = {"none": "", "ptq": "", "aware": " aware", "qat": " QAT"}[self.quantization]
        epochs = f" ({self.steps[-1].get('epochs')} ep)" if self.quantization == "qat" else ""
        return " → ".join([*parts, f"{self.backend} {self.precision}{quant}{epochs}"])

    @property
    def trains(self) -> bool:
        return any(step.get("epochs") for step in self.steps)

    @property
    def hash(self) -> str:
        """12 hex digits of the SHA-256 of the canonical JSON: equal recipes, equal hashes."""
        return stable_hash(self.to_dict())

    def prefix_hash(self, count: int) -> str:
        """Hash of the model after the first ``count`` steps (for caching shared work)."""
        return stable_hash({"model": self.model, "arch": self.arch, "data": self.data, "seed": self.seed,
                            "steps": [s.to_dict() for s in self.steps[:count]]})

    def untrained(self) -> "Recipe":
        """The same architecture without fine-tuning: what latency probes build."""
        steps = tuple(s.with_params(epochs=0) for s in self.steps if s.kind != "qat")
        quantization = "ptq" if self.precision != "fp32" else "none"
        return replace(self, steps=steps, quantization=quantization, max_accuracy_drop=None)

    def to_dict(self) -> dict[str, Any]:
        data = {
            "model": self.model, "data": self.data, "seed": self.seed,
            "steps": [s.to_dict() for s in self.steps],
            "export": {"backend": self.backend, "precision": self.precision, "quantization": self.quantization,
                       "calibration_samples": self.calibration_samples},
        }
        if self.arch:
            data["arch"] = self.arch
        if self.max_accuracy_drop is not None:
            data["export"]["max_accuracy_drop"] = self.max_accuracy_drop
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Recipe":
        try:
            steps = tuple(Step.of(s["kind"], **{k: v for k, v in s.items() if k != "kind"}) for s in data.get("steps", []))
            export = data["export"]
            return cls(model=data["model"], data=data["data"], steps=steps, backend=export["backend"],
                       precision=export["precision"], quantization=export.get("quantization", "none"),
                       max_accuracy_drop=export.get("max_accuracy_drop"),
                       calibration_samples=int(export.get("calibration_samples", 300)), seed=int(data.get("seed", 0)),
                       arch=data.get("arch"))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"not a valid recipe ({type(exc).__name__}: {exc}); see a recipe.toml written by "
                              f"`edgeopt optimize` for the layout") from None

    def to_toml(self) -> str:
        import tomli_w

        header = f"# edgeopt recipe {self.hash}: {self.label}\n# rebuild: edgeopt build recipe.toml --out DIR\n"
        return header + tomli_w.dumps(self.to_dict())

    @classmethod
    def read(cls, path: str | Path) -> "Recipe":
        path = Path(path)
        try:
            return cls.from_dict(tomllib.loads(path.read_text()))
        except FileNotFoundError:
            raise ConfigError(f"recipe {path} does not exist") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"recipe {path} is not valid TOML: {exc}") from None

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".partial")
        tmp.write_text(self.to_toml())
        tmp.replace(path)
        return path


def stable_hash(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:12]
