"""BatchNorm statistics of the global model, measured at the sites and pooled by the server.

Why: FedAvg averages each site's BatchNorm running mean and variance along with the weights,
but those statistics were gathered by the site's *own* model on its *own* label-skewed images.
The averaged weights make different activations, and an average of per-site variances leaves
out how far the sites' means lie apart, so the global model normalises with statistics that
belong to no model. On NEU-CLS split by Dirichlet(0.3) the global model with averaged statistics
swung from round to round (benchmarks/federated.py's FedAvg before this: 83.89% after round 8,
70.28% after round 10).

So after each round's aggregation the server sends the aggregate back to the sites that
trained; each runs its training images through it (in a fixed shuffled order, BatchNorm layers
in train mode and everything else, dropout too, in eval mode, no gradients, PyTorch's cumulative
average) and replies with every BatchNorm layer's mean and variance and its image count:
per-channel numbers, the same kind FedAvg already carries. The server pools them as one
population (the law of total variance), each site weighted by the example count of its training
reply (a site cannot claim more weight for its statistics than for its update), and puts them
into the global model when the sites that measured hold at least half the round's examples and
the pooled numbers are within the bounds every array is held to. Otherwise (and when a site has
differential privacy on: it is not asked, its statistics would leave without noise) the
averaged statistics stay.

Example:
    >>> import numpy as np
    >>> one = ({"bn.running_mean": np.array([0.0]), "bn.running_var": np.array([1.0])}, 300)
    >>> two = ({"bn.running_mean": np.array([4.0]), "bn.running_var": np.array([1.0])}, 100)
    >>> {name: float(value[0]) for name, value in sorted(pool([one, two]).items())}
    {'bn.running_mean': 1.0, 'bn.running_var': 4.0}
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from edgeopt.core.errors import ConfigError, ModelSourceError
from edgeopt.federated.weights import ARRAYS, METRICS, arrays_problem, read_arrays

if TYPE_CHECKING:
    from flwr.app import RecordDict
    from torch import nn

    from edgeopt.models.sources import LoadedModel

MEAN, VAR = "running_mean", "running_var"
MIN_COVERAGE = 0.5  # of a round's examples, held by the sites that measured, for their statistics to be used


def statistic_shapes(module: "nn.Module") -> dict[str, tuple[int, ...]]:
    """The running mean and variance of every BatchNorm layer that keeps them, by state-dict name."""
    return {f"{name}.{kind}": tuple(getattr(layer, kind).shape) for name, layer in _batchnorms(module)
            for kind in (MEAN, VAR)}


def _batchnorms(module: "nn.Module") -> list[tuple[str, Any]]:
    from torch.nn.modules.batchnorm import _BatchNorm

    return [(name, layer) for name, layer in module.named_modules()
            if isinstance(layer, _BatchNorm) and layer.track_running_stats and layer.running_mean is not None]


def measure(model: "LoadedModel", images: np.ndarray, batch_size: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Every BatchNorm layer's mean and variance over ``images`` (uint8 NHWC, preprocessed as for inference)
    with the model's weights as they are: batches of ``batch_size`` in a fixed shuffled order (a dataset
    stored class by class would otherwise give one-class batches), BatchNorm in train mode, everything else
    in eval mode, PyTorch's cumulative average. A layer no input reaches keeps the statistics it had. The
    model is left as it was (statistics, momentum, modes)."""
    import torch

    from edgeopt.images import to_input

    module, layers = model.module, _batchnorms(model.module)
    kept = {name: (layer.momentum, layer.running_mean.clone(), layer.running_var.clone(),
                   layer.num_batches_tracked.clone(), layer.training) for name, layer in layers}
    was_training = module.training
    order = np.random.default_rng(seed).permutation(len(images))
    step = max(2, batch_size)
    try:
        module.eval()
        for _, layer in layers:
            layer.reset_running_stats()
            layer.momentum = None  # a cumulative average: every batch counts the same
            layer.train()
        with torch.no_grad():
            for start in range(0, len(order), step):
                batch = images[np.sort(order[start:start + step])]
                if len(batch) > 1:  # BatchNorm in train mode needs two values per channel
                    module(torch.from_numpy(to_input(batch, model.input_spec)))
        measured = {}
        for name, layer in layers:
            reached = int(layer.num_batches_tracked) > 0
            _, mean, var, _, _ = kept[name]
            measured[f"{name}.{MEAN}"] = (layer.running_mean if reached else mean).detach().cpu().numpy().copy()
            measured[f"{name}.{VAR}"] = (layer.running_var if reached else var).detach().cpu().numpy().copy()
        return measured
    finally:
        module.train(was_training)
        for name, layer in layers:
            momentum, mean, var, count, training = kept[name]
            layer.momentum = momentum
            layer.running_mean.copy_(mean)
            layer.running_var.copy_(var)
            layer.num_batches_tracked.copy_(count)
            layer.train(training)


def adaptable_layers(module: "nn.Module") -> list[tuple[str, Any]]:
    """The BatchNorm layers ``adapt`` would change; a model without any is refused (nothing to adapt)."""
    layers = _batchnorms(module)
    if not layers:
        raise ConfigError("the model has no BatchNorm layer with running statistics: there is nothing to adapt "
                          "(adapting statistics is for models with BatchNorm; fine-tune instead)")
    return layers


def adapt(model: "LoadedModel", images: np.ndarray, batch_size: int = 64) -> int:
    """Put the statistics of ``images`` into ``model``'s BatchNorm layers (in place), the weights untouched:
    AdaBN (Li et al., 2016), for a site whose images differ from the federation's (a camera changed, other
    lighting). No training, no label, nothing leaves the site. Returns how many layers were adapted."""
    import torch

    layers = adaptable_layers(model.module)
    if len(images) < 2:
        raise ConfigError(f"adapting BatchNorm statistics needs at least two images, the data has {len(images)}")
    measured = measure(model, images, batch_size)
    problem = arrays_problem(measured, statistic_shapes(model.module))  # the bounds a federation holds them to
    if problem:
        raise ConfigError(f"the model's BatchNorm statistics on these images are unusable ({problem}): its "
                          "weights are broken (NaN or overflow); adapt a model that evaluates normally")
    state = model.module.state_dict()
    with torch.no_grad():
        for name, value in measured.items():
            state[name].copy_(torch.from_numpy(value).to(state[name].dtype))
    return len(layers)


def pool(replies: Sequence[tuple[Mapping[str, np.ndarray], int]]) -> dict[str, np.ndarray]:
    """One population's statistics from the sites' (statistics, example count), in float64: the mean is the
    count-weighted mean of means; the variance the weighted mean of (variance + (mean − pooled mean)²) (the law
    of total variance: how far the sites' means lie apart counts too; written so it is never negative)."""
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
        pooled[name] = mean
        pooled[var_name] = sum(w * (v + (m - mean) ** 2) for w, v, m in zip(weights, variances, means))
    return pooled


def pooled_problem(pooled: Mapping[str, np.ndarray], shapes: Mapping[str, tuple[int, ...]], measured: int,
                   examples: int) -> str | None:
    """Why pooled statistics may not replace the aggregate's: too few of the round's ``examples`` measured,
    or numbers beyond what any array may hold (sites whose means lie far apart make a larger variance)."""
    if measured < MIN_COVERAGE * examples:
        return (f"the sites that measured hold {measured} of the round's {examples} examples, under "
                f"{MIN_COVERAGE:.0%}: the averaged statistics stay")
    problem = arrays_problem(pooled, shapes)
    return f"the pooled statistics are unusable ({problem}): the averaged statistics stay" if problem else None


def statistics_problem(content: "RecordDict", shapes: Mapping[str, tuple[int, ...]], trained: int
                       ) -> tuple[str | None, dict[str, np.ndarray] | None]:
    """A site's statistics reply, checked: exactly the model's BatchNorm statistics (finite, variances not
    negative) and a MetricRecord holding only ``num-examples``, the count its training reply gave
    (``trained``). (problem, None) or (None, statistics)."""
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
    if not isinstance(count, int) or isinstance(count, bool) or count != trained:
        return f"the reply's metrics must be only num-examples, the {trained} of the site's training reply", None
    return None, stats
