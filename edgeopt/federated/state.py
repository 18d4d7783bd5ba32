"""The federation's progress on disk: the global model after every round, and the round.

``OUT/rounds/round-NNN.safetensors`` is a plain edgeopt checkpoint of the global model after
round NNN; ``OUT/state.json`` names the last finished round, the settings that ran it and the
history of every round (metrics, replies, bytes, seconds). Both are written to a temporary
name and renamed, the checkpoint first, so a kill at any moment leaves the previous round
whole: ``--resume`` starts from the round ``state.json`` names, with the rounds left.

Example:
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> RunState.read(folder) is None
    True
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgeopt.core.errors import ConfigError

STATE = "state.json"
KEEP = 2  # round checkpoints kept: the last, and the one before it in case the last is being written


@dataclass
class RunState:
    """Where a federation stands: ``round`` rounds finished of ``rounds``, the global model after them."""

    round: int
    rounds: int
    checkpoint: str  # relative to the run folder
    settings: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.round >= self.rounds

    @classmethod
    def read(cls, folder: Path) -> "RunState | None":
        path = Path(folder) / STATE
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
            return cls(int(data["round"]), int(data["rounds"]), str(data["checkpoint"]), dict(data["settings"]),
                       list(data.get("history", [])))
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{path} is not a federation state edgeopt wrote ({exc}); start afresh without --resume "
                              "or point --out at another folder") from None

    def model_path(self, folder: Path) -> Path:
        return Path(folder) / self.checkpoint


def save_round(folder: Path, model: Any, round_done: int, rounds: int, settings: dict[str, Any],
               history: list[dict[str, Any]]) -> RunState:
    """Checkpoint ``model`` (a LoadedModel holding the global weights) as round ``round_done``."""
    from edgeopt.models.sources import save_checkpoint

    folder = Path(folder)
    (folder / "rounds").mkdir(parents=True, exist_ok=True)
    name = f"rounds/round-{round_done:03d}.safetensors"
    save_checkpoint(model, folder / name)
    state = RunState(round_done, rounds, name, settings, history)
    tmp = folder / (STATE + ".partial")
    tmp.write_text(json.dumps(asdict(state), indent=2))
    os.replace(tmp, folder / STATE)
    kept = sorted((folder / "rounds").glob("round-*.safetensors"), key=_round_number)
    for old in kept[:-KEEP]:
        if old.name != Path(name).name:
            old.unlink(missing_ok=True)
    return state


def _round_number(path: Path) -> int:
    digits = path.stem.rpartition("-")[2]
    return int(digits) if digits.isdigit() else -1
