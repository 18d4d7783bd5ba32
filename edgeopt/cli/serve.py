"""``edgeopt serve``: artifacts over HTTP (Open Inference Protocol v2), torch-free."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import List, Optional

import typer

from edgeopt.cli.app import app
from edgeopt.cli.common import ArchOption, PluginOption, ThreadsOption, TrustModelOption


@app.command("serve")
def serve_command(
    artifacts: Optional[List[str]] = typer.Argument(None, help="Artifact folders, ladders (`edgeopt ladder`), early-exit models (`edgeopt exits`) or bundles (`edgeopt pack`), each served under its name or as NAME=PATH."),
    model_repository: Optional[Path] = typer.Option(None, "--model-repository", help="A folder of NAME/VERSION/ artifacts or NAME/VERSION.edgeopt bundles, watched: a new version replaces the old once verified and warm."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on; 127.0.0.1 keeps it on this machine."),
    port: int = typer.Option(8000, "--port"),
    max_batch: int = typer.Option(8, "--max-batch", help="Most samples run together (dynamic batching)."),
    max_queue_delay_ms: float = typer.Option(2.0, "--max-queue-delay-ms", help="Longest a request waits for others to share its batch."),
    max_queue: int = typer.Option(64, "--max-queue", help="Requests waiting per model; more are answered 503 with Retry-After."),
    request_timeout: float = typer.Option(10.0, "--request-timeout", help="Seconds before a waiting request is answered 504."),
    body_timeout: float = typer.Option(10.0, "--body-timeout", help="Seconds a request's body may take to arrive; a slower one is answered 408 and its connection closed."),
    max_body_mb: float = typer.Option(32.0, "--max-body-mb", help="Largest request body."),
    max_pixels: int = typer.Option(16_000_000, "--max-pixels", help="Largest decoded image for /predict."),
    token_env: Optional[str] = typer.Option(None, "--token-env", help="Require 'Authorization: Bearer <token>', the token read from this environment variable."),
    poll_seconds: float = typer.Option(2.0, "--poll-seconds", help="How often the model repository is looked at."),
    drain_seconds: float = typer.Option(10.0, "--drain-seconds", help="On SIGTERM, how long in-flight requests get to finish."),
    target_p99_ms: Optional[float] = typer.Option(None, "--target-p99-ms", help="Ladders and early-exit models: answer with the most accurate rung (exit setting) whose predicted completion meets this latency (ms); refuse (503) what even the fastest cannot."),
    instances: int = typer.Option(1, "--instances", help="Batches of a model that run at once, the threads shared among them: 2 on a few cores raises throughput under concurrent load (ONNX Runtime models; others and ladders run one)."),
    score_threshold: float = typer.Option(0.3, "--score-threshold", help="Detectors: boxes at least this confident in /predict."),
    arch: Optional[str] = ArchOption,
    trust_model: bool = TrustModelOption,
    threads: Optional[int] = ThreadsOption,
    plugin: List[str] = PluginOption,
) -> None:
    """Serve ARTIFACTS (ONNX Runtime, OpenVINO, ...) with dynamic batching, metrics and hot model swaps."""
    from edgeopt.core.errors import ConfigError
    from edgeopt.serve import ServeSettings, serve

    named = {}
    for item in artifacts or []:
        name, _, folder = item.rpartition("=") if "=" in item else (Path(item).stem if Path(item).is_file() else Path(item).name, "", item)
        named[name] = Path(folder)
    token = None
    if token_env is not None:
        token = os.environ.get(token_env)
        if not token:
            raise ConfigError(f"--token-env {token_env}: that environment variable is empty or unset")
    settings = ServeSettings(max_batch=max_batch, max_queue_delay_ms=max_queue_delay_ms, max_queue=max_queue,
                             request_timeout_s=request_timeout, body_timeout_s=body_timeout,
                             max_body_bytes=int(max_body_mb * (1 << 20)),
                             max_pixels=max_pixels, token=token, poll_seconds=poll_seconds, drain_seconds=drain_seconds,
                             target_p99_ms=target_p99_ms, instances=instances)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    typer.echo(f"edgeopt serve: http://{host}:{port}/v2 (docs at /docs, metrics at /metrics)", err=True)
    serve(named, model_repository, host, port, settings, threads=threads, score_threshold=score_threshold)
