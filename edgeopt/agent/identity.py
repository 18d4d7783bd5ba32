"""Who a device agent is: its CPU, cores, memory, OS, runtimes, and its CPU as a ComputeUnit.

The host labels every latency the agent measured with ``label(identity)`` and, for the
estimator, turns the identity into a ``DeviceProfile`` (``profile_of``): the same roofline
figures the profiles table holds, but detected on the device itself.
"""

from __future__ import annotations

import importlib.util
import socket
from dataclasses import asdict
from typing import Any

# The artifact backends an agent may run: non-executable formats only (never TorchScript or pickles).
AGENT_BACKENDS = {"onnxruntime": "onnxruntime", "openvino": "openvino", "executorch": "executorch.runtime",
                  "litert": "ai_edge_litert.interpreter"}


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def runnable_backends() -> list[str]:
    """The agent backends whose runtime is installed here."""
    return [backend for backend, module in AGENT_BACKENDS.items() if _importable(module)]


def collect(name: str | None = None, kind: str | None = None, memory_cap_mb: float | None = None) -> dict[str, Any]:
    """This machine as an agent describes itself (``kind``: the device profile it is, e.g. rpi4b)."""
    from edgeopt.devices.host import detect_cpu
    from edgeopt.measure import environment

    env = environment.collect()
    unit, _ = detect_cpu(env)
    cores = env["usable_cpus"]
    return {
        "name": name or socket.gethostname(),
        "kind": kind or f"{env['cpu']} x{cores}".replace(" ", "-").lower(),
        "cpu": env["cpu"], "machine": env["machine"], "usable_cpus": cores, "isa_flags": env["isa_flags"],
        "memory_mb": env["memory_mb"], "memory_cap_mb": memory_cap_mb, "os": env["os"], "python": env["python"],
        "versions": env["versions"], "backends": runnable_backends(), "compute": asdict(unit),
    }


def label(identity: dict[str, Any]) -> str:
    """One line naming the device: 'lab-pi (Cortex-A72, 4 CPUs, cap 1024 MB, Linux 6.6)'."""
    cap = f", cap {identity['memory_cap_mb']:.0f} MB" if identity.get("memory_cap_mb") else ""
    cpus = identity["usable_cpus"]
    return f"{identity['name']} ({identity['cpu']}, {cpus} CPU{'s' if cpus != 1 else ''}{cap}, {identity['os']})"


def profile_of(identity: dict[str, Any]):
    """The agent's device as a DeviceProfile (for estimates and goals), its memory cap as the budget."""
    from edgeopt.devices import ComputeUnit, DeviceProfile

    memory = float(identity.get("memory_mb") or 1024.0)
    cap = identity.get("memory_cap_mb")
    reserve = memory - cap if cap and cap < memory else min(1024.0, memory / 4)
    return DeviceProfile(id=f"agent:{identity['kind']}", name=label(identity), arch=identity["machine"],
                         memory_mb=memory, os_reserve_mb=reserve, backends=tuple(identity["backends"]),
                         cpu=ComputeUnit(**identity["compute"]), sources=(f"detected by the agent on {identity['name']}",))
