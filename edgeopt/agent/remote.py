"""A measurement on the device, checked here: the agent times the artifact and runs the host's probe
inputs; this machine runs the same inputs and compares (``fidelity.compare``: the same tolerances as
an export's parity check, so an FP32 artifact must match and an INT8 one must not be broken).

Example:
    >>> result = measure_on_device(AgentClient(url, token), Path("out/best"), MeasureConfig())  # doctest: +SKIP
    >>> result["parity"]["passed"], result["timing"]["batches"]["1"]["p50"]                     # doctest: +SKIP
    (True, 3.2)
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.agent.client import AgentClient
from edgeopt.core.errors import BackendError

PROBE_SAMPLES = 8


def measure_on_device(client: AgentClient, path: Path, config, inputs: np.ndarray | None = None,
                      threads_here: int | None = None, here: list | None = None) -> dict[str, Any]:
    """The agent's measurement of the artifact at ``path`` plus ``parity``: its outputs against this
    machine's on the same inputs (``passed`` None, with the reason, where the artifact cannot run here);
    ``here``: this machine's outputs on ``inputs`` when already computed (nothing then runs here)."""
    from edgeopt.core.artifact import Artifact
    from edgeopt.backends import open_session
    from edgeopt.measure.fidelity import compare
    from edgeopt.tasks import task_of

    artifact = Artifact.open(path)
    if inputs is None:
        inputs = artifact.input_spec.example(batch=PROBE_SAMPLES)
    result = client.measure(artifact.path, dataclasses.replace(config, keep_outputs=True), inputs)
    try:
        here = here if here is not None else open_session(artifact.path, threads=threads_here).run([inputs])
    except BackendError as exc:
        result["parity"] = {"passed": None, "reason": f"not checked: the artifact does not run here ({exc})"}
        return result
    result["parity"] = compare(here, result.pop("outputs") or [], artifact.precision, task_of(artifact))
    return result
