"""Hostile clients against `edgeopt serve`: slow bodies, made-up model names and a body of nested JSON lists.

One server (`edgeopt serve`, its own process, a tiny ONNX Runtime classifier, defaults but for
`--max-queue`) is put through three things a client can do on purpose:

1. 64 connections (as many as `--max-queue`) send a request's headers and a few bytes of its body,
   then nothing. Reported: how long a normal request to the same model takes meanwhile, and when
   each slow connection is answered (408) and closed by the body deadline (`--body-timeout`).
2. 200 requests to model names that are not served. Reported: `/metrics` bytes and series before
   and after.
3. A 32 MB body of `[[0],[0],...]` for the model's input (at most `--max-body-mb`). Reported: the
   status it got, and the server's RSS before, at its peak while the request ran (the kernel's
   high-water mark, reset first through /proc/PID/clear_refs) and after.

    python benchmarks/hostile_clients.py              # -> RESULTS.md, results/hostile_clients.json
    python benchmarks/hostile_clients.py --no-write   # print only
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import statistics
import sys
import time
from pathlib import Path

import httpx
from loopback import Server  # benchmarks/loopback.py
from results_md import write_section  # benchmarks/results_md.py (the script's folder is on sys.path)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
START, END = "<!-- hostile-clients:start -->", "<!-- hostile-clients:end -->"
SLOW = 64
UNKNOWN = 200
INFER = "/v2/models/tiny/infer"


def build_artifact(work: Path) -> Path:
    """The tiny classifier (3x32x32, random init) for ONNX Runtime: the figures are about the server."""
    from edgeopt.compile import export
    from edgeopt.models.sources import load_model

    folder = work / "tiny-ort"
    if not (folder / "manifest.json").is_file():
        export(load_model("edgeopt.models.zoo:tiny_cnn", input="1x3x32x32"), "onnxruntime", folder, overwrite=True)
    return folder


def one_sample() -> bytes:
    return json.dumps({"inputs": [{"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32",
                                   "data": [0.25] * 3072}]}).encode()


async def slow_bodies(port: int) -> dict:
    """Open SLOW stalled bodies, time a normal request meanwhile, then wait for each stalled one's end."""
    async def stall() -> tuple[float, str]:
        opened = time.perf_counter()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"POST {INFER} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\r\n".encode()
                     + b'{"inputs": [')
        await writer.drain()
        reply = await reader.read()  # returns when the server closes the connection
        writer.close()
        return time.perf_counter() - opened, reply.split(b" ", 2)[1].decode() if reply else "closed"

    stalled = [asyncio.create_task(stall()) for _ in range(SLOW)]
    await asyncio.sleep(0.5)  # every one of them connected and being read
    async with httpx.AsyncClient(timeout=30) as client:
        sent = time.perf_counter()
        normal = await client.post(f"http://127.0.0.1:{port}{INFER}", content=one_sample())
        normal_ms = (time.perf_counter() - sent) * 1000
    ends = await asyncio.gather(*stalled)
    seconds = [s for s, _ in ends]
    statuses: dict[str, int] = {}
    for _, status in ends:
        statuses[status] = statuses.get(status, 0) + 1
    return {"normal_status": normal.status_code, "normal_ms": round(normal_ms, 1),
            "slow_closed_after_s": {"min": round(min(seconds), 2), "median": round(statistics.median(seconds), 2),
                                    "max": round(max(seconds), 2)},
            "slow_statuses": statuses}


def unknown_names(url: str) -> dict:
    def scrape() -> tuple[int, int]:
        text = httpx.get(f"{url}/metrics").text
        return len(text.encode()), sum(1 for line in text.splitlines() if line and not line.startswith("#"))

    (bytes_before, series_before) = scrape()
    statuses = {httpx.post(f"{url}/v2/models/made-up-{i}/infer", content=b"{}").status_code for i in range(UNKNOWN)}
    (bytes_after, series_after) = scrape()
    return {"requests": UNKNOWN, "statuses": sorted(statuses), "metrics_bytes": [bytes_before, bytes_after],
            "metrics_series": [series_before, series_after]}


def nested_body(url: str, pid: int) -> dict:
    rows = (32 << 20) // 4 - 64
    body = (b'{"inputs": [{"name": "input", "shape": [%d, 1], "datatype": "FP32", "data": [' % rows
            + b"[0]," * (rows - 1) + b"[0]]}]}")

    def status_mb(field: str) -> float:
        line = next(l for l in Path(f"/proc/{pid}/status").read_text().splitlines() if l.startswith(field + ":"))
        return round(int(line.split()[1]) / 1024, 1)

    Path(f"/proc/{pid}/clear_refs").write_text("5")  # the high-water mark (VmHWM) starts again from now
    before = status_mb("VmRSS")
    started = time.perf_counter()
    answer = httpx.post(f"{url}{INFER}", content=body, timeout=120)
    seconds = time.perf_counter() - started
    return {"body_mb": round(len(body) / 2**20, 2), "status": answer.status_code,
            "error": answer.json().get("error") if answer.status_code >= 400 else None,
            "seconds": round(seconds, 2), "rss_mb": {"before": before, "peak": status_mb("VmHWM"),
                                                      "after": status_mb("VmRSS")}}


def markdown(figures: dict, args, environment: str) -> str:
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    slow, names, nested = figures["slow_bodies"], figures["unknown_names"], figures["nested_json"]
    closed = slow["slow_closed_after_s"]
    statuses = ", ".join(f"{k}: {v}" for k, v in sorted(slow["slow_statuses"].items()))
    rss = nested["rss_mb"]
    return "\n".join([
        f"Measured {when} on {environment}; `python benchmarks/hostile_clients.py --body-timeout "
        f"{args.body_timeout:g}`. Server: `edgeopt serve --max-queue {SLOW} --body-timeout {args.body_timeout:g}`, "
        f"a tiny ONNX Runtime classifier (3x32x32); clients on the same CPUs (load average {figures['load_average']} "
        "as it began: other work shared them).", "",
        "| what the clients did | figure |", "|---|---|",
        f"| {SLOW} connections send headers and 12 bytes of a body, then stall | a normal request meanwhile: "
        f"{slow['normal_status']} in {slow['normal_ms']} ms; the stalled ones: {statuses}, closed "
        f"{closed['min']}–{closed['max']} s after they connected (median {closed['median']} s) |",
        f"| {names['requests']} requests to model names not served ({', '.join(map(str, names['statuses']))}) | "
        f"`/metrics` {names['metrics_bytes'][0]:,} → {names['metrics_bytes'][1]:,} bytes, "
        f"{names['metrics_series'][0]} → {names['metrics_series'][1]} series |",
        f"| a {nested['body_mb']} MB body of `[[0],[0],…]` | {nested['status']} in {nested['seconds']} s; server RSS "
        f"{rss['before']} MB before, {rss['peak']} MB peak, {rss['after']} MB after |", "",
        f"The refusal: \"{nested['error']}\"", "",
        "Before the fix (issue 19's review, same three things): the normal request got 503 for as long as the "
        "stalled connections stayed open; `/metrics` grew from 7 KB to 29 MB; the 32 MB body took the server "
        "from 157 MB to 1.27 GB.", ""])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--body-timeout", type=float, default=10.0, help="The server's --body-timeout (its default).")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "hostile-clients")
    parser.add_argument("--no-write", action="store_true", help="Print only; leave RESULTS.md alone.")
    args = parser.parse_args()
    from edgeopt.measure.environment import collect
    from edgeopt.report.console import environment_line

    args.work.mkdir(parents=True, exist_ok=True)
    from edgeopt.serve import ServeSettings

    server = Server({"tiny": build_artifact(args.work)}, ServeSettings(max_queue=SLOW, body_timeout_s=args.body_timeout))
    try:
        figures = {"load_average": round(os.getloadavg()[0], 1), "slow_bodies": asyncio.run(slow_bodies(server.port)),
                   "unknown_names": unknown_names(server.url), "nested_json": nested_body(server.url, server.pid)}
    finally:
        server.stop()
    print(json.dumps(figures, indent=2))
    body = markdown(figures, args, environment_line(collect()))
    print(body)
    if not args.no_write:
        (HERE / "results" / "hostile_clients.json").write_text(json.dumps(figures, indent=2) + "\n")
        write_section(START, END, body, "Hostile clients against the server (`benchmarks/hostile_clients.py`)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
