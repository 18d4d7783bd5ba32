"""Quantization settings: one typed config every INT8 path reads, and the data it needs.

``QuantizationConfig`` is handed unchanged from the CLI, the Python API, a recipe or the
search to ``Backend.compile``: the mode (plain post-training, accuracy-aware, or a model
that already carries trained fake-quantizers), the NNCF preset, the calibration size and
method, the most points of the main metric accuracy-aware quantization may lose, and the
layers kept in float. ``Validation`` carries the labelled inputs of accuracy-aware
quantization together with the task's scoring function, so no backend assumes a classifier.

Example:
    >>> config = QuantizationConfig(mode="aware", max_drop=1.0)
    >>> config.label, config.calibration_samples
    (' aware', 300)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Callable

import numpy as np

from edgeopt.core.errors import ConfigError

# static: post-training (PTQ) · aware: PTQ that keeps layers in float until the drop holds ·
# qat: the model already carries trained fake-quantizers, which the backend converts.
MODES = ("static", "aware", "qat")
PRESETS = ("performance", "mixed")  # NNCF's names; "performance" (symmetric activations) is its CNN default
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")  # ONNX Runtime's calibrators


@dataclass(frozen=True)
class QuantizationConfig:
    """How to quantize to INT8. ``max_drop`` is in points of the task's main metric (aware only)."""

    mode: str = "static"
    preset: str = "performance"
    calibration_samples: int = 300
    calibration_method: str = "minmax"
    max_drop: float | None = None
    keep_float: tuple[str, ...] = ()
    reduce_range: bool = False  # 7-bit weights: avoids u8 x s8 saturation on CPUs without VNNI
    # A detector's box and class predictors stay in float unless asked: their outputs are
    # decoded through exp() and a softmax, where INT8 steps turn into wrong boxes and lost objects.
    quantize_head: bool = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"quantization mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.preset not in PRESETS:
            raise ConfigError(f"the quantization preset must be one of {', '.join(PRESETS)}, not {self.preset!r}")
        if self.calibration_method not in CALIBRATION_METHODS:
            raise ConfigError(f"the calibration method must be one of {', '.join(CALIBRATION_METHODS)}, "
                              f"not {self.calibration_method!r}")
        if self.calibration_samples < 1:
            raise ConfigError("calibration needs at least one sample (a few hundred is typical)")
        if (self.mode == "aware") != (self.max_drop is not None):
            raise ConfigError("accuracy-aware quantization needs a max drop, and only it takes one")
        object.__setattr__(self, "keep_float", tuple(self.keep_float))

    @property
    def label(self) -> str:
        """How the mode reads after 'int8' in a candidate's name."""
        return {"static": "", "aware": " aware", "qat": " QAT"}[self.mode] + (" +head" if self.quantize_head else "")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["keep_float"] = list(self.keep_float)
        if self.max_drop is None:
            del data["max_drop"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "QuantizationConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"quantization has no setting(s) {unknown}; it takes {sorted(known)}")
        return cls(**{**data, "keep_float": tuple(data.get("keep_float", ()))})


def nncf_preset(name: str):
    """NNCF's QuantizationPreset for ``name``: the one preset table (PTQ, accuracy-aware and QAT)."""
    import nncf

    if name not in PRESETS:
        raise ConfigError(f"the quantization preset must be one of {', '.join(PRESETS)}, not {name!r}")
    return {"performance": nncf.QuantizationPreset.PERFORMANCE, "mixed": nncf.QuantizationPreset.MIXED}[name]


Score = Callable[[list[np.ndarray]], float]  # the model's outputs on Validation.inputs -> the main metric


@dataclass(frozen=True)
class Validation:
    """Held-out inputs and how to score outputs on them, for accuracy-aware quantization.

    ``score`` turns the model's outputs on ``inputs`` into the task's main metric, higher
    is better (a task whose metric falls as it improves negates it); ``max_drop`` is in
    points, ``points_per_unit`` of the score (100 for a fraction shown in percent).
    """

    inputs: np.ndarray
    score: Score
    max_drop: float
    metric: str = "top1"
    points_per_unit: float = 100.0

    @property
    def samples(self) -> int:
        return int(len(self.inputs))

    def drop_points(self, reference: float, value: float) -> float:
        return self.points_per_unit * (reference - value)

    def holds(self, reference: float, value: float) -> bool:
        return self.drop_points(reference, value) <= self.max_drop + 1e-9
