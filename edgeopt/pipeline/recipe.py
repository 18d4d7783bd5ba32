"""Recipe: how one result is made — the model and data, ordered pass configs, one export — with a stable hash.

A recipe is the whole provenance of a result: the baseline model and data, the ordered
PyTorch passes (each a ``Step``: a registered pass and its frozen config) and the
export (backend, precision, quantization). It is written as TOML beside every result;
``edgeopt build recipe.toml`` rebuilds it (see ``builder``). ``edgeopt prune``,
``distill``, ``quantize`` and ``optimize`` all make recipes, so every technique has
one code path.

Example:
    >>> r = Recipe(model="runs/neu.safetensors", data="neu.npz",
    ...            steps=(Step.of("prune", ratio=0.5, fine_tune={"epochs": 15}),),
    ...            export=ExportConfig("openvino", "int8", QuantizationConfig(mode="aware", max_drop=1.0)))
    >>> r.label
    'prune 0.5 (15 ep) → openvino int8 aware'
    >>> len(r.hash)
    12
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from edgeopt.core.errors import ConfigError
from edgeopt.models.sources import check_source
from edgeopt.passes import Pass, PassConfig, get_pass
from edgeopt.core.quantization import QuantizationConfig

FORMAT = 2  # version of the recipe layout; 1 was the flat, pre-pass layout


@dataclass(frozen=True)
class Step:
    """One pass and its config. ``module`` names where a pass from outside edgeopt is defined."""

    kind: str
    config: PassConfig
    module: str | None = None

    @classmethod
    def of(cls, kind: str, module: str | None = None, **settings: Any) -> "Step":
        technique = get_pass(kind, module)
        return cls(kind, technique.config(**settings), module or _plugin_module(technique))

    @classmethod
    def using(cls, technique: Pass, config: PassConfig) -> "Step":
        """The step that runs ``technique`` (a registered pass) with ``config``, one of its own configs."""
        if not isinstance(config, technique.config_type):
            raise ConfigError(f"the {technique.name} pass takes a {technique.config_type.__name__}, "
                              f"not a {type(config).__name__}")
        return cls(technique.name, config, _plugin_module(technique))

    @property
    def technique(self) -> Pass:
        return get_pass(self.kind, self.module)

    @property
    def label(self) -> str:
        return self.technique.label(self.config)

    @property
    def epochs(self) -> int:
        return self.config.epochs

    def untrained(self) -> "Step | None":
        """The same architecture without fine-tuning (None: the step is left out of a probe)."""
        config = self.technique.untrained(self.config)
        return None if config is None else dataclasses.replace(self, config=config)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **({"module": self.module} if self.module else {}), **self.config.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any], origin: str = "a recipe") -> "Step":
        """A step read from ``origin`` (a file): its plugin module and model sources are data, checked by
        ``edgeopt.core.trust`` before anything is imported."""
        settings = dict(data)
        kind, module = settings.pop("kind"), settings.pop("module", None)
        technique = get_pass(kind, module, origin)
        step = cls(kind, technique.config(**settings), module or _plugin_module(technique))
        for source in technique.model_sources(step.config):
            check_source(source, origin)
        return step


def _plugin_module(technique: Pass) -> str | None:
    module = type(technique).__module__
    return None if module.startswith("edgeopt.") else module


@dataclass(frozen=True)
class ExportConfig:
    """The backend, precision and (INT8) quantization a recipe ends with."""

    backend: str = "eager"
    precision: str = "fp32"
    quantization: QuantizationConfig | None = None
    options: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if self.precision == "int8" and self.quantization is None:
            object.__setattr__(self, "quantization", QuantizationConfig())
        if self.precision != "int8" and self.quantization is not None:
            raise ConfigError(f"quantization settings apply to int8, not {self.precision}")
        object.__setattr__(self, "options", tuple(sorted(dict(self.options).items())))

    @property
    def label(self) -> str:
        return f"{self.backend} {self.precision}{self.quantization.label if self.quantization else ''}"

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"backend": self.backend, "precision": self.precision}
        if self.quantization:
            data["quantization"] = self.quantization.to_dict()
        if self.options:
            data["options"] = dict(self.options)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ExportConfig":
        quantization = data.get("quantization")
        return cls(backend=data["backend"], precision=data.get("precision", "fp32"),
                   quantization=QuantizationConfig.from_dict(quantization) if quantization else None,
                   options=tuple(dict(data.get("options", {})).items()))


@dataclass(frozen=True)
class Recipe:
    """Baseline + steps + export. Everything that decides the result, nothing that does not."""

    model: str
    data: str
    steps: tuple[Step, ...] = ()
    export: ExportConfig = field(default_factory=ExportConfig)
    seed: int = 0
    arch: str | None = None
    # Where the recipe was read from (None: built by the caller). Not part of the recipe: it decides only
    # whether the names in it are data (``edgeopt.core.trust``) when the builder and its passes load them.
    origin: str | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", tuple(self.steps))
        quantizing = [i for i, step in enumerate(self.steps) if step.technique.quantizes]
        qat_export = self.export.quantization is not None and self.export.quantization.mode == "qat"
        if quantizing and (quantizing != [len(self.steps) - 1] or not qat_export):
            raise ConfigError("a quantization-aware step comes last and exports as int8 in mode qat")
        if qat_export and not quantizing:
            raise ConfigError("int8 in mode qat needs a quantization-aware step (qat) before the export")

    @property
    def label(self) -> str:
        parts = [step.label for step in self.steps if not step.technique.quantizes]
        qat = [step for step in self.steps if step.technique.quantizes]
        epochs = f" ({qat[0].epochs} ep)" if qat and qat[0].epochs else ""
        return " → ".join([*parts, f"{self.export.label}{epochs}"])

    @property
    def trains(self) -> bool:
        return any(step.epochs for step in self.steps)

    @property
    def hash(self) -> str:
        """12 hex digits of the SHA-256 of the canonical JSON: equal recipes, equal hashes."""
        return stable_hash(self.to_dict())

    def prefix_hash(self, count: int) -> str:
        """Hash of the model after the first ``count`` steps (for caching shared work)."""
        return stable_hash({"model": self.model, "arch": self.arch, "data": self.data, "seed": self.seed,
                            "steps": [s.to_dict() for s in self.steps[:count]]})

    def untrained(self) -> "Recipe":
        """The same architecture without fine-tuning, exported as plain PTQ: what latency probes build."""
        steps = tuple(step for step in (s.untrained() for s in self.steps) if step is not None)
        quantization = QuantizationConfig() if self.export.precision == "int8" else None
        return dataclasses.replace(self, steps=steps, export=dataclasses.replace(self.export, quantization=quantization))

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"format": FORMAT, "model": self.model, "data": self.data, "seed": self.seed,
                                "steps": [s.to_dict() for s in self.steps], "export": self.export.to_dict()}
        if self.arch:
            data["arch"] = self.arch
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], origin: str = "a recipe") -> "Recipe":
        """A recipe read from ``origin``: the names in it (model, arch, plugin modules, students) are data —
        an import path among them must be known or granted (``edgeopt.core.trust``), checked here, before any
        training starts."""
        if data.get("format", 1) != FORMAT:
            raise ConfigError(f"this recipe has layout {data.get('format', 1)}; this edgeopt reads layout {FORMAT}: "
                              "write it again with `edgeopt optimize` or by hand (see any recipe.toml it writes)")
        try:
            for source in (data["model"], data.get("arch")):
                check_source(source, origin)
            return cls(model=data["model"], data=data["data"],
                       steps=tuple(Step.from_dict(s, origin) for s in data.get("steps", [])),
                       export=ExportConfig.from_dict(data["export"]), seed=int(data.get("seed", 0)), arch=data.get("arch"),
                       origin=origin)
        except ConfigError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
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
            return cls.from_dict(tomllib.loads(path.read_text()), origin=str(path))
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
