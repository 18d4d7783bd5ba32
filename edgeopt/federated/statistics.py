"""BatchNorm statistics of the global model, measured at the sites and pooled by the server.

Why: FedAvg averages each site's BatchNorm running mean and variance along with the weights,
but those statistics were gathered by the site's *own* model on its *own* label-skewed images.
The averaged weights make different activations, and an average of per-site variances leaves
out how far the sites' means lie apart, so the global model normalises with statistics that
belong to no model. On NEU-CLS split by Dirichlet(0.3) that alone cost the global model 10–25
points from round to round (benchmarks/federated.py).

So after each round's aggregation the server sends the aggregate back to the sites that
trained; each runs its training images through it (train mode, no gradients, PyTorch's
cumulative average) and replies with every BatchNorm layer's mean and variance and its image
count: per-channel numbers, the same kind FedAvg already carries. The server pools them as one
population (the law of total variance) and puts them into the global model. A site with
differential privacy on declines (its statistics would leave without noise); a site that does
not answer is left out; when none answers, the averaged statistics stay.

Example:
    >>> import numpy as np
    >>> one = ({"bn.running_mean": np.array([0.0]), "bn.running_var": np.array([1.0])}, 100)
    >>> two = ({"bn.running_mean": np.array([2.0]), "bn.running_var": np.array([1.0])}, 100)
    >>> {name: float(value[0]) for name, value in sorted(pool([one, two]).items())}
    {'bn.running_mean': 1.0, 'bn.running_var': 2.0}
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from edgeopt.federated.weights import ARRAYS, MAX_EXAMPLES, METRICS, arrays_problem, read_arrays
from edgeopt.core.errors import ModelSourceError

if TYPE_CHECKING:
    from flwr.app import RecordDict
    from torch import nn

    from edgeopt.models.sources import LoadedModel

MEAN, VAR = "running_mean", "running_var"


def statistic_shapes(module: "nn.Module") -> dict[str, tuple[int, ...]]:
    """The running mean and variance of every BatchNorm layer that keeps them, by state-dict name."""
    return {f"{name}.{kind}": tuple(getattr(layer, kind).shape) for name, layer in _batchnorms(module)
            for kind in (MEAN, VAR)}


def _batchnorms(module: "nn.Module") -> list[tuple[str, Any]]:
    from torch.nn.modules.batchnorm import _BatchNorm

    return [(name, layer) for name, layer in module.named_modules()
            if isinstance(layer, _BatchNorm) and layer.track_running_stats and layer.running_mean is not None]


def measure(model: "LoadedModel", images: np.ndarray, batch_size: int) -> dict[str, np.ndarray]:
    """Every BatchNorm layer's mean and variance over ``images`` (uint8 NHWC, preprocessed as for inference),
    with the model's weights as they are: PyTorch's cumulative average over batches of ``batch_size``.
    The model is left as it was (its own statistics, momentum and mode restored)."""
    import torch

    from edgeopt.measure.inference import to_input

    module, layers = model.module, [layer for _, layer in _batchnorms(model.module)]
    names = set(statistic_shapes(module))
    kept = [(layer.momentum, layer.running_mean.clone(), layer.running_var.clone(), layer.num_batches_tracked.clone())
            for layer in layers]
    was_training = module.training
    step = max(2, batch_size)
    try:
        for layer in layers:
            layer.reset_running_stats()
            layer.momentum = None  # a cumulative average: every batch counts the same
        module.train()
        with torch.no_grad():
            for start in range(0, len(images), step):
                batch = images[start:start + step]
                if len(batch) > 1:  # BatchNorm in train mode needs two values per channel
                    module(torch.from_numpy(to_input(batch, model.input_spec)))
        return {name: tensor.detach().cpu().numpy().copy() for name, tensor in module.state_dict().items()
                if name in names}
    finally:
        for layer, (momentum, mean, var, count) in zip(layers, kept):
            layer.momentum = momentum
            layer.running_mean.copy_(mean)
            layer.running_var.copy_(var)
            layer.num_batches_tracked.copy_(count)
        module.train(was_training)


def pool(replies: Sequence[tuple[Mapping[str, np.ndarray], int]]) -> dict[str, np.ndarray]:
    """One population's statistics from the sites' (statistics, image count): the mean is the count-weighted
    mean of means; the variance the weighted mean of (variance + mean²) less the pooled mean² (the law of total
    variance: how far the sites' means lie apart counts too)."""
    counts = np.array([count for _, count in replies], dtype=np.float64)
    weights = counts / counts.sum()
    pooled: dict[str, np.ndarray] = {}
    for name in replies[0][0]:
        if not name.endswith(MEAN):
            continue
        var_name = name[: -len(MEAN)] + VAR
        means = [np.asarray(stats[name], np.float64) for stats, _ in replies]
        variances = [np.asarray(stats[var_name], np.float64) for stats, _ in replies]
        mean = sum(w * m for w, m in zip(weights, means))
        second = sum(w * (v + m * m) for w, v, m in zip(weights, variances, means))
        dtype = replies[0][0][name].dtype
        pooled[name] = mean.astype(dtype)
        pooled[var_name] = np.maximum(second - mean * mean, 0.0).astype(dtype)
    return pooled


def statistics_problem(content: "RecordDict", shapes: Mapping[str, tuple[int, ...]]
                       ) -> tuple[str | None, tuple[dict[str, np.ndarray], int] | None]:
    """A site's statistics reply, checked: exactly the model's BatchNorm statistics (finite, variances not
    negative) and a MetricRecord holding only ``num-examples``. (problem, None) or (None, (statistics, count))."""
    records = dict(content.items())
    if set(records) != {ARRAYS, METRICS}:
        return f"the reply holds records {sorted(records)}, not {[ARRAYS, METRICS]}", None
    try:
        stats = read_arrays(content.array_records[ARRAYS], "a site")
    except (ModelSourceError, KeyError, MemoryError) as exc:
        return str(exc), None
    problem = arrays_problem(stats, shapes)
    if problem:
        return problem, None
    if any(float(np.min(array)) < 0 for name, array in stats.items() if name.endswith(VAR) and array.size):
        return "a variance is negative", None
    metrics = content.metric_records.get(METRICS)
    count = metrics.get("num-examples") if metrics is not None and list(metrics) == ["num-examples"] else None
    if not isinstance(count, int) or isinstance(count, bool) or not 2 <= count <= MAX_EXAMPLES:
        return f"the reply's metrics must be only num-examples, a count from 2 to {MAX_EXAMPLES:,}", None
    return None, (stats, count)
