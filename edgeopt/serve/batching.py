"""Dynamic batching: requests wait at most ``max_delay`` to share one run of the model.

One Batcher per served model. Requests enter a bounded queue (full → ``Overloaded``, which
the server answers 503 with Retry-After); a single loop takes the first waiting request,
gathers more until ``max_batch`` rows or ``max_delay`` has passed, runs them as one batch
in a worker thread, and hands each request its rows of the outputs. A request that timed
out while waiting is dropped before it costs a run. The model is read at the start of each
batch, so swapping it (a new version) never fails a request: batches already running
finish on the old one.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np

from edgeopt.core.errors import EdgeoptError


class Overloaded(EdgeoptError):
    """The model's queue is full: the caller should retry later."""


class RequestTimeout(EdgeoptError):
    """A request waited longer than its timeout."""


class Runs(Protocol):
    def infer(self, batch: np.ndarray) -> list[np.ndarray]: ...


@dataclass
class _Waiting:
    rows: np.ndarray
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)


@dataclass
class BatchStats:
    """What a batch was: rows, requests and how long its oldest request queued."""

    rows: int
    requests: int
    queued_seconds: float
    run_seconds: float


class Batcher:
    def __init__(self, model: Runs, max_batch: int = 8, max_delay: float = 0.002, max_queue: int = 64,
                 on_batch: Callable[[BatchStats], None] | None = None) -> None:
        self.model = model
        self.max_batch = max_batch
        self.max_delay = max_delay
        self.queue: asyncio.Queue[_Waiting] = asyncio.Queue(maxsize=max_queue)
        self.on_batch = on_batch
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edgeopt-infer")
        self._loop_task: asyncio.Task | None = None
        self._busy = 0
        self._carry: _Waiting | None = None

    @property
    def depth(self) -> int:
        """Requests waiting or running."""
        return self.queue.qsize() + self._busy + (self._carry is not None)

    def start(self) -> None:
        self._loop_task = asyncio.get_running_loop().create_task(self._loop(), name="edgeopt-batcher")

    async def infer(self, rows: np.ndarray, timeout: float) -> list[np.ndarray]:
        """The model's outputs for ``rows`` (a batch of one or more samples), batched with others."""
        future = asyncio.get_running_loop().create_future()
        try:
            self.queue.put_nowait(_Waiting(rows, future))
        except asyncio.QueueFull:
            raise Overloaded(f"the queue is full ({self.queue.maxsize} requests waiting); retry shortly") from None
        try:
            return await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            raise RequestTimeout(f"no result within {timeout:g} s (queue depth {self.depth}); "
                                 "retry, or raise --request-timeout") from None

    async def stop(self) -> None:
        """Finish what is queued, then stop the loop and the worker thread."""
        while self.depth and self._loop_task is not None and not self._loop_task.done():
            await asyncio.sleep(0.005)
        if self._loop_task is not None:
            self._loop_task.cancel()
        self._executor.shutdown(wait=True)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            if not batch:
                continue
            self._busy = len(batch)
            model = self.model  # read once: a swap applies from the next batch on
            started = time.perf_counter()
            try:
                stacked = np.concatenate([w.rows for w in batch]) if len(batch) > 1 else batch[0].rows
                outputs = await loop.run_in_executor(self._executor, model.infer, stacked)
            except Exception as exc:  # noqa: BLE001 — every waiting request gets the error, the loop lives on
                for waiting in batch:
                    if not waiting.future.done():
                        waiting.future.set_exception(exc)
            else:
                self._deliver(batch, outputs)
            finally:
                self._busy = 0
            if self.on_batch is not None:
                self.on_batch(BatchStats(sum(len(w.rows) for w in batch), len(batch),
                                         started - batch[0].enqueued, time.perf_counter() - started))

    async def _gather(self) -> list[_Waiting]:
        first, self._carry = (self._carry, None) if self._carry is not None else (await self.queue.get(), None)
        batch, rows = [first], len(first.rows)
        deadline = time.perf_counter() + self.max_delay
        while rows < self.max_batch:
            remaining = deadline - time.perf_counter()
            try:
                waiting = self.queue.get_nowait() if remaining <= 0 else await asyncio.wait_for(self.queue.get(), remaining)
            except (asyncio.QueueEmpty, asyncio.TimeoutError):
                break
            if rows + len(waiting.rows) > self.max_batch:
                self._carry = waiting  # first in the next batch, keeping arrival order
                break
            batch.append(waiting)
            rows += len(waiting.rows)
        return [w for w in batch if not w.future.done()]  # timed out while queued: never run

    @staticmethod
    def _deliver(batch: list[_Waiting], outputs: list[np.ndarray]) -> None:
        start = 0
        for waiting in batch:
            end = start + len(waiting.rows)
            if not waiting.future.done():
                waiting.future.set_result([out[start:end] for out in outputs])
            start = end
