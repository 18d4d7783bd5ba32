"""InputSpec: what a model takes in, and how raw images become that input.

An InputSpec travels into every artifact's manifest, so that evaluation, benchmarking
and serving all feed the model the same way. It imports nothing heavier than numpy:
serving an ONNX Runtime or OpenVINO artifact must not need torch.

Example:
    >>> spec = InputSpec.parse("1x3x224x224")
    >>> spec.example(batch=2).shape
    (2, 3, 224, 224)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from edgeopt.core.errors import ConfigError, InputError

SUPPORTED_DTYPES = ("float32", "float16", "uint8", "int64", "int32")
CHANNEL_ORDERS = ("RGB", "BGR", "GRAY")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocess:
    """How a decoded uint8 image (HWC) becomes the model's float input (CHW).

    ``resize`` is the shorter side after resizing, ``crop`` the centre crop (H, W);
    pixel values are multiplied by ``scale`` and then normalised with ``mean``/``std``.
    ``fit`` says how an image of another shape meets the input: "stretch" (resized to it) or
    "letterbox" (scaled to fit, the rest padded grey, as detectors trained here are fed).
    """

    resize: int | None = None
    crop: tuple[int, int] | None = None
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    scale: float = 1.0 / 255.0
    channels: str = "RGB"
    fit: str = "stretch"

    def __post_init__(self) -> None:
        if self.fit not in ("stretch", "letterbox"):
            raise ConfigError(f"preprocess fit must be stretch or letterbox, not {self.fit!r}")
        if self.channels not in CHANNEL_ORDERS:
            raise ConfigError(f"channel order {self.channels!r} is not one of {CHANNEL_ORDERS}")
        if len(self.mean) != len(self.std):
            raise ConfigError("preprocess mean and std must have the same number of channels")
        if any(s <= 0 for s in self.std):
            raise ConfigError("preprocess std values must be positive")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Preprocess":
        data = dict(data)
        if data.get("crop") is not None:
            data["crop"] = tuple(data["crop"])
        for key in ("mean", "std"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)


@dataclass(frozen=True)
class InputSpec:
    """Name, shape, dtype and preprocessing of a model's single input.

    ``shape`` includes the batch dimension (its value is the example batch size);
    ``dynamic_batch`` says whether other batch sizes are accepted, up to ``max_batch``
    where the runtime needs a bound.
    """

    shape: tuple[int, ...]
    name: str = "input"
    dtype: str = "float32"
    dynamic_batch: bool = True
    max_batch: int | None = None
    preprocess: Preprocess | None = None

    def __post_init__(self) -> None:
        if len(self.shape) < 1 or any((not isinstance(d, int)) or d < 1 for d in self.shape):
            raise ConfigError(f"input shape {self.shape} must be positive integers, batch first")
        if self.dtype not in SUPPORTED_DTYPES:
            raise ConfigError(f"input dtype {self.dtype!r} is not one of {SUPPORTED_DTYPES}")
        if not self.name:
            raise ConfigError("input name must not be empty")

    # -- construction -------------------------------------------------------------
    @classmethod
    def parse(cls, text: str, **kwargs: Any) -> "InputSpec":
        """Parse ``"1x3x224x224"`` (or with commas) into an InputSpec."""
        parts = text.lower().replace(",", "x").split("x")
        try:
            shape = tuple(int(p) for p in parts if p.strip())
        except ValueError:
            raise ConfigError(
                f"input shape {text!r} is not a list of integers; write it like 1x3x224x224"
            ) from None
        if not shape:
            raise ConfigError(f"input shape {text!r} is empty; write it like 1x3x224x224")
        return cls(shape=shape, **kwargs)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "InputSpec":
        data = dict(data)
        data["shape"] = tuple(data["shape"])
        if data.get("preprocess") is not None:
            data["preprocess"] = Preprocess.from_dict(data["preprocess"])
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def with_batch(self, batch: int) -> "InputSpec":
        return dataclasses.replace(self, shape=(batch, *self.shape[1:]))

    # -- use ----------------------------------------------------------------------
    @property
    def sample_shape(self) -> tuple[int, ...]:
        """The shape of one sample, without the batch dimension."""
        return self.shape[1:]

    def example(self, batch: int | None = None, seed: int = 0) -> np.ndarray:
        """A deterministic random input batch in the model's input space."""
        rng = np.random.default_rng(seed)
        shape = (batch or self.shape[0], *self.sample_shape)
        if self.dtype.startswith("float"):
            return rng.standard_normal(shape).astype(self.dtype)
        return rng.integers(0, 255, size=shape).astype(self.dtype)

    def validate(self, inputs: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        """Check one input batch against this spec; return it as a contiguous array.

        Raises InputError naming what is wrong (count, rank, shape, dtype, NaN).
        """
        if isinstance(inputs, np.ndarray):
            inputs = [inputs]
        if len(inputs) != 1:
            raise InputError(f"model takes 1 input ({self.name!r}), got {len(inputs)}")
        array = inputs[0]
        if not isinstance(array, np.ndarray):
            raise InputError(f"input {self.name!r} must be a numpy array, got {type(array).__name__}")
        expected = self.sample_shape
        if array.ndim != len(self.shape) or tuple(array.shape[1:]) != expected:
            want = "x".join(["N" if self.dynamic_batch else str(self.shape[0])] + [str(d) for d in expected])
            got = "x".join(str(d) for d in array.shape)
            raise InputError(f"input {self.name!r} has shape {got}, the model expects {want}")
        if array.shape[0] == 0:
            raise InputError(f"input {self.name!r} has an empty batch (0 samples); send at least one")
        if not self.dynamic_batch and array.shape[0] != self.shape[0]:
            raise InputError(
                f"input {self.name!r} has batch {array.shape[0]}, this artifact was built for "
                f"batch {self.shape[0]} only; re-export it or pass batch {self.shape[0]}"
            )
        if self.max_batch is not None and array.shape[0] > self.max_batch:
            raise InputError(
                f"input {self.name!r} has batch {array.shape[0]}, this artifact accepts at most "
                f"{self.max_batch}; split the batch"
            )
        if array.dtype != np.dtype(self.dtype):
            if array.dtype.kind not in "biuf" or not np.can_cast(array.dtype, self.dtype, casting="same_kind"):
                raise InputError(f"input {self.name!r} has dtype {array.dtype}, the model expects {self.dtype}")
            array = array.astype(self.dtype)
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise InputError(f"input {self.name!r} contains NaN or infinite values")
        return np.ascontiguousarray(array)


@dataclass(frozen=True)
class OutputSpec:
    """Name and shape of one model output; ``shape[0]`` is the batch dimension."""

    name: str
    shape: tuple[int, ...] = field(default_factory=tuple)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "OutputSpec":
        return cls(name=data["name"], shape=tuple(data["shape"]))
