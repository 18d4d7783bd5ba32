"""What edgeopt's HTTP services (the inference server and the device agent) share.

Both answer every refusal as one JSON ``{"error": "..."}`` sentence with the status its error
type maps to, check a bearer token in constant time, and read request bodies against a cap
that is enforced while the body streams in (a declared Content-Length over it is refused before
a byte is read). Each service adds its own error types to ``STATUS``.
"""

from __future__ import annotations

import hmac
import logging
from typing import Awaitable, Callable, Mapping

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from edgeopt.errors import ConfigError, EdgeoptError, InputError


class Unauthorized(EdgeoptError):
    """The request lacks the service's bearer token (401)."""


class TooLarge(EdgeoptError):
    """The request body is over the service's cap (413)."""


STATUS: dict[type[BaseException], int] = {InputError: 400, ConfigError: 400, Unauthorized: 401, TooLarge: 413}


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
        wait = next((seconds for kind, seconds in retry_after.items() if isinstance(exc, kind)), None)
        headers = {"Retry-After": wait} if wait is not None else None
        return JSONResponse({"error": str(exc)}, status_code=status, headers=headers)

    @app.exception_handler(Exception)
    async def failed(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)
        return JSONResponse({"error": f"internal error ({type(exc).__name__}): {exc}"}, status_code=500)


def bearer_check(token: str | None, refusal: str) -> Callable[[Request], Awaitable[None]]:
    """A FastAPI dependency that raises ``Unauthorized(refusal)`` unless the request carries
    ``Authorization: Bearer <token>``; with no token, it lets every request through."""
    expected = f"Bearer {token}".encode() if token is not None else None

    async def check(request: Request) -> None:
        if expected is None:
            return
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, expected):  # constant time: the token is not guessable byte by byte
            raise Unauthorized(refusal)
    return check


async def read_capped_body(request: Request, limit: int, what: str, flag: str) -> bytes:
    """The request body, refused with ``TooLarge`` as soon as it passes ``limit`` bytes.

    ``what`` names the body in the message ("the body", "the upload"), ``flag`` the option
    that raises the cap.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"{what} is {_size(int(declared))}, over the {_size(limit)} limit ({flag})")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"{what} is over the {_size(limit)} limit ({flag})")
        chunks.append(chunk)
    return b"".join(chunks)


def _size(count: int) -> str:
    return f"{count:,} bytes" if count < 1 << 20 else f"{count / 2**20:.1f} MB"
