"""Load-test `edgeopt serve` on loopback beside the raw batched session throughput of the same artifact.

For each artifact: the raw ONNX Runtime session at the server's batch size (no HTTP, every
thread; measured before and after the servers, the higher one kept), then `edgeopt serve` in its
own process once per ``--instances`` value (1 and 2: batches that run at once), driven by aiohttp
client processes at concurrency 1, 8 and 32 (closed loop, binary tensors, bounded time), then at
4x overload (open loop: requests arrive at four times the throughput just measured, in-flight
capped). Reported: throughput, p50/p99, status counts, and the server's RSS (its own /metrics).
Client and server share this machine's cores — the raw session had them to itself — so the ratio
is a lower bound of what a separate client machine would see.

    python benchmarks/serve.py                 # NEU-DET SSDlite INT8 and a ResNet-18 (random init)
    python benchmarks/serve.py --seconds 5     # shorter
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from loopback import Server  # benchmarks/loopback.py
from results_md import write_section  # benchmarks/results_md.py (the script's folder is on sys.path)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
START, END = "<!-- serve:start -->", "<!-- serve:end -->"
HEADER = "Inference-Header-Content-Length"


def raw_throughput(artifact: Path, batch: int, seconds: float, threads: int) -> float:
    """Samples per second of the session alone at ``batch``, after a warm-up."""
    from edgeopt.backends import open_session

    session = open_session(artifact, threads=threads)
    inputs = session.input_spec.example(batch=batch)
    for _ in range(3):
        session.run([inputs])
    runs, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        session.run([inputs])
        runs += 1
    return runs * batch / (time.perf_counter() - started)


def binary_request(artifact: Path, samples: int = 1) -> tuple[bytes, dict[str, str]]:
    from edgeopt.core.artifact import Artifact

    spec = Artifact.open(artifact).input_spec
    sample = spec.example(batch=samples)
    header = json.dumps({"inputs": [{"name": spec.name, "shape": list(sample.shape), "datatype": "FP32",
                                     "parameters": {"binary_data_size": sample.nbytes}}],
                         "parameters": {"binary_data_output": True}}).encode()
    return header + sample.tobytes(), {HEADER: str(len(header)), "content-type": "application/octet-stream"}


async def closed_loop(url: str, body: bytes, headers: dict, concurrency: int, seconds: float, raw: bool = False):
    import aiohttp

    statuses: dict = {}
    latencies: list[float] = []
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as client:
        deadline = time.perf_counter() + seconds

        async def user() -> None:
            while time.perf_counter() < deadline:
                sent = time.perf_counter()
                status = await _post(client, url, body, headers)
                latencies.append(time.perf_counter() - sent)
                statuses[status] = statuses.get(status, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(user() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return (statuses, latencies, elapsed) if raw else _figures(statuses, latencies, elapsed)


WRK_SCRIPT = """
local file = assert(io.open(os.getenv("EDGEOPT_BODY"), "rb"))
wrk.method = "POST"
wrk.body = file:read("*a")
file:close()
wrk.headers["Content-Type"] = "application/octet-stream"
wrk.headers["Inference-Header-Content-Length"] = os.getenv("EDGEOPT_HEADER_LENGTH")

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('{"requests": %d, "duration_us": %d, "non_2xx": %d, "connect": %d, "read": %d, '
    .. '"write": %d, "timeout": %d, "p50_us": %d, "p99_us": %d}\\n', summary.requests, summary.duration, e.status,
    e.connect, e.read, e.write, e.timeout, latency:percentile(50), latency:percentile(99)))
end
"""


def wrk_closed_loop(url: str, body: bytes, headers: dict, concurrency: int, seconds: float) -> dict:
    """``concurrency`` connections each sending the next request when the last is answered, driven by wrk (one
    thread, C and epoll: ~20 us of CPU a request against aiohttp's ~900, so the client takes little of the 2 CPUs
    the server runs on). Statuses: 200, and non-2xx and socket errors as wrk counts them."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        script, payload = Path(scratch) / "post.lua", Path(scratch) / "body.bin"
        script.write_text(WRK_SCRIPT)
        payload.write_bytes(body)
        env = {**os.environ, "EDGEOPT_BODY": str(payload), "EDGEOPT_HEADER_LENGTH": headers[HEADER]}
        done = subprocess.run(["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--timeout", "30s",
                               "-s", str(script), url], capture_output=True, text=True, env=env, check=True)
    counts = json.loads(done.stdout.strip().splitlines()[-1])
    errors = {k: counts[k] for k in ("non_2xx", "connect", "read", "write", "timeout") if counts[k]}
    ok = counts["requests"] - counts["non_2xx"]
    elapsed = counts["duration_us"] / 1e6
    return {"requests": counts["requests"], "statuses": {"200": ok, **errors}, "throughput": round(ok / elapsed, 1),
            "p50_ms": round(counts["p50_us"] / 1000, 2), "p99_ms": round(counts["p99_us"] / 1000, 2)}


async def _post(client, url: str, body: bytes, headers: dict) -> int | str:
    """The status of one POST, its body read; a transport error is counted by its kind, never hidden."""
    import aiohttp

    try:
        async with client.post(url, data=body, headers=headers) as response:
            await response.read()
            return response.status
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        return type(exc).__name__


def open_loop_processes(url: str, body: bytes, headers: dict, rate: float, seconds: float, processes: int = 4,
                        max_in_flight: int = 512) -> dict:
    """``open_loop`` from several client processes, each offering ``rate / processes``."""
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(processes) as pool:
        parts = list(pool.map(_open_loop_part, [(url, body, headers, rate / processes, seconds,
                                                 max_in_flight // processes)] * processes))
    figures = _merged_figures(parts)
    figures["offered_per_s"] = round(rate, 1)
    figures["sent_per_s"] = round(sum(part[3] for part in parts), 1)
    return figures


def _open_loop_part(job):
    return asyncio.run(open_loop(*job, raw=True))


async def open_loop(url: str, body: bytes, headers: dict, rate: float, seconds: float, max_in_flight: int = 512,
                    raw: bool = False):
    """Requests launched at ``rate`` per second regardless of answers (at most ``max_in_flight`` open)."""
    import aiohttp

    statuses: dict = {}
    latencies: list[float] = []
    gate = asyncio.Semaphore(max_in_flight)
    connector = aiohttp.TCPConnector(limit=max_in_flight)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as client:
        async def one() -> None:
            async with gate:
                sent = time.perf_counter()
                status = await _post(client, url, body, headers)
                latencies.append(time.perf_counter() - sent)
                statuses[status] = statuses.get(status, 0) + 1

        tasks, started = [], time.perf_counter()
        for index in range(int(rate * seconds)):
            delay = started + index / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one()))
        launch_seconds = time.perf_counter() - started
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
    if raw:
        return statuses, latencies, elapsed, len(tasks) / launch_seconds
    figures = _figures(statuses, latencies, elapsed)
    figures["offered_per_s"] = round(rate, 1)
    figures["sent_per_s"] = round(len(tasks) / launch_seconds, 1)  # what the client managed to offer
    return figures


def closed_loop_processes(url: str, body: bytes, headers: dict, concurrency: int, seconds: float,
                          per_process: int = 8) -> dict:
    """``closed_loop`` split over client processes of at most ``per_process`` connections: one event loop with 32
    connections spends more CPU per request than four with 8 (aiohttp: ~0.9 ms a request here; httpx took ~2.2)."""
    from concurrent.futures import ProcessPoolExecutor

    shares = [per_process] * (concurrency // per_process) + ([concurrency % per_process] if concurrency % per_process else [])
    with ProcessPoolExecutor(len(shares)) as pool:
        parts = list(pool.map(_closed_loop_part, [(url, body, headers, share, seconds) for share in shares]))
    return _merged_figures(parts)


def _closed_loop_part(job) -> tuple:
    url, body, headers, concurrency, seconds = job
    figures = asyncio.run(closed_loop(url, body, headers, concurrency, seconds, raw=True))
    return figures


def _merged_figures(parts: list[tuple]) -> dict:
    """One set of figures from the client processes' (statuses, latencies, elapsed, ...) parts."""
    statuses: dict = {}
    for part in parts:
        for status, count in part[0].items():
            statuses[status] = statuses.get(status, 0) + count
    return _figures(statuses, [x for part in parts for x in part[1]], max(part[2] for part in parts))


def _figures(statuses: dict, latencies: list[float], elapsed: float) -> dict:
    ms = np.asarray(latencies) * 1000
    return {"requests": int(sum(statuses.values())), "statuses": {str(k): v for k, v in sorted(statuses.items(), key=str)},
            "throughput": round(statuses.get(200, 0) / elapsed, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 2), "p99_ms": round(float(np.percentile(ms, 99)), 2)}


CLIENTS = {"wrk": "wrk (one process, one thread)", "aiohttp": "aiohttp processes of 8 connections each"}


def closed_loop_driver(args):
    """wrk where it is installed (``apt install wrk``), else aiohttp client processes."""
    return wrk_closed_loop if args.client == "wrk" else closed_loop_processes


def bench_artifact(name: str, artifact: Path, args, instances: int, raw: float) -> dict:
    """The server's figures for ``artifact`` with ``instances`` batches running at once, beside ``raw``."""
    from edgeopt.serve import ServeSettings

    print(f"{name}: raw session at batch {args.max_batch} (before the servers): {raw:.1f} samples/s; server with "
          f"--instances {instances}", flush=True)
    settings = ServeSettings(max_batch=args.max_batch, max_queue=args.max_queue, instances=instances)
    server = Server({name: artifact}, settings, args.threads)
    body, headers = binary_request(artifact)
    url = f"{server.url}/v2/models/{name}/infer"
    row = {"name": name, "instances": instances, "raw_per_s": round(raw, 1), "ready_s": round(server.ready_seconds, 3),
           "rss_start_mb": round(server.rss_mb(), 1), "runs": {}}
    try:
        asyncio.run(closed_loop(url, body, headers, 8, 1.0))  # warm the pool and the server
        for concurrency in (1, 8, 32):
            figures = closed_loop_driver(args)(url, body, headers, concurrency, args.seconds)
            figures["of_raw"] = round(figures["throughput"] / raw, 3)
            figures["rss_mb"] = round(server.rss_mb(), 1)
            row["runs"][f"c{concurrency}"] = figures
            print(f"  concurrency {concurrency}: {figures}", flush=True)
        # a client that sends a batch per request (a gateway batching its cameras) pays HTTP once per batch
        batched_body, batched_headers = binary_request(artifact, args.max_batch)
        figures = closed_loop_driver(args)(url, batched_body, batched_headers, 32, args.seconds)
        figures["throughput"] = round(figures["throughput"] * args.max_batch, 1)  # samples per second
        figures["of_raw"] = round(figures["throughput"] / raw, 3)
        figures["rss_mb"] = round(server.rss_mb(), 1)
        row["runs"]["c32-batched"] = figures
        print(f"  concurrency 32, {args.max_batch} samples a request: {figures}", flush=True)
        rate = 4 * row["runs"]["c32"]["throughput"]
        figures = open_loop_processes(url, body, headers, rate, args.seconds)
        figures["rss_mb"] = round(server.rss_mb(), 1)
        row["runs"]["overload4x"] = figures
        print(f"  4x overload: {figures}", flush=True)
    finally:
        server.stop()
    return row


def prepare_artifacts(args) -> list[tuple[str, Path]]:
    """The NEU-DET detector as INT8 (when its checkpoint and data are here) and a random-init ResNet-18."""
    import edgeopt

    found = []
    checkpoint, data = ROOT / "runs" / "neu-det" / "ssdlite-128.safetensors", args.datasets_dir / "neu_det"
    if checkpoint.is_file() and data.is_dir():
        target = args.work / "neu-det-ort-int8"
        if not target.is_dir():
            edgeopt.export(str(checkpoint), "onnxruntime", target, "int8", calibrate=str(data))
        found.append(("neu-det-ssdlite-int8", target))
    elif data.is_dir():
        # throughput does not depend on trained weights: the same SSDlite graph after one epoch stands in
        quick = args.work / "ssdlite-128-1epoch.safetensors"
        if not quick.is_file():
            print(f"{checkpoint} is missing (benchmarks/detection.py trains it): timing the same SSDlite after one "
                  "epoch", flush=True)
            edgeopt.train(str(data), "edgeopt.models.detectors:ssdlite", quick, 1, task="detection", batch_size=32,
                          lr=0.004, threads=args.threads)
        target = args.work / "neu-det-1epoch-ort-int8"
        if not target.is_dir():
            edgeopt.export(str(quick), "onnxruntime", target, "int8", calibrate=str(data))
        found.append(("neu-det-ssdlite-int8", target))
    else:
        print(f"skipping the NEU-DET detector: {data} is missing", flush=True)
    target = args.work / "resnet18-ort"
    if not target.is_dir():
        edgeopt.export("torchvision:resnet18", "onnxruntime", target, input="1x3x224x224")
    found.append(("resnet18-224-fp32", target))
    return [f for f in found if args.only in (None, f[0])]


def markdown(rows: list[dict], args, environment: str) -> str:
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"Measured {when} on {environment}; `python benchmarks/serve.py --seconds {args.seconds:g}`. "
             f"Server: `edgeopt serve --threads {args.threads} --max-batch {args.max_batch} --max-queue "
             f"{args.max_queue}`; closed-loop client: {CLIENTS[args.client]}; 4× overload: 4 aiohttp processes (open loop); "
             "binary tensors; every client on the same 2 CPUs as the server.", "",
             "`--instances N`: N batches run at once, the threads shared among them. Raw: one session with every "
             "thread, measured before and after the servers; the higher of the two is the reference (" +
             "; ".join(sorted({f"{r['name']} {r['raw_before_per_s']} / {r['raw_after_per_s']}" for r in rows})) + ").",
             "", "| artifact | raw session (b=%d) /s | instances | load | HTTP /s | of raw | p50 ms | p99 ms | statuses | "
             "server RSS MB |" % args.max_batch, "|---|---:|---:|---|---:|---:|---:|---:|---|---:|"]
    for row in rows:
        for load, run in row["runs"].items():
            label = {"c1": "concurrency 1", "c8": "concurrency 8", "c32": "concurrency 32",
                     "c32-batched": f"concurrency 32, {args.max_batch} samples a request (samples/s)"}.get(
                load, f"4× overload ({run.get('offered_per_s')} req/s asked, {run.get('sent_per_s')} sent)")
            statuses = ", ".join(f"{k}: {v}" for k, v in run["statuses"].items())
            lines.append(f"| {row['name']} | {row['raw_per_s']} | {row['instances']} | {label} | {run['throughput']} | "
                         f"{run.get('of_raw', run['throughput'] / row['raw_per_s']):.0%} | {run['p50_ms']} | "
                         f"{run['p99_ms']} | {statuses} | {run['rss_mb']} |")
    lines += ["", "Server ready after start (process start to `/v2/health/ready` = 200): " +
              ", ".join(f"{r['name']} ({r['instances']}) {r['ready_s']} s" for r in rows) + "."]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="Length of each load phase.")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--max-queue", type=int, default=64)
    parser.add_argument("--instances", type=lambda text: [int(n) for n in text.split(",")], default=[1, 2],
                        help="Server --instances values to run, comma-separated (default 1,2).")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "serve")
    parser.add_argument("--datasets-dir", type=Path, default=ROOT.parent / "shared" / "datasets")
    parser.add_argument("--only", help="Just this artifact: neu-det-ssdlite-int8 or resnet18-224-fp32.")
    parser.add_argument("--client", choices=("wrk", "aiohttp"), default="wrk" if shutil.which("wrk") else "aiohttp",
                        help="Closed-loop load generator (default: wrk when installed, `apt install wrk`).")
    parser.add_argument("--no-write", action="store_true", help="Print only; leave RESULTS.md alone.")
    args = parser.parse_args()
    from edgeopt.measure.environment import collect
    from edgeopt.report.console import environment_line

    args.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, path in prepare_artifacts(args):
        # the session alone, every thread, before and after the servers ran: the faster of the two is the reference
        # (this machine's speed drifts within minutes; the higher raw figure makes the ratio the stricter one)
        before = raw_throughput(path, args.max_batch, args.seconds, args.threads)
        runs = [bench_artifact(name, path, args, instances, before) for instances in args.instances]
        after = raw_throughput(path, args.max_batch, args.seconds, args.threads)
        for row in runs:
            row.update(raw_before_per_s=round(before, 1), raw_after_per_s=round(after, 1),
                       raw_per_s=round(max(before, after), 1))
            for run in row["runs"].values():
                if "of_raw" in run:
                    run["of_raw"] = round(run["throughput"] / row["raw_per_s"], 3)
        rows += runs
    (HERE / "results" / "serve.json").write_text(json.dumps(rows, indent=2) + "\n")
    body = markdown(rows, args, environment_line(collect()))
    print(body)
    if not args.no_write:
        write_section(START, END, body, "Serving under load (`benchmarks/serve.py`)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
