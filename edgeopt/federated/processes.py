"""The federation's processes: a SuperLink, one SuperNode per site, and the run submitted to it.

They are Flower's own programs (``flower-superlink``, ``flower-supernode``, ``flwr run``),
started as child processes in their own process groups so that stopping one stops the
ClientApp and ServerApp processes it spawned. Every address is given explicitly (Flower's
defaults listen on all interfaces). edgeopt's Flower app is written, not downloaded (``flwr
new`` fetches templates): its ``pyproject.toml`` names edgeopt's installed ServerApp and
ClientApp and holds no code of its own. Flower's update check is off in every child.

Example:
    >>> Address.parse("127.0.0.1:9092").port
    9092
    >>> Address.parse("nowhere")
    Traceback (most recent call last):
    ...
    edgeopt.core.errors.ConfigError: 'nowhere' is not HOST:PORT (e.g. 127.0.0.1:9092)
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

from edgeopt.core.errors import ConfigError

APP_NAME = "edgeopt-federation"
CONNECTION = "edgeopt"  # the SuperLink connection's name in $FLWR_HOME/config.toml
START_TIMEOUT = 60.0


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> "Address":
        match = re.fullmatch(r"\[?([^\s\[\]]+?)\]?:(\d{1,5})", text.strip())
        if not match or not 0 < int(match.group(2)) < 65536:
            raise ConfigError(f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:9092)")
        return cls(match.group(1), int(match.group(2)))

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def flower_env(home: Path) -> dict[str, str]:
    """The environment of a Flower child: this interpreter's scripts first (Flower spawns
    ``flower-superexec`` and ``flwr-clientapp`` by name), its own FLWR_HOME, no update check."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(FLWR_HOME=str(home), FLWR_DISABLE_UPDATE_CHECK="1", PYTHONUNBUFFERED="1")
    return env


def _script(name: str) -> str:
    return str(Path(sys.executable).parent / name)


class Child:
    """A Flower program in its own process group under ``edgeopt.federated.guard`` (which takes the group,
    the program's own children included, down when edgeopt dies, even by SIGKILL), its output in a log file."""

    def __init__(self, name: str, command: list[str], home: Path, log: Path) -> None:
        log.parent.mkdir(parents=True, exist_ok=True)
        self.name, self.log = name, log
        self._log_file = open(log, "ab")
        guarded = [sys.executable, "-m", "edgeopt.federated.guard", str(os.getpid()), *command]
        self.process = subprocess.Popen(guarded, stdout=self._log_file, stderr=subprocess.STDOUT, env=flower_env(home),
                                        start_new_session=True, stdin=subprocess.DEVNULL)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM to the group (Flower's programs stop their children), SIGKILL after ``timeout``."""
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.process.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        self._log_file.close()

    def kill(self) -> None:
        """SIGKILL the whole group at once: a crash, as tests make one."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(10)
        self._log_file.close()

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def wait_for_port(address: Address, child: Child, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not child.alive():
            raise ConfigError(f"{child.name} exited at start (code {child.process.returncode}):\n{child.tail()}")
        try:
            with socket.create_connection((address.host, address.port), timeout=1.0):
                return
        except OSError:
            time.sleep(0.2)
    raise ConfigError(f"{child.name} did not listen on {address} within {timeout:.0f} s:\n{child.tail()}")


# -- the SuperLink, its SuperNodes -----------------------------------------------------------
def start_superlink(address: Address, workdir: Path) -> Child:
    """Flower's SuperLink on ``address`` (keep it on 127.0.0.1: one HTTP port serves its fleet API, its
    unauthenticated control API and the runtime API of its ServerApp process; ``start_gateway`` opens
    the fleet API alone to the sites). It never installs an app's dependencies.

    Its state (the SuperNodes it knows) lives in a database in ``workdir``: a SuperLink restarted after
    a crash knows the sites again, and they carry on without being restarted themselves.
    """
    command = [_script("flower-superlink"), "--insecure", "--host", address.host, "--port", str(address.port),
               "--database", str(workdir / "superlink.db"), "--disable-runtime-dependency-installation"]
    return _started(Child("the SuperLink", command, flower_home(workdir), workdir / "logs" / "superlink.log"), address)


def start_gateway(listen: Address, superlink: Address, workdir: Path) -> Child:
    """The sites' door (``edgeopt.federated.gateway``): the SuperLink's fleet API on ``listen``, nothing else."""
    command = [sys.executable, "-m", "edgeopt.federated.gateway", str(listen), str(superlink)]
    return _started(Child("the fleet gateway", command, flower_home(workdir), workdir / "logs" / "gateway.log"), listen)


def _started(child: Child, address: Address) -> Child:
    try:
        wait_for_port(address, child)
    except BaseException:
        child.stop()
        raise
    return child


def start_supernode(superlink: Address, node_config: Mapping[str, Any], workdir: Path, name: str,
                    port: int | None = None) -> Child:
    """A SuperNode for one site, connecting to ``superlink`` (retrying until it is there)."""
    runtime = Address("127.0.0.1", port or free_port())
    command = [_script("flower-supernode"), "--insecure", "--superlink", str(superlink),
               "--host", runtime.host, "--port", str(runtime.port), "--node-config", node_config_text(node_config)]
    return _started(Child(f"the SuperNode of {name}", command, flower_home(workdir), workdir / "logs" / f"{name}.log"),
                    runtime)


def node_config_text(values: Mapping[str, Any]) -> str:
    """Flower's ``--node-config`` (space-separated TOML ``key=value`` pairs)."""
    import tomli_w

    parts = []
    for key, value in values.items():
        line = tomli_w.dumps({key: value}).strip()
        if " " in line.split("=", 1)[1].strip() and not isinstance(value, str):
            raise ConfigError(f"node config {key} must be a scalar")
        parts.append(line.replace(" = ", "=", 1))
    return " ".join(parts)


# -- edgeopt's Flower app and the run ---------------------------------------------------------
def flower_home(workdir: Path) -> Path:
    home = workdir / "flwr-home"
    home.mkdir(parents=True, exist_ok=True)
    return home


def write_app(workdir: Path, settings_class: type) -> Path:
    """edgeopt's Flower app: a pyproject.toml naming edgeopt's ServerApp and ClientApp, with every
    field of ``settings_class`` as a run-config key (Flower accepts overrides of declared keys only)."""
    import tomli_w

    import edgeopt

    folder = workdir / APP_NAME
    folder.mkdir(parents=True, exist_ok=True)
    defaults = {field.name.replace("_", "-"): field.default if isinstance(field.default, (str, int, float, bool)) else ""
                for field in fields(settings_class)}
    project = {
        "build-system": {"requires": ["setuptools>=77"], "build-backend": "setuptools.build_meta"},
        "project": {"name": APP_NAME, "version": edgeopt.__version__, "license": "Apache-2.0",
                    "description": "edgeopt's federated fine-tuning (the ServerApp and ClientApp are edgeopt's own)",
                    "dependencies": []},
        "tool": {"flwr": {"app": {"publisher": "edgeopt",
                                  "components": {"serverapp": "edgeopt.federated.server_app:app",
                                                 "clientapp": "edgeopt.federated.client_app:app"},
                                  "config": defaults}}},
    }
    (folder / "pyproject.toml").write_text(tomli_w.dumps(project))
    return folder


def write_connection(workdir: Path, control: Address) -> None:
    import tomli_w

    config = {"superlink": {"default": CONNECTION, CONNECTION: {"address": str(control), "insecure": True}}}
    (flower_home(workdir) / "config.toml").write_text(tomli_w.dumps(config))


def submit(app: Path, run_config: Mapping[str, Any], workdir: Path, control: Address) -> Child:
    """``flwr run`` of edgeopt's app on the SuperLink at ``control``, its logs streamed to a file."""
    import tomli_w

    write_connection(workdir, control)
    overrides = workdir / "run-config.toml"
    overrides.write_text(tomli_w.dumps(dict(run_config)))
    command = [_script("flwr"), "run", str(app), CONNECTION, "--stream", "--run-config", str(overrides)]
    return Child("flwr run", command, flower_home(workdir), workdir / "logs" / "run.log")
