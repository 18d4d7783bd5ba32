"""The dynamic batcher on its own: batches that run at once (instances), timeouts that cost no run."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from edgeopt.runtime.controller import ControlConfig, RungController, RungProfile
from edgeopt.serve.batching import Batcher, Plan, RequestTimeout


class SlowModel:
    """Doubles its input after ``seconds``; counts the calls that overlap and the rows it saw."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.running, self.most_at_once, self.rows = seconds, 0, 0, []
        self._lock = threading.Lock()

    def infer(self, batch: np.ndarray) -> list[np.ndarray]:
        with self._lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        time.sleep(self.seconds)
        with self._lock:
            self.running -= 1
            self.rows.extend(batch[:, 0].tolist())
        return [batch * 2]


async def _ask(batcher: Batcher, values: list[float], timeout: float = 5.0) -> list:
    return await asyncio.gather(*(batcher.infer(np.full((1, 2), v, np.float32), timeout) for v in values),
                                return_exceptions=True)


@pytest.mark.parametrize("instances", [1, 2])
def test_instances_run_that_many_batches_at_once_and_every_answer_is_its_own(instances):
    model = SlowModel(0.1)

    async def run() -> list:
        batcher = Batcher(model, max_batch=4, max_delay=0.001, instances=instances)
        batcher.start()
        answers = await _ask(batcher, [float(i) for i in range(16)])
        await batcher.stop()
        return answers

    answers = asyncio.run(run())
    assert [float(a.outputs[0][0, 0]) for a in answers] == [2.0 * i for i in range(16)]
    assert model.most_at_once == instances
    assert sorted(model.rows) == [float(i) for i in range(16)]


def test_a_request_that_times_out_while_queued_is_never_run():
    model = SlowModel(0.3)

    async def run() -> list:
        batcher = Batcher(model, max_batch=1, max_delay=0.0)
        batcher.start()
        first = asyncio.ensure_future(_ask(batcher, [1.0]))
        await asyncio.sleep(0.05)  # the first batch is running
        late = await _ask(batcher, [2.0], timeout=0.05)
        answers = (await first) + late
        await batcher.stop()
        return answers

    answers = asyncio.run(run())
    assert float(answers[0].outputs[0][0, 0]) == 2.0
    assert isinstance(answers[1], RequestTimeout) and "--request-timeout" in str(answers[1])
    assert model.rows == [1.0]  # the timed-out request cost no run


def test_a_ladder_runs_one_batch_at_a_time():
    controller = RungController([RungProfile("r0", {1: 1.0})], ControlConfig(target_ms=50), max_batch=1)
    with pytest.raises(ValueError, match="one batch at a time"):
        Batcher(Plan((SlowModel(0),), ("r0",), controller), instances=2)


def test_requests_that_do_not_fit_a_batch_are_carried_and_answered_with_several_loops():
    """Rows of 4, 1, 4 and 1 into batches of at most 4 on two loops: each loop carries what did not fit its
    batch into its own next one, so no request is lost to the other loop's carry."""
    model = SlowModel(0.03)

    async def run() -> tuple[list, int]:
        batcher = Batcher(model, max_batch=4, max_delay=0.05, instances=2)
        batcher.start()
        asks = []
        for at, rows, value in ((0.0, 4, 1.0), (0.01, 1, 2.0), (0.04, 4, 3.0), (0.045, 1, 4.0)):
            await asyncio.sleep(max(0.0, at - (asks[-1][0] if asks else 0.0)))
            asks.append((at, asyncio.ensure_future(batcher.infer(np.full((rows, 2), value, np.float32), 2.0))))
        answers = await asyncio.gather(*(task for _, task in asks), return_exceptions=True)
        depth = batcher.depth
        await batcher.stop()
        return answers, depth

    answers, depth = asyncio.run(run())
    assert all(not isinstance(a, Exception) for a in answers), answers
    assert [a.outputs[0].shape[0] for a in answers] == [4, 1, 4, 1] and depth == 0
    assert sorted(model.rows) == [1.0] * 4 + [2.0] + [3.0] * 4 + [4.0]


def test_stop_finishes_a_request_still_being_gathered():
    model = SlowModel(0.0)

    async def run():
        batcher = Batcher(model, max_batch=8, max_delay=0.2)
        batcher.start()
        asked = asyncio.ensure_future(batcher.infer(np.full((1, 2), 5.0, np.float32), 2.0))
        await asyncio.sleep(0.02)  # taken off the queue, waiting for company
        assert batcher.depth == 1
        await batcher.stop()
        return await asked

    assert float(asyncio.run(run()).outputs[0][0, 0]) == 10.0
