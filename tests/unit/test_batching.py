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
