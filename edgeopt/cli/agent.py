"""``edgeopt agent``: run on the device; the host's `bench --agent` and `optimize --agent` measure here."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional

import typer

from edgeopt.cli.app import app

DEFAULT_STORE = Path.home() / ".cache" / "edgeopt" / "agent"


@app.command("agent")
def agent_command(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on: the device's LAN address for a host elsewhere (127.0.0.1 keeps it on this machine)."),
    port: int = typer.Option(8470, "--port"),
    token_env: str = typer.Option("EDGEOPT_AGENT_TOKEN", "--token-env", help="Environment variable holding the token every request must carry (required)."),
    store: Path = typer.Option(DEFAULT_STORE, "--store", help="Where uploaded artifacts stay while they are measured (each is deleted after)."),
    name: Optional[str] = typer.Option(None, "--name", help="This device's name in reports (default: the host name)."),
    kind: Optional[str] = typer.Option(None, "--kind", help="The device profile this is (e.g. rpi4b, see `edgeopt devices`): the host files its measurements under it to correct estimates."),
    max_upload_mb: float = typer.Option(256.0, "--max-upload-mb", help="Largest artifact bundle accepted."),
    memory_cap_mb: Optional[float] = typer.Option(None, "--memory-cap-mb", help="Stop and refuse a model whose process grows past this resident memory."),
    timeout: float = typer.Option(900.0, "--timeout", help="Seconds one measurement may take before it is stopped."),
    body_timeout: float = typer.Option(300.0, "--body-timeout", help="Seconds an upload may take to arrive; a slower one is answered 408 and the agent is free again."),
) -> None:
    """Measure artifacts that a host uploads (ONNX Runtime, OpenVINO, ExecuTorch; never pickles or TorchScript)."""
    from edgeopt.agent import AgentSettings, serve_agent
    from edgeopt.core.errors import ConfigError

    token = os.environ.get(token_env, "")
    if not token:
        raise ConfigError(f"the agent requires a token: set the environment variable {token_env} "
                          "(e.g. export EDGEOPT_AGENT_TOKEN=$(python -c 'import secrets; print(secrets.token_urlsafe())'))")
    settings = AgentSettings(token=token, store=store.expanduser(), name=name, kind=kind,
                             max_upload_bytes=int(max_upload_mb * (1 << 20)), memory_cap_mb=memory_cap_mb,
                             timeout_s=timeout, body_timeout_s=body_timeout)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    typer.echo(f"edgeopt agent: http://{host}:{port}/v1 (docs at /docs)", err=True)
    serve_agent(settings, host, port)
