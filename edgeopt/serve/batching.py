"""Dynamic batching: requests wait at most ``max_delay`` to share one run of the model.

One Batcher per served name. Requests enter a bounded queue (full → ``Overloaded``, which
the server answers 503 with Retry-After); a single loop takes the first waiting request,
gathers more until ``max_batch`` rows or ``max_delay`` has passed, runs them as one batch
in a worker thread, and hands each request its rows of the outputs. A request that timed
out while waiting is dropped before it costs a run. With ``instances`` > 1, that many loops
take from the one queue, so as many batches run at once (a single model only).

What runs is a ``Plan``: one model, or a ladder's rungs and the controller that picks the rung
for each batch from what waits (``edgeopt.runtime.controller``). With a ladder, a request the
cheapest rung could not answer within the target is refused at once (``Overloaded``), and every
answer says which rung gave it. The plan is read at the start of each batch, so swapping it (a
new version) never fails a request: batches already running finish on the old one.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np

from edgeopt.core.errors import EdgeoptError
from edgeopt.runtime.controller import Backlog, RungController
from edgeopt.runtime.timeout import timeout as time_limit


class Overloaded(EdgeoptError):
    """The model's queue is full: the caller should retry later."""


class RequestTimeout(EdgeoptError):
    """A request waited longer than its timeout."""


class Runs(Protocol):
    def infer(self, batch: np.ndarray) -> list[np.ndarray]: ...


@dataclass(frozen=True)
class Plan:
    """What a batcher runs: ``rungs[0]`` alone, or (with a controller) the rung it picks per batch."""

    rungs: tuple[Runs, ...]
    names: tuple[str, ...] = ()  # the rungs' names, reported with each answer; () for a single model
    controller: RungController | None = None

    @classmethod
    def single(cls, model: Runs) -> "Plan":
        return cls((model,))

    def pick(self, backlog: Backlog) -> int:
        return 0 if self.controller is None else self.controller.choose(backlog)

    def name(self, rung: int) -> str | None:
        return self.names[rung] if self.names else None


@dataclass(frozen=True)
class Answer:
    outputs: list[np.ndarray]
    rung: str | None  # which rung answered (None: a single model)


@dataclass
class _Waiting:
    rows: np.ndarray
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)


@dataclass
class BatchStats:
    """What a batch was: rows, requests, how long its oldest request queued, which rung ran it, and each
    request's time from arrival to answer."""

    rows: int
    requests: int
    queued_seconds: float
    run_seconds: float
    rung: str | None = None
    rung_index: int = 0
    answered_seconds: list[float] = field(default_factory=list)
    failed: bool = False  # the run raised: every request of the batch got the error


@dataclass
class _Running:
    expected_ms: float  # the plan's prediction for this batch, made when it started (a swap may change the plan)
    started: float


class Batcher:
    def __init__(self, model: Runs | Plan, max_batch: int = 8, max_delay: float = 0.002, max_queue: int = 64,
                 on_batch: Callable[[BatchStats], None] | None = None, instances: int = 1) -> None:
        self.plan = model if isinstance(model, Plan) else Plan.single(model)
        if instances > 1 and self.plan.controller is not None:
            raise ValueError("a ladder runs one batch at a time: its controller plans the queue as serial work")
        self.max_batch = max_batch
        self.max_delay = max_delay
        self.queue: asyncio.Queue[_Waiting] = asyncio.Queue(maxsize=max_queue)
        self.on_batch = on_batch
        self.instances = instances  # batches run at once, each by its own loop in its own worker thread
        self._executor = ThreadPoolExecutor(max_workers=instances, thread_name_prefix="edgeopt-infer")
        self._loop_tasks: list[asyncio.Task] = []
        # requests taken off the queue and not yet answered: being gathered, carried to a loop's next batch, or
        # running (what ``stop`` waits for: a loop may hold some while it gathers)
        self._held = 0
        self._queued_rows = 0  # rows of the requests waiting (carried ones included)
        self._running: _Running | None = None

    @property
    def depth(self) -> int:
        """Requests waiting or running."""
        return self.queue.qsize() + self._held

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop_tasks = [loop.create_task(self._loop(), name=f"edgeopt-batcher-{i}") for i in range(self.instances)]

    async def infer(self, rows: np.ndarray, timeout: float, arrived: float | None = None) -> Answer:
        """The model's outputs for ``rows`` (a batch of one or more samples), batched with others. ``arrived``: when
        the request reached the server (perf_counter), so a ladder's plan counts the time spent before the queue."""
        now = time.perf_counter()
        arrived = now if arrived is None else min(arrived, now)
        self._admit(len(rows), 1000 * (now - arrived))
        future = asyncio.get_running_loop().create_future()
        try:
            self.queue.put_nowait(_Waiting(rows, future, arrived))
        except asyncio.QueueFull:
            raise Overloaded(f"the queue is full ({self.queue.maxsize} requests waiting); retry shortly") from None
        self._queued_rows += len(rows)
        try:
            async with time_limit(timeout):  # cancels the future on expiry: the batch loop then skips it
                return await future
        except asyncio.TimeoutError:
            raise RequestTimeout(f"no result within {timeout:g} s (queue depth {self.depth}); "
                                 "retry, or raise --request-timeout") from None

    def _admit(self, rows: int, age_ms: float) -> None:
        """Refuse a request that even a ladder's cheapest rung could not answer within the target."""
        controller = self.plan.controller
        if controller is None:
            return
        running_left = 0.0
        if self._running is not None:
            # at least a microsecond while a batch runs: a running batch is never "idle" to the admission
            running_left = max(1e-3, self._running.expected_ms - 1000 * (time.perf_counter() - self._running.started))
        if not controller.admits(Backlog(age_ms, self._queued_rows, running_left), rows):
            raise Overloaded(f"{self._queued_rows} rows are waiting: even the fastest rung could not answer within "
                             f"the {controller.config.target_ms:g} ms target; retry shortly")

    async def stop(self) -> None:
        """Finish what is queued, then stop the loop and the worker thread."""
        while self.depth and any(not task.done() for task in self._loop_tasks):
            await asyncio.sleep(0.005)
        for task in self._loop_tasks:
            task.cancel()
        self._executor.shutdown(wait=True)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        carry: _Waiting | None = None  # this loop's own: what did not fit its last batch goes first in its next
        while True:
            batch, carry = await self._gather(carry)
            if not batch:
                continue
            rows = sum(len(w.rows) for w in batch)
            self._queued_rows -= rows
            plan = self.plan  # read once: a swap applies from the next batch on
            started = time.perf_counter()
            rung = plan.pick(Backlog(1000 * (started - batch[0].enqueued), rows + self._queued_rows))
            expected = plan.controller.rungs[rung].predict(rows) if plan.controller is not None else 0.0
            self._running = _Running(expected, started)
            failed = False
            try:
                stacked = np.concatenate([w.rows for w in batch]) if len(batch) > 1 else batch[0].rows
                outputs = await loop.run_in_executor(self._executor, plan.rungs[rung].infer, stacked)
            except Exception as exc:  # noqa: BLE001 — every waiting request gets the error, the loop lives on
                failed = True
                for waiting in batch:
                    if not waiting.future.done():
                        waiting.future.set_exception(exc)
            else:
                self._deliver(batch, outputs, plan.name(rung))
            finally:
                self._held -= len(batch)
                self._running = None
            finished = time.perf_counter()
            if plan.controller is not None and not failed:
                plan.controller.observe(rung, rows, 1000 * (finished - started))
            if self.on_batch is not None:
                self.on_batch(BatchStats(rows, len(batch), started - batch[0].enqueued, finished - started,
                                         plan.name(rung), rung, [finished - w.enqueued for w in batch], failed))

    async def _gather(self, carry: _Waiting | None) -> tuple[list[_Waiting], _Waiting | None]:
        """A batch (the carried request first, if any), and the request that did not fit it, carried to the next."""
        first = carry
        if first is None:
            first = await self.queue.get()
            self._held += 1
        batch, rows, carry = [first], len(first.rows), None
        deadline = time.perf_counter() + self.max_delay
        while rows < self.max_batch:
            remaining = deadline - time.perf_counter()
            try:
                if remaining <= 0:
                    waiting = self.queue.get_nowait()
                else:
                    async with time_limit(remaining):
                        waiting = await self.queue.get()
            except (asyncio.QueueEmpty, asyncio.TimeoutError):
                break
            self._held += 1
            if rows + len(waiting.rows) > self.max_batch:
                carry = waiting  # first in this loop's next batch, keeping arrival order
                break
            batch.append(waiting)
            rows += len(waiting.rows)
        dropped = [w for w in batch if w.future.done()]  # timed out while queued: never run
        self._queued_rows -= sum(len(w.rows) for w in dropped)
        self._held -= len(dropped)
        return [w for w in batch if not w.future.done()], carry

    @staticmethod
    def _deliver(batch: list[_Waiting], outputs: list[np.ndarray], rung: str | None) -> None:
        start = 0
        for waiting in batch:
            end = start + len(waiting.rows)
            if not waiting.future.done():
                waiting.future.set_result(Answer([out[start:end] for out in outputs], rung))
            start = end
