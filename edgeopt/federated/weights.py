"""A model to and from Flower's records, and what a record from the other side may hold.

The server sends a site two records: the global model's arrays (every tensor of its state
dict, by name) and its description (the same fields a checkpoint's header carries: arch,
input, task, layer widths, labels). The site rebuilds the model through the one loader of
checkpoints (``models.sources.assemble``), so a name in the description passes the same trust
gate as a name in a file: only edgeopt's own architectures and what the user installed or
named. A site replies with arrays of exactly the global model's names and shapes; the server
checks that before it aggregates (``reply_problem``).

Example:
    >>> import numpy as np
    >>> shapes = {"w": (2, 3)}
    >>> arrays_problem({"w": np.zeros((2, 3), np.float32)}, shapes)
    >>> arrays_problem({"w": np.zeros((4, 3), np.float32)}, shapes)
    'array w has shape (4, 3), the model has (2, 3)'
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from edgeopt.core.errors import ModelSourceError

if TYPE_CHECKING:
    from flwr.app import ArrayRecord, RecordDict
    from torch import nn

    from edgeopt.models.sources import LoadedModel

ARRAYS, CONFIG, METRICS = "arrays", "config", "metrics"  # record names in a message (Flower's strategies' own)
DESCRIPTION = "model/"  # the prefix of the model's description in the round's ConfigRecord
MAX_ELEMENTS = 1 << 28  # 1 GiB of float32: no edge model is larger; a bigger record is refused unread


def to_arrays(module: "nn.Module") -> "ArrayRecord":
    """Every floating-point tensor of ``module``'s state dict (weights, BatchNorm statistics) by name.

    Integer buffers (BatchNorm's batch count) stay where they are: averaging or noising a counter
    means nothing.
    """
    from flwr.app import Array, ArrayRecord

    return ArrayRecord({name: Array(tensor.detach().cpu().numpy()) for name, tensor in _weights(module).items()})


def shapes_of(module: "nn.Module") -> dict[str, tuple[int, ...]]:
    return {name: tuple(tensor.shape) for name, tensor in _weights(module).items()}


def _weights(module: "nn.Module") -> dict[str, Any]:
    return {name: tensor for name, tensor in module.state_dict().items() if tensor.is_floating_point()}


def arrays_problem(arrays: Mapping[str, np.ndarray], shapes: Mapping[str, tuple[int, ...]]) -> str | None:
    """Why ``arrays`` cannot be the model whose tensors have ``shapes`` (None: they can)."""
    missing, extra = sorted(set(shapes) - set(arrays)), sorted(set(arrays) - set(shapes))
    if missing or extra:
        return f"arrays do not match the model's tensors: missing {missing[:3]}, unexpected {extra[:3]}"
    for name, array in arrays.items():
        if tuple(array.shape) != tuple(shapes[name]):
            return f"array {name} has shape {tuple(array.shape)}, the model has {tuple(shapes[name])}"
        if array.dtype.kind != "f":
            return f"array {name} holds {array.dtype}, not floating-point numbers"
        if not np.all(np.isfinite(array)):
            return f"array {name} holds NaN or infinity"
    return None


def read_arrays(record: "ArrayRecord", sender: str) -> dict[str, np.ndarray]:
    """The numpy arrays of ``record`` (refused before decoding when it claims more than MAX_ELEMENTS)."""
    total = sum(int(np.prod(array.shape)) for array in record.values())
    if total > MAX_ELEMENTS:
        raise ModelSourceError(f"{sender} sent {total:,} numbers; edgeopt takes at most {MAX_ELEMENTS:,}")
    try:
        return {name: array.numpy() for name, array in record.items()}
    except (ValueError, TypeError, OSError) as exc:
        raise ModelSourceError(f"{sender} sent arrays that are not plain numpy arrays ({exc})") from None


def load_arrays(module: "nn.Module", arrays: Mapping[str, np.ndarray], sender: str) -> None:
    """Put ``arrays`` into ``module`` (names, shapes and values checked first)."""
    import torch

    problem = arrays_problem(arrays, shapes_of(module))
    if problem:
        raise ModelSourceError(f"{sender} sent a model that is not this one: {problem}")
    state = module.state_dict()
    module.load_state_dict({name: torch.from_numpy(np.array(array, copy=True)).to(state[name].dtype)
                            for name, array in arrays.items()}, strict=False)  # integer buffers stay


# -- the model's description ------------------------------------------------------------------
def describe(model: "LoadedModel") -> dict[str, str]:
    """What a site needs to rebuild ``model`` beside its arrays: a checkpoint's header, each field
    under ``model/`` (it travels in the round's ConfigRecord, beside the fine-tune settings)."""
    from edgeopt.models.sources import checkpoint_meta

    return {DESCRIPTION + key: value for key, value in checkpoint_meta(model).items()}


def rebuild(config: Mapping[str, Any], arrays: "ArrayRecord", sender: str) -> "LoadedModel":
    """The model a server sent: its architecture through the trust gate, then its arrays."""
    import torch

    from edgeopt.models.sources import CHECKPOINT_META, META_ARCH, assemble

    meta = {key[len(DESCRIPTION):]: value for key, value in config.items()
            if key.startswith(DESCRIPTION) and key[len(DESCRIPTION):] in CHECKPOINT_META}
    if not all(isinstance(value, str) for value in meta.values()) or not isinstance(meta.get(META_ARCH), str):
        raise ModelSourceError(f"{sender} sent a model description without a readable architecture")
    numbers = read_arrays(arrays, sender)
    state = {name: torch.from_numpy(np.array(array, copy=True)) for name, array in numbers.items()}
    try:
        model = assemble(state, meta, meta[META_ARCH], None, sender, f"the model {sender} sent", counters_optional=True)
    except (ValueError, TypeError, KeyError) as exc:  # a malformed JSON field of the description
        raise ModelSourceError(f"{sender} sent a model description edgeopt cannot read ({exc})") from None
    problem = arrays_problem(numbers, shapes_of(model.module))
    if problem:
        raise ModelSourceError(f"{sender} sent a model that does not fit its description: {problem}")
    _probe(model, sender)
    return model


def _probe(model: "LoadedModel", sender: str) -> None:
    """One forward pass on an example input: arrays whose shapes contradict the layers they fill (a pruned
    model's widths are read from the arrays) fail here, with one clear error, not in the middle of training."""
    import torch

    model.module.eval()
    try:
        with torch.no_grad():
            model.module(torch.from_numpy(model.input_spec.example(batch=2)))
    except (RuntimeError, ValueError, IndexError) as exc:
        raise ModelSourceError(f"the model {sender} sent does not run on its own input "
                               f"({str(exc).splitlines()[0]})") from None


def reply_problem(content: "RecordDict", shapes: Mapping[str, tuple[int, ...]]) -> str | None:
    """Why a site's training reply cannot be aggregated: exactly one ArrayRecord of the model's
    names and shapes, one MetricRecord with a positive example count, nothing else."""
    records: dict[str, Any] = dict(content.items())
    if set(records) != {ARRAYS, METRICS}:
        return f"the reply holds records {sorted(records)}, not {[ARRAYS, METRICS]}"
    try:
        arrays = read_arrays(content.array_records[ARRAYS], "a site")
    except (ModelSourceError, KeyError) as exc:
        return str(exc)
    problem = arrays_problem(arrays, shapes)
    if problem:
        return problem
    metrics = content.metric_records.get(METRICS)
    if metrics is None or not isinstance(metrics.get("num-examples"), int) or metrics["num-examples"] < 1:
        return "the reply's metrics carry no positive num-examples"
    if not all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in metrics.values()):
        return "the reply's metrics are not all scalars"
    return None

