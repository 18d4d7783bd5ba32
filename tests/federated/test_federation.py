"""Federations of real Flower processes on loopback: a SuperLink and one SuperNode per site, each a process
that reaches the others over 127.0.0.1 only, fine-tuning a digits model.

What they hold to: the global model after each round is the example-weighted average of what the sites sent,
its BatchNorm statistics those the sites measured on it, pooled (replayed here with the same code); a site killed with SIGKILL mid-round does not stop the round, and a
site that comes back is trained again; a coordinator killed between rounds continues with --resume to the same
number of rounds; and every record a site sends is the model's arrays and scalar metrics, nothing else.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flwr", reason="the federated extra (flwr) is not installed")

from edgeopt.federated.coordinator import coordinate  # noqa: E402
from edgeopt.federated.processes import Address, free_port, start_supernode  # noqa: E402
from edgeopt.federated.settings import FederationSettings, SiteSettings  # noqa: E402
from edgeopt.federated.state import RunState  # noqa: E402
from edgeopt.federated.weights import REPLY_METRICS  # noqa: E402
from tests.helpers import TINY_SOURCE  # noqa: E402

SHARES = (0.5, 0.25, 0.25)  # unequal sites: a plain mean of their arrays is not the weighted one


@pytest.fixture(scope="module")
def sites(tmp_path_factory) -> dict:
    """A digits model trained one epoch, and the digits training split cut into three sites' .npz files."""
    from edgeopt.api import train
    from edgeopt.tasks.classification.data import load_dataset

    root = tmp_path_factory.mktemp("federation")
    train("digits", TINY_SOURCE, root / "start.safetensors", epochs=1, lr=0.01, augment=False, progress=False,
          threads=1)
    images = load_dataset("digits").train
    order = np.random.default_rng(0).permutation(len(images))
    bounds = np.cumsum([0, *[int(share * len(order)) for share in SHARES]])
    files = []
    for index in range(len(SHARES)):
        part = images.subset(order[bounds[index]:bounds[index + 1]])
        files.append(root / f"site{index}.npz")
        np.savez(files[-1], x_train=part.images, y_train=part.labels, classes=np.array(images.classes))
    return {"root": root, "model": root / "start.safetensors", "files": files}


def _settings(sites: dict, out: Path, **changes) -> FederationSettings:
    values = dict(model=str(sites["model"]), out=str(out), rounds=2, min_clients=2, epochs=1, lr=0.005,
                  batch_size=32, round_timeout=120.0)
    return FederationSettings(**{**values, **changes})


def _site(path: Path, private: bool = False) -> SiteSettings:
    """One thread: the same arithmetic as the replay here. ``private``: local DP, noise small enough to train."""
    privacy = dict(dp_clip=0.001, dp_epsilon=0.99, dp_delta=1e-5) if private else {}
    return SiteSettings(data=str(path), threads=1, **privacy)


class Sites:
    """SuperNodes started for some of the site files, stopped (or already killed) on exit."""

    def __init__(self, sites: dict, address: Address, workdir: Path, indices=(0, 1), private=()) -> None:
        self.sites, self.address, self.workdir, self.private = sites, address, workdir, set(private)
        self.nodes = {index: self.start(index) for index in indices}

    def start(self, index: int, name: str | None = None):
        site = _site(self.sites["files"][index], private=index in self.private)
        return start_supernode(self.address, site.to_node_config(), self.workdir, name or f"site-{index}")

    def __enter__(self) -> "Sites":
        return self

    def __exit__(self, *exc) -> None:
        for node in self.nodes.values():
            if node.alive():
                node.stop()


def _replies(out: Path, kind: str = "train") -> list[dict]:
    lines = [json.loads(line) for line in (out / "replies.jsonl").read_text().splitlines()]
    return [line for line in lines if line["kind"] == kind]


def test_two_rounds_end_with_the_weighted_average_then_the_artifact_swaps_into_a_server_under_load(sites, tmp_path):
    """The whole loop: 2 rounds, the global model built into an ONNX Runtime artifact and published into the
    repository a running server watches; requests sent throughout the swap all answer 200, from both versions.
    Then each round is replayed here (both sites' fine-tune from the global model at the round's learning
    rate, FedAvg, then both sites' BatchNorm statistics of the average, pooled) and every record a site sent
    is checked: the model's arrays and scalar metrics, nothing else."""
    import dataclasses

    import torch

    from edgeopt.api import export, federate
    from edgeopt.federated.client_app import fine_tune_at_site, statistics_at_site
    from edgeopt.federated.statistics import pool, statistic_shapes
    from edgeopt.federated.weights import load_arrays, shapes_of
    from edgeopt.models.sources import load_model
    from edgeopt.pipeline.recipe import ExportConfig, Recipe
    from tests.helpers import RunningServer

    repository = tmp_path / "models"
    export(str(sites["model"]), "onnxruntime", repository / "digits" / "1")
    address = Address("127.0.0.1", free_port())
    settings = _settings(sites, tmp_path / "run", data="digits")
    recipe = Recipe(str(sites["model"]), "digits", export=ExportConfig("onnxruntime"))
    with RunningServer("--model-repository", str(repository), "--poll-seconds", "0.2") as server, \
            Sites(sites, address, tmp_path / "sites"):
        load = Load(f"{server.url}/v2/models/digits")
        result = federate(settings, address=str(address), recipe=recipe, repository=repository, name="digits",
                          progress=False, on_round=lambda entry: load.start() if entry["round"] == 2 else None)
        load.until_serving("2")
    assert result.published == repository / "digits" / "2.edgeopt" and result.artifact.backend == "onnxruntime"
    assert load.statuses and set(load.statuses) == {200} and load.versions == {"1", "2"}, (set(load.statuses),
                                                                                            load.versions)
    state = result.state
    assert state.finished and [entry["round"] for entry in state.history] == [0, 1, 2]
    assert all(entry["replies"] == 2 and entry["statistics_sites"] == 2 and entry["bytes_up"] > 0
               for entry in state.history[1:])
    assert [entry["lr"] for entry in state.history[1:]] == [settings.round_lr(1), settings.round_lr(2)]
    assert state.history[2]["lr"] < state.history[1]["lr"]  # the cosine over rounds

    torch.set_num_threads(1)
    start = load_model(str(sites["model"])).module
    shapes, statistics = shapes_of(start), statistic_shapes(start)
    assert statistics and set(statistics) < set(shapes)
    previous = sites["model"]
    for round_done in (1, 2):
        sent, counts = [], []
        tune = dataclasses.replace(settings.fine_tune(), lr=settings.round_lr(round_done))
        for index in (0, 1):
            model = load_model(str(previous))
            metrics = fine_tune_at_site(model, _site(sites["files"][index]), tune, 0.0, seed=settings.seed + round_done)
            sent.append({k: v.detach().numpy() for k, v in model.module.state_dict().items() if k in shapes})
            counts.append(metrics["num-examples"])
        assert counts[0] > 1.5 * counts[1]
        average = {k: sum(n * arrays[k] for n, arrays in zip(counts, sent)) / sum(counts) for k in shapes}
        averaged = load_model(str(previous))
        load_arrays(averaged.module, average, "the replay")
        measured = [statistics_at_site(averaged, _site(sites["files"][index]), settings.batch_size) for index in (0, 1)]
        expected = {**average, **pool(measured)}
        current = tmp_path / "run" / "rounds" / f"round-{round_done:03d}.safetensors"
        federated = load_model(str(current)).module.state_dict()
        for key, value in expected.items():
            np.testing.assert_allclose(federated[key].numpy(), value, rtol=1e-4, atol=1e-5, err_msg=key)
        plain_mean = (sent[0]["stem.0.weight"] + sent[1]["stem.0.weight"]) / 2
        assert not np.allclose(federated["stem.0.weight"].numpy(), plain_mean, atol=1e-6)
        variance = next(name for name in statistics if name.endswith("running_var"))
        assert not np.allclose(federated[variance].numpy(), average[variance], rtol=1e-3)  # measured, not averaged
        previous = current

    measurements = _replies(tmp_path / "run", "statistics")
    assert len(measurements) == 4 and all("problem" not in m and m["num-examples"] > 1 for m in measurements)
    replies = _replies(tmp_path / "run")
    assert len(replies) == 4
    for reply in replies:  # what a site sent, as the server received it
        assert "problem" not in reply and reply["records"] == ["arrays", "metrics"]
        assert {name: tuple(shape) for name, (shape, _) in reply["arrays"].items()} == shapes
        assert {dtype for _, dtype in reply["arrays"].values()} == {"float32"}
        assert sorted(reply["metrics"]) == sorted(REPLY_METRICS)  # names and numbers, nothing else
        assert all(isinstance(v, (int, float)) for v in reply["metrics"].values())
        assert reply["metrics"]["dp-clip"] == 0.0


class Load:
    """Two clients sending digits images to a served model in a thread, from ``start`` until the server
    has answered from ``version`` for half a second; every status and every version that answered, kept."""

    def __init__(self, model_url: str) -> None:
        self.url, self.statuses, self.versions = model_url, [], set()
        self.done, self.thread = threading.Event(), None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        import asyncio

        import httpx

        async def user(client: httpx.AsyncClient, body: bytes) -> None:
            while not self.done.is_set():
                response = await client.post(f"{self.url}/infer", content=body)
                self.statuses.append(response.status_code)
                if response.status_code == 200:
                    self.versions.add(response.json()["model_version"])

        async def main() -> None:
            async with httpx.AsyncClient(timeout=30) as client:
                spec = (await client.get(self.url)).json()["inputs"][0]
                shape = [1, *spec["shape"][1:]]
                data = np.random.default_rng(0).random(shape, dtype=np.float32)
                body = json.dumps({"inputs": [{"name": spec["name"], "shape": shape, "datatype": "FP32",
                                               "data": data.ravel().tolist()}]}).encode()
                await asyncio.gather(*(user(client, body) for _ in range(2)))

        asyncio.run(main())

    def until_serving(self, version: str, timeout: float = 60) -> None:
        import httpx

        assert self.thread is not None, "the load never started"
        deadline = time.monotonic() + timeout
        while httpx.get(self.url).json()["versions"] != [version] and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        self.done.set()
        self.thread.join(30)


def test_a_site_killed_mid_round_leaves_the_round_to_the_others_and_is_trained_again_when_it_rejoins(sites, tmp_path):
    """Three sites, one of them with local differential privacy (its metrics carry what the others' do, so
    Flower aggregates them together); the third killed with SIGKILL as it trains round 1, then back. The
    address the sites use passes the fleet API only: the SuperLink's control API is not there."""
    import httpx

    address = Address("127.0.0.1", free_port())
    # round 1 has all three. The timeout bounds round 1's wait for the killed site; it also has to hold a fresh
    # site's first answer (its ClientApp starts torch) while CI runs another heavy test beside this one: 25 s did not
    settings = _settings(sites, tmp_path / "run", rounds=3, round_timeout=45.0, min_clients=3)
    with Sites(sites, address, tmp_path / "sites", indices=(0, 1, 2), private=(0,)) as nodes:
        victim = nodes.nodes[2]
        killed = threading.Event()

        def kill_when_it_trains() -> None:
            while "Start `flwr-clientapp` process" not in victim.log.read_text(errors="replace"):
                time.sleep(0.1)
            victim.kill()
            killed.set()

        threading.Thread(target=kill_when_it_trains, daemon=True).start()
        rejoined = {}

        def on_round(entry: dict) -> None:
            if entry["round"] == 1:  # the site comes back (a new SuperNode, as after a reboot)
                rejoined["node"] = nodes.nodes[3] = nodes.start(2, "site-2-again")
                for path in ("/v1/control/list-runs", "/v1/control/start-run", "/v1/runtime/pull-task-input", "/"):
                    rejoined[path] = httpx.post(f"http://{address}{path}", content=b"").status_code

        state = coordinate(settings, address, on_round=on_round)
    assert killed.is_set() and "node" in rejoined
    assert {status for path, status in rejoined.items() if path.startswith("/")} == {404}, rejoined
    assert state.finished and state.history[0]["sampled"] == 3 and state.history[0]["replies"] == 2
    replies = _replies(tmp_path / "run")
    first_round_nodes = {reply["node"] for reply in replies if reply["round"] == 1}
    later = [reply for reply in replies if reply["round"] > 1 and "problem" not in reply]
    assert any(reply["node"] not in first_round_nodes for reply in later), \
        f"the rejoined site was never trained: {[(r['round'], r['node'], r.get('problem')) for r in replies]}"
    private = [reply for reply in replies if "problem" not in reply and reply["metrics"]["dp-clip"] == 0.001]
    assert private and all(reply["metrics"]["dp-epsilon"] == 0.99 for reply in private)
    assert {reply["metrics"]["dp-clip"] for reply in later} == {0.0, 0.001}  # both kinds in one round
    private_nodes = {reply["node"] for reply in private}
    measured, pools = _replies(tmp_path / "run", "statistics"), _replies(tmp_path / "run", "pool")
    assert measured and not any(m["node"] in private_nodes for m in measured)  # a private site is never asked
    # a measurement is lost only as a round's answer is (a site too slow for --round-timeout on this busy machine)
    assert any("problem" not in m for m in measured)
    assert all("problem" not in m or "did not measure" in m["problem"] for m in measured), measured
    # round 1: the private site held two thirds of the examples, so one site's statistics did not replace the rest
    assert pools and pools[0]["round"] == 1 and "under 50%" in pools[0]["problem"]
    for entry in state.history:
        assert (entry["statistics_sites"] == 0) == any(p["round"] == entry["round"] for p in pools), entry


def test_a_coordinator_killed_between_rounds_resumes_to_the_same_number_of_rounds(sites, tmp_path):
    address = Address("127.0.0.1", free_port())
    out = tmp_path / "run"
    command = [sys.executable, "-m", "edgeopt", "federate", "server", str(sites["model"]), "--out", str(out),
               "--address", str(address), "--rounds", "2", "--lr", "0.005", "--batch-size", "32",
               "--no-bn-stats"]  # the other tests exchange statistics; this one is about the rounds
    with Sites(sites, address, tmp_path / "sites"):
        server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 300
        while not ((state := RunState.read(out)) and state.round >= 1) and time.monotonic() < deadline:
            assert server.poll() is None, server.stdout.read().decode()
            time.sleep(0.2)
        os.killpg(server.pid, signal.SIGKILL)  # a crash: no chance to clean up
        server.wait(10)
        killed_at = RunState.read(out).round
        assert killed_at == 1

        again = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert again.returncode == 1 and "--resume" in again.stderr  # a folder holding a federation is not overwritten
        without_rounds = [arg for arg in command if arg not in ("--rounds", "2")]  # the saved number holds
        resumed = subprocess.run([*without_rounds, "--resume"], capture_output=True, text=True, timeout=400)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    state = RunState.read(out)
    assert state.finished and state.round == 2  # not the command line's default of 5
    assert [entry["round"] for entry in state.history] == [1, 2]
    started = FederationSettings(str(sites["model"]), str(out), rounds=2, lr=0.005)
    assert [entry["lr"] for entry in state.history] == [started.round_lr(1), started.round_lr(2)]  # resumed: round 2
    assert not any("statistics_sites" in entry for entry in state.history)  # --no-bn-stats held, resumed too
