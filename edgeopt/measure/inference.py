"""Run a dataset through anything that maps an input batch to output arrays.

A backend ``Session.run`` and ``LoadedModel.reference()`` both fit. Images are turned
into the model's input with its InputSpec's preprocessing, in batches the artifact
accepts (a fixed-batch artifact gets its own batch size, the last one padded).

Example:
    >>> outputs = outputs_on(session.run, splits.test, artifact.input_spec)   # doctest: +SKIP
    >>> outputs[0].shape                                                    # doctest: +SKIP
    (360, 10)
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from edgeopt.images import to_input
from edgeopt.core.spec import InputSpec

# A batch in, output arrays out.
Runner = Callable[[np.ndarray], list[np.ndarray]]


def batch_size_for(spec: InputSpec, wanted: int = 64) -> int:
    """The largest batch up to ``wanted`` that an artifact with ``spec`` accepts."""
    if not spec.dynamic_batch:
        return spec.shape[0]
    return min(wanted, spec.max_batch) if spec.max_batch else wanted


def run_batched(run: Runner, inputs: np.ndarray, spec: InputSpec, batch_size: int = 64) -> list[np.ndarray]:
    """Every output of ``run`` on preprocessed ``inputs``, concatenated over batches."""
    step = batch_size_for(spec, batch_size)
    chunks = []
    for start in range(0, len(inputs), step):
        batch = inputs[start:start + step]
        real = len(batch)
        if not spec.dynamic_batch and real < step:  # pad the last fixed-size batch
            batch = np.concatenate([batch, np.repeat(batch[-1:], step - real, axis=0)])
        chunks.append([np.asarray(out)[:real] for out in run(batch)])
    return [np.concatenate([chunk[k] for chunk in chunks]) for k in range(len(chunks[0]))]


def outputs_on(run: Runner, dataset, spec: InputSpec, batch_size: int = 64) -> list[np.ndarray]:
    """Every output of ``run`` for every image of ``dataset`` (uint8 NHWC images, preprocessed per batch)."""
    step = batch_size_for(spec, batch_size)
    chunks = [run_batched(run, to_input(dataset.images[start:start + step], spec), spec, step)
              for start in range(0, len(dataset), step)]
    return [np.concatenate([chunk[k] for chunk in chunks]) for k in range(len(chunks[0]))]
