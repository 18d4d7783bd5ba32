"""``edgeopt agent``: measure artifacts on the device they will run on, for a host that asks.

Runs from the lean edge install (no torch): FastAPI, uvicorn, numpy and one runtime. The
host packs an artifact (``edgeopt.core.bundle``), sends it with its probe inputs, and gets back
cold load, first call, latency percentiles, throughput, peak RSS, sustained drift, the
outputs for its parity check and the device's identity (``app``). ``client.AgentClient`` is
the host's side; ``identity`` is how a device describes itself.

Example:
    >>> from edgeopt.agent import AgentSettings, serve_agent                        # doctest: +SKIP
    >>> serve_agent(AgentSettings(token=os.environ["EDGEOPT_AGENT_TOKEN"], store=Path("~/.edgeopt-agent")),
    ...             host="192.168.1.20", port=8470)                                  # doctest: +SKIP
"""

from __future__ import annotations

import logging

__all__ = ["AgentSettings", "serve_agent"]
log = logging.getLogger("edgeopt.agent")


def __getattr__(name: str):
    if name == "AgentSettings":  # the settings live with the app, which imports FastAPI: only on use
        from edgeopt.agent.app import AgentSettings

        return AgentSettings
    raise AttributeError(name)


def serve_agent(settings, host: str = "127.0.0.1", port: int = 8470) -> None:
    """Describe this device, then serve measurements until SIGINT/SIGTERM."""
    import uvicorn

    from edgeopt.agent.app import create_app
    from edgeopt.agent.identity import label

    app = create_app(settings)
    log.info("device: %s; runs %s; store %s", label(app.state.agent.identity),
             ", ".join(app.state.agent.identity["backends"]) or "no runtime (install onnxruntime or openvino)",
             settings.store)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=5, timeout_keep_alive=30)
    uvicorn.Server(config).run()
