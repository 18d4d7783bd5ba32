"""What a federation runs with: the server's settings (Flower's run config) and a site's own.

``FederationSettings`` travels to the ServerApp as Flower's run config (flat scalars: Flower's
``--run-config`` takes TOML values) and is validated on both sides of that trip. The fine-tune
settings in it go to the sites each round, and a site checks them again (``local_fine_tune``):
they come over the network. ``SiteSettings`` is what a site decides alone (its data, its
privacy) and never leaves it.

Example:
    >>> s = FederationSettings(model="/m.safetensors", out="/run", strategy="fedprox", rounds=2)
    >>> FederationSettings.from_run_config(s.to_run_config()) == s
    True
    >>> FederationSettings(model="/m", out="/o", strategy="fedsgd")
    Traceback (most recent call last):
    ...
    edgeopt.core.errors.ConfigError: strategy must be one of fedavg, fedprox, fedadam, not 'fedsgd'
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from typing import Any, Mapping

from edgeopt.core.errors import ConfigError
from edgeopt.passes.base import OPTIMIZERS, SCHEDULES, FineTune

STRATEGIES = ("fedavg", "fedprox", "fedadam")
MAX_LOCAL_EPOCHS = 100  # a site refuses more work per round than this from a server
MAX_BATCH = 4096
ROUND_SCHEDULES = ("cosine", "constant")
MAX_MU = 1e3  # FedProx's μ: the same bound on the server and at the sites


@dataclass(frozen=True)
class FederationSettings:
    """One federated fine-tuning run, as ``edgeopt federate server`` was asked for it.

    ``clients_per_round`` 0 trains every connected site each round (at least ``min_clients``);
    ``round_timeout`` is how long a round waits for replies before it aggregates the ones it has
    (a site that died mid-round is left out of that round). ``proximal_mu`` is FedProx's μ;
    ``server_lr`` FedAdam's η. ``data`` (optional) is the server's own test data: the global
    model is scored on it after every round.

    ``round_schedule`` is the learning rate over the rounds: ``cosine`` (each round's sites start at
    lr·½(1 + cos(π·(r−1)/rounds)), so the last rounds make small steps and the global model settles)
    or ``constant``; ``schedule`` is the one within a round. ``bn_statistics`` has the sites that
    trained measure the aggregate's BatchNorm statistics on their images after each round, pooled by
    the server (``federated.statistics``), instead of keeping the average of their own.
    """

    model: str
    out: str
    data: str = ""
    strategy: str = "fedavg"
    rounds: int = 5
    clients_per_round: int = 0
    min_clients: int = 2
    epochs: int = 1
    lr: float = 1e-3
    optimizer: str = "adamw"
    schedule: str = "constant"
    round_schedule: str = "cosine"
    weight_decay: float = 0.05
    batch_size: int = 64
    distill: bool = False
    proximal_mu: float = 0.01
    server_lr: float = 0.01
    bn_statistics: bool = True
    round_timeout: float = 600.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.model or not self.out:
            raise ConfigError("a federation needs the starting model and an output folder")
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"strategy must be one of {', '.join(STRATEGIES)}, not {self.strategy!r}")
        if self.round_schedule not in ROUND_SCHEDULES:
            raise ConfigError(f"round_schedule must be one of {', '.join(ROUND_SCHEDULES)}, not {self.round_schedule!r}")
        if self.rounds < 1:
            raise ConfigError(f"a federation runs at least 1 round, not {self.rounds}")
        if self.min_clients < 1 or self.clients_per_round < 0:
            raise ConfigError("min_clients must be at least 1 and clients_per_round 0 (all) or more")
        if not (0.0 <= self.proximal_mu <= MAX_MU and 0.0 < self.server_lr <= 10.0):  # NaN fails both
            raise ConfigError(f"proximal_mu must lie in [0, {MAX_MU:g}] and server_lr in (0, 10]")
        if not 0 <= self.seed < 2**31:
            raise ConfigError(f"the seed must lie in [0, 2^31), not {self.seed}")
        if not 1.0 <= self.round_timeout <= 86_400.0:
            raise ConfigError(f"round_timeout must be between 1 s and a day, not {self.round_timeout}")
        self.fine_tune()  # the fine-tune settings validate themselves

    def fine_tune(self) -> FineTune:
        """How a site fine-tunes each round."""
        return local_fine_tune(self.train_config())

    def round_lr(self, round_number: int) -> float:
        """The learning rate the sites train round ``round_number`` (1 to ``rounds``) with."""
        if self.round_schedule == "constant":
            return self.lr
        return self.lr * 0.5 * (1.0 + math.cos(math.pi * (round_number - 1) / self.rounds))

    def train_config(self) -> dict[str, Any]:
        """The settings sent to the sites each round (Flower's train ConfigRecord)."""
        mu = self.proximal_mu if self.strategy == "fedprox" else 0.0
        return {"epochs": self.epochs, "lr": self.lr, "optimizer": self.optimizer, "schedule": self.schedule,
                "weight-decay": self.weight_decay, "batch-size": self.batch_size, "distill": self.distill,
                "proximal-mu": mu, "seed": self.seed}

    def to_run_config(self) -> dict[str, Any]:
        """Flower's run config: every field under its name with dashes (TOML scalars)."""
        return {field.name.replace("_", "-"): getattr(self, field.name) for field in fields(self)}

    @classmethod
    def from_run_config(cls, config: Mapping[str, Any]) -> "FederationSettings":
        """The settings Flower handed the ServerApp (values checked for their field's type)."""
        values = {}
        for field in fields(cls):
            key = field.name.replace("_", "-")
            if key in config:
                values[field.name] = _typed(field, config[key])
        return cls(**values)


def local_fine_tune(config: Mapping[str, Any]) -> FineTune:
    """A site's fine-tune from the settings a server sent: typed, bounded, validated."""
    try:
        epochs, batch = int(config["epochs"]), int(config["batch-size"])  # an infinite float raises OverflowError
        tune = FineTune(epochs=epochs, lr=float(config["lr"]), optimizer=str(config["optimizer"]),
                        schedule=str(config["schedule"]), weight_decay=float(config["weight-decay"]),
                        batch_size=batch, distill=bool(config["distill"]))
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise ConfigError(f"the server's training settings are incomplete or mistyped ({exc!r})") from None
    if not 1 <= epochs <= MAX_LOCAL_EPOCHS or batch > MAX_BATCH or not math.isfinite(tune.lr):
        raise ConfigError(f"the server asks for {epochs} local epochs of batch {batch}; a site trains 1 to "
                          f"{MAX_LOCAL_EPOCHS} epochs of batches up to {MAX_BATCH}")
    if tune.optimizer not in OPTIMIZERS or tune.schedule not in SCHEDULES:
        raise ConfigError("the server asks for an optimizer or schedule edgeopt does not have")
    return tune


def proximal_mu(config: Mapping[str, Any]) -> float:
    """FedProx's μ from a server's settings (0: plain local training)."""
    try:
        mu = float(config.get("proximal-mu", 0.0))
    except (TypeError, ValueError):
        mu = float("nan")
    if not 0.0 <= mu <= MAX_MU:  # NaN fails too
        raise ConfigError(f"the server asks for a proximal term of {config.get('proximal-mu')!r}; it must lie in "
                          f"[0, {MAX_MU:g}]")
    return mu


@dataclass(frozen=True)
class SiteSettings:
    """What a site decides alone: its data and its privacy (``dp_clip`` 0: no differential privacy).

    With ``dp_clip`` set, Flower's ``LocalDpMod`` clips the site's update to that L2 norm and adds
    Gaussian noise for (``dp_epsilon``, ``dp_delta``)-DP per round, sensitivity = the clipping norm.
    """

    data: str
    dp_clip: float = 0.0
    dp_epsilon: float = 1.0
    dp_delta: float = 1e-5
    threads: int = 0

    def __post_init__(self) -> None:
        if not self.data:
            raise ConfigError("a site needs its local data (--data)")
        if self.dp_clip < 0 or self.dp_epsilon <= 0 or not 0 < self.dp_delta < 1:
            raise ConfigError("differential privacy needs a clipping norm >= 0, epsilon > 0 and 0 < delta < 1")

    @property
    def private(self) -> bool:
        return self.dp_clip > 0

    def noise_std(self) -> float:
        """The Gaussian noise's standard deviation LocalDpMod adds (the Gaussian mechanism's)."""
        return self.dp_clip * math.sqrt(2 * math.log(1.25 / self.dp_delta)) / self.dp_epsilon

    def privacy_record(self) -> dict[str, float]:
        """The privacy a reply was sent with (all 0 without differential privacy)."""
        if not self.private:
            return {"dp-epsilon": 0.0, "dp-delta": 0.0, "dp-clip": 0.0, "dp-noise-std": 0.0}
        return {"dp-epsilon": self.dp_epsilon, "dp-delta": self.dp_delta, "dp-clip": self.dp_clip,
                "dp-noise-std": self.noise_std()}

    def to_node_config(self) -> dict[str, Any]:
        return {field.name.replace("_", "-"): getattr(self, field.name) for field in fields(self)}

    @classmethod
    def from_node_config(cls, config: Mapping[str, Any]) -> "SiteSettings":
        values = {field.name: _typed(field, config[field.name.replace("_", "-")])
                  for field in fields(cls) if field.name.replace("_", "-") in config}
        return cls(**values)


def _typed(field: dataclasses.Field, value: Any) -> Any:
    kind = {"str": str, "int": int, "float": float, "bool": bool}[str(field.type)]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{field.name.replace('_', '-')} must be a {kind.__name__}, not {value!r}")
    return value
