"""The sites' door into the SuperLink: its fleet API, and nothing else.

Flower 1.42 serves the fleet API (what SuperNodes call), the control API (start and stop runs,
read their logs) and the runtime API on one HTTP port, and the control API has no authentication
of its own: whoever reaches that port can submit an app, and the SuperLink would run its
ServerApp and send its ClientApp to every site. So edgeopt's SuperLink listens on 127.0.0.1 only,
and this gateway listens where the sites connect, forwarding the fleet API's POST calls (and only
those, bodies capped) to it; anything else is a 404.

Run by the coordinator as ``python -m edgeopt.federated.gateway LISTEN UPSTREAM``.

Example:
    >>> sorted(FLEET_CALLS)[:3]
    ['activate-node', 'confirm-message-received', 'deactivate-node']
"""

from __future__ import annotations

import contextlib
import sys

FLEET_CALLS = frozenset({"register-node", "activate-node", "deactivate-node", "unregister-node", "send-node-heartbeat",
                         "pull-messages", "push-messages", "get-run", "get-fab", "push-object", "pull-object",
                         "confirm-message-received"})
MAX_BODY = 1 << 30  # the arrays of a model edgeopt takes (weights.MAX_ELEMENTS float32) fit, with room
HOP_BY_HOP = frozenset({"host", "content-length", "connection", "transfer-encoding", "keep-alive", "upgrade"})


def create_gateway(upstream: str):
    """A Starlette app forwarding ``POST /v1/fleet/<call>`` to the SuperLink at ``upstream`` (HOST:PORT)."""
    import httpx
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    client = httpx.AsyncClient(base_url=f"http://{upstream}", timeout=httpx.Timeout(600.0))

    async def fleet(request: Request) -> Response:
        call = request.path_params["call"]
        if call not in FLEET_CALLS:
            return Response("not a fleet call\n", status_code=404)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                return Response("body too large\n", status_code=413)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        try:
            answer = await client.post(f"/v1/fleet/{call}", content=bytes(body), headers=headers)
        except httpx.TransportError:
            return Response("the SuperLink is not answering\n", status_code=503)
        kept = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP | {"content-encoding"}}
        return Response(answer.content, status_code=answer.status_code, headers=kept)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        await client.aclose()

    return Starlette(routes=[Route("/v1/fleet/{call}", fleet, methods=["POST"])], lifespan=lifespan)


def main(argv: list[str]) -> None:
    import uvicorn

    from edgeopt.federated.processes import Address

    listen, upstream = Address.parse(argv[0]), Address.parse(argv[1])
    uvicorn.run(create_gateway(str(upstream)), host=listen.host, port=listen.port, log_level="warning",
                limit_concurrency=256, timeout_keep_alive=30)


if __name__ == "__main__":
    main(sys.argv[1:])
