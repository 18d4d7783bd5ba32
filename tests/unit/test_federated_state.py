"""A federation's run folder: resumed where it is now, round checkpoints kept by number, one coordinator
at a time; and a published version never replaces one that is there."""

from __future__ import annotations

import json
import threading

import pytest

from edgeopt.core.errors import ConfigError
from edgeopt.federated.coordinator import prepare, run_folder_lock
from edgeopt.federated.settings import FederationSettings
from edgeopt.federated.state import RunState, save_round


def _write_state(folder, round_done: int, rounds: int, out: str) -> None:
    settings = FederationSettings(model="/old/model.safetensors", out=out, rounds=rounds, strategy="fedprox")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "state.json").write_text(json.dumps({"round": round_done, "rounds": rounds,
                                                   "checkpoint": f"rounds/round-{round_done:03d}.safetensors",
                                                   "settings": settings.to_run_config(), "history": []}))


def test_a_moved_run_folder_resumes_where_it_is_now_with_its_own_settings(tmp_path):
    moved = tmp_path / "new-place"
    _write_state(moved, 2, 3, out="/somewhere/that/was")
    settings, state = prepare(FederationSettings(model="m", out=str(moved), rounds=3), resume=True)
    assert settings.out == str(moved) and settings.strategy == "fedprox" and state.round == 2
    assert settings.rounds == 3
    extended, _ = prepare(FederationSettings(model="m", out=str(moved), rounds=6), resume=True)
    assert extended.rounds == 6
    with pytest.raises(ConfigError, match="at least"):
        prepare(FederationSettings(model="m", out=str(moved), rounds=1), resume=True)
    with pytest.raises(ConfigError, match="--resume"):
        prepare(FederationSettings(model="m", out=str(moved)), resume=False)


def test_one_coordinator_per_run_folder(tmp_path):
    inside = threading.Event()
    with run_folder_lock(tmp_path):
        inside.set()
        with pytest.raises(ConfigError, match="another edgeopt federate server"):
            with run_folder_lock(tmp_path):
                pass
    with run_folder_lock(tmp_path):  # free again once the first is done
        pass


def test_round_checkpoints_are_kept_by_round_number_past_999(tmp_path):
    from edgeopt.models.sources import load_model
    from tests.helpers import TINY_INPUT, TINY_SOURCE

    model = load_model(TINY_SOURCE, input=TINY_INPUT)
    for number in (998, 999, 1000, 1001):
        state = save_round(tmp_path, model, number, 2000, {}, [])
    assert sorted(p.name for p in (tmp_path / "rounds").iterdir()) == ["round-1000.safetensors",
                                                                        "round-1001.safetensors"]
    assert RunState.read(tmp_path).model_path(tmp_path).is_file() and state.round == 1001


def test_a_published_version_takes_the_next_free_number_and_never_replaces_one(tmp_path, artifact_cache):
    from edgeopt.serve.repository import publish_version

    artifact = artifact_cache("onnxruntime").path
    repository = tmp_path / "models"
    (repository / "m").mkdir(parents=True)
    (repository / "m" / "1.edgeopt").mkdir()  # in the way, and not a version
    (repository / "m" / "2.edgeopt").write_bytes(b"someone else's")
    first = publish_version(repository, "m", artifact)
    assert first.name == "3.edgeopt" and (repository / "m" / "2.edgeopt").read_bytes() == b"someone else's"
    assert publish_version(repository, "m", artifact).name == "4.edgeopt"
    assert not list((repository / "m").glob("*.partial"))
    with pytest.raises(ConfigError, match="model name"):
        publish_version(repository, "../escape", artifact)
