"""What edgeopt's HTTP services (the inference server and the device agent) share.

Both answer every refusal as one JSON ``{"error": "..."}`` sentence with the status its error
type maps to, check a bearer token in constant time, and read request bodies against a cap
that is enforced while the body streams in (a declared Content-Length over it is refused before
a byte is read) and a deadline (a body still arriving when it passes is answered 408 and its
connection closed, so a client that trickles bytes holds nothing for long). Each service adds its
own error types to ``STATUS``.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from typing import Awaitable, Callable, Mapping

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect

from edgeopt.core.errors import ConfigError, EdgeoptError, InputError
from edgeopt.runtime.timeout import timeout


class Unauthorized(EdgeoptError):
    """The request lacks the service's bearer token (401)."""


class TooLarge(EdgeoptError):
    """The request body is over the service's cap (413)."""


class BodyTimeout(EdgeoptError):
    """The request body did not arrive within the service's deadline (408; the connection is closed)."""


class ClientGone(EdgeoptError):
    """The client closed its connection before its body arrived: nothing can be answered (counted as 499)."""


STATUS: dict[type[BaseException], int] = {InputError: 400, ConfigError: 400, Unauthorized: 401, BodyTimeout: 408,
                                          TooLarge: 413, ClientGone: 499}


def status_of(exc: BaseException, statuses: Mapping[type[BaseException], int]) -> int:
    """The HTTP status of ``exc``: the first of ``statuses`` it is an instance of, else 500."""
    return next((code for kind, code in statuses.items() if isinstance(exc, kind)), 500)


def answer_errors(app: FastAPI, statuses: Mapping[type[BaseException], int], log: logging.Logger,
                  retry_after: Mapping[type[BaseException], str] | None = None,
                  on_refusal: Callable[[], None] | None = None) -> None:
    """Install the handlers that turn every exception into one JSON sentence.

    An ``EdgeoptError`` gets its status from ``statuses`` (plus a Retry-After header for the
    types in ``retry_after``); anything else is a 500 that is logged with its traceback, so a bug
    shows in the log but never takes the service down.
    """
    retry_after = retry_after or {}

    @app.exception_handler(EdgeoptError)
    async def refused(request: Request, exc: EdgeoptError) -> JSONResponse:
        if on_refusal is not None:
            on_refusal()
        status = status_of(exc, statuses)
        if status == 500:
            log.error("unexpected refusal on %s: %s", request.url.path, exc)
        headers = {}
        wait = next((seconds for kind, seconds in retry_after.items() if isinstance(exc, kind)), None)
        if wait is not None:
            headers["Retry-After"] = wait
        if isinstance(exc, BodyTimeout):
            headers["Connection"] = "close"  # the rest of a late body would only arrive to be thrown away
        return JSONResponse({"error": str(exc)}, status_code=status, headers=headers or None)

    @app.exception_handler(Exception)
    async def failed(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)
        return JSONResponse({"error": f"internal error ({type(exc).__name__}): {exc}"}, status_code=500)


def bearer_check(token: str | None, refusal: str) -> Callable[[Request], Awaitable[None]]:
    """A FastAPI dependency that raises ``Unauthorized(refusal)`` unless the request carries
    ``Authorization: Bearer <token>``; with no token, it lets every request through.

    It runs before the handler reads a byte of the body, so a caller without the token costs nothing."""
    expected = f"Bearer {token}".encode() if token is not None else None

    async def check(request: Request) -> None:
        if expected is None:
            return
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, expected):  # constant time: the token is not guessable byte by byte
            raise Unauthorized(refusal)
    return check


async def read_capped_body(request: Request, limit: int, what: str, flag: str, timeout_s: float | None = None,
                           on_chunk: Callable[[int], None] | None = None) -> bytes:
    """The request body, refused with ``TooLarge`` as soon as it passes ``limit`` bytes and with
    ``BodyTimeout`` when it has not all arrived ``timeout_s`` seconds after reading began.

    ``what`` names the body in the message ("the body", "the upload"), ``flag`` the option
    that raises the cap. ``on_chunk`` is told each chunk's size before the chunk is kept (a
    service's memory budget raises there to refuse the request).
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"{what} is {_size(int(declared))}, over the {_size(limit)} limit ({flag})")

    async def receive() -> bytes:
        chunks, size = [], 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise TooLarge(f"{what} is over the {_size(limit)} limit ({flag})")
                if on_chunk is not None:
                    on_chunk(len(chunk))
                chunks.append(chunk)
        except ClientDisconnect:
            raise ClientGone(f"the client closed the connection before {what} arrived") from None
        return b"".join(chunks)

    if timeout_s is None:
        return await receive()
    try:
        async with timeout(timeout_s):
            return await receive()
    except asyncio.TimeoutError:
        raise BodyTimeout(f"{what} did not arrive within {timeout_s:g} s (--body-timeout); send it whole, or raise "
                          "--body-timeout for a slow link") from None


def _size(count: int) -> str:
    return f"{count:,} bytes" if count < 1 << 20 else f"{count / 2**20:.1f} MB"
