"""One backend's measurement, run in a fresh process: ``python -m edgeopt.measure.worker``.

Reads a job (JSON) on stdin, loads the artifact, times its first call and each batch
size (and, asked to, minutes of back-to-back calls: ``sustained_s``), saves its outputs on
the caller's inputs (``outputs``: an .npz path) and prints one result line prefixed
``RESULT_PREFIX``. A fresh process per backend makes
its peak RSS its own, and loading an ONNX Runtime or OpenVINO artifact here imports
no torch, just as on an edge box.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

RESULT_PREFIX = "EDGEOPT_RESULT "


def peak_rss_mb() -> float:
    """This process's peak resident set size in MB.

    On Linux this is VmHWM from /proc: ``ru_maxrss`` survives exec, so a worker started
    from a large parent would report the parent's peak as its own.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    divisor = 1024**2 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB elsewhere
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / divisor


def measure(job: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    from edgeopt.core.artifact import Artifact
    from edgeopt.backends import get_backend
    from edgeopt.measure.latency import TimingConfig, summarize, time_calls
    from edgeopt.tasks import task_of

    from edgeopt.core import trust

    trust.restore(job.get("trust", {}))
    timing = TimingConfig(**job["timing"])
    artifact = Artifact.open(job["artifact"])
    rss_before_load = peak_rss_mb()
    t0 = time.perf_counter()
    session = get_backend(artifact.backend).load(artifact, threads=job["threads"])
    load_ms = (time.perf_counter() - t0) * 1e3
    spec = artifact.input_spec
    task = task_of(artifact)  # latency includes what every call pays after the model: a detector's decoding and NMS
    run = lambda data: task.postprocess(session.run(data))  # noqa: E731
    real = np.load(job["inputs"], allow_pickle=False) if job.get("inputs") else None
    first = [spec.example(batch=1) if real is None else real[:1]]
    t0 = time.perf_counter()
    run(first)
    first_ms = (time.perf_counter() - t0) * 1e3  # cold: the first call allocates and picks kernels
    if job.get("outputs") and real is not None:  # the raw outputs on the caller's inputs, for its parity check
        np.savez(job["outputs"], *session.run([real]))
    batches = {}
    for batch in sorted(job["batches"]):  # ascending, so the latency batch peak is its own
        if spec.max_batch is not None and batch > spec.max_batch:
            batches[str(batch)] = {"batch": batch, "skipped": f"artifact accepts batch <= {spec.max_batch}"}
            continue
        if not spec.dynamic_batch and batch != spec.shape[0]:
            batches[str(batch)] = {"batch": batch, "skipped": f"artifact has fixed batch {spec.shape[0]}"}
            continue
        data = [spec.example(batch=batch) if real is None else np.resize(real, (batch, *real.shape[1:]))]
        batches[str(batch)] = summarize(time_calls(lambda data=data: run(data), timing), batch)
        batches[str(batch)]["peak_rss_mb"] = peak_rss_mb()  # cumulative: includes smaller batches
    sustained = None
    if job.get("sustained_s"):
        from edgeopt.measure.sustained import run_sustained

        sustained = run_sustained(lambda: run(first), seconds=job["sustained_s"]).to_dict()
    return {
        "load_ms": load_ms,
        "first_ms": first_ms,
        "batches": batches,
        "sustained": sustained,
        "rss_before_load_mb": rss_before_load,
        "torch_imported": "torch" in sys.modules,
    }


def main() -> int:
    from edgeopt.core.errors import EdgeoptError

    job = json.loads(sys.stdin.read())
    try:
        result = measure(job)
    except EdgeoptError as exc:
        result = {"error": str(exc)}
    except Exception as exc:  # a runtime crash inside the worker is reported, not raised
        result = {"error": f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"}
    sys.stdout.write("\n" + RESULT_PREFIX + json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0 if "error" not in result else 1


if __name__ == "__main__":
    sys.exit(main())
