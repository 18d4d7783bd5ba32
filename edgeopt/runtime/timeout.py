"""``timeout(seconds)``: an async context manager that cancels what it wraps when time runs out and then
raises ``asyncio.TimeoutError``.

It is ``asyncio.timeout`` (Python 3.11+), which costs no task per use — ``asyncio.wait_for`` wraps every
coroutine in a new task on 3.11, a measurable cost when a server applies it to every request. On Python
3.10 (JetPack 6 on a Jetson) it is aio-libs' ``async_timeout``, the same API.
"""

from __future__ import annotations

import sys

if sys.version_info >= (3, 11):
    from asyncio import timeout
else:  # pragma: no cover — exercised on Python 3.10 only
    from async_timeout import timeout

__all__ = ["timeout"]
