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
MAX_ELEMENTS = 1 << 28  # 1 GiB of float32: no edge model is larger; a bigger one is refused before it is built
MAX_PIXELS = 2048 * 2048  # a site resizes all its images to the model's input: bounded
MAX_EXAMPLES = 100_000_000  # a site's example count weights its update: a larger claim is refused
MAX_MAGNITUDE = 1e8  # no trained weight or statistic is near this; float32 sums of such would overflow
REPLY_METRICS = ("num-examples", "train-loss", "val", "dp-epsilon", "dp-delta", "dp-clip", "dp-noise-std")


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
        if array.size and float(np.max(np.abs(array))) > MAX_MAGNITUDE:
            return f"array {name} holds values beyond {MAX_MAGNITUDE:g}"
    return None


def read_arrays(record: "ArrayRecord", sender: str) -> dict[str, np.ndarray]:
    """The numpy arrays of ``record``, each one's .npy header read first: floating point, the shape it
    declares, the bytes that shape needs, and MAX_ELEMENTS in all, or refused before anything is allocated."""
    total, arrays = 0, {}
    for name, array in record.items():
        count = _checked_npy(name, array, sender)
        total += count
        if total > MAX_ELEMENTS:
            raise ModelSourceError(f"{sender} sent more than {MAX_ELEMENTS:,} numbers; edgeopt takes no larger model")
    try:
        for name, array in record.items():
            arrays[name] = array.numpy()
    except (ValueError, TypeError, OSError, MemoryError) as exc:
        raise ModelSourceError(f"{sender} sent arrays that are not plain numpy arrays ({exc})") from None
    return arrays


def _checked_npy(name: str, array: Any, sender: str) -> int:
    """The element count of one Flower Array whose bytes are a .npy file (as Flower writes them), checked
    against its header: numpy would otherwise allocate whatever a header claims before reading."""
    import math

    from edgeopt.core.formats import npy_header

    if array.stype != "numpy.ndarray" or not isinstance(array.data, bytes):
        raise ModelSourceError(f"{sender} sent array {name} in a form edgeopt does not read ({array.stype!r})")
    try:
        shape, dtype, held = npy_header(array.data)
    except ValueError as exc:
        raise ModelSourceError(f"{sender} sent array {name} without a readable .npy header ({exc})") from None
    count = math.prod(shape)
    if dtype.kind != "f" or dtype.itemsize > 8:
        raise ModelSourceError(f"{sender} sent array {name} of {dtype}, not floating-point numbers")
    if tuple(shape) != tuple(array.shape) or count > MAX_ELEMENTS:
        raise ModelSourceError(f"{sender} sent array {name} declared {tuple(array.shape)} holding {tuple(shape)}")
    if held != count * dtype.itemsize:
        raise ModelSourceError(f"{sender} sent array {name} whose bytes do not match its shape {tuple(shape)}")
    return count


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
    _check_size(meta, sender)
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


def _check_size(meta: Mapping[str, str], sender: str) -> None:
    """A description that would build a model or an input larger than edgeopt takes is refused before
    anything is built: its input at most MAX_SIDE a side, MAX_PIXELS in all, 4 channels; its
    architecture, built on PyTorch's meta device (nothing allocated), at most MAX_ELEMENTS numbers."""
    import json

    from edgeopt.core.size import MAX_SIDE
    from edgeopt.core.spec import InputSpec
    from edgeopt.models.sources import META_ARCH, META_INPUT, parameter_count

    try:
        shape = InputSpec.from_dict(json.loads(meta[META_INPUT])).shape if META_INPUT in meta else ()
    except (ValueError, TypeError, KeyError) as exc:
        raise ModelSourceError(f"{sender} sent an input description edgeopt cannot read ({exc})") from None
    sides = [int(side) for side in shape[2:] if isinstance(side, int)]
    if (len(shape) > 1 and isinstance(shape[1], int) and shape[1] > 4) or any(side > MAX_SIDE for side in sides) \
            or (len(sides) >= 2 and sides[-1] * sides[-2] > MAX_PIXELS):
        raise ModelSourceError(f"{sender} describes an input of shape {list(shape)}; a site takes at most 4 channels, "
                               f"{MAX_SIDE} pixels a side and {MAX_PIXELS:,} in all")
    count = parameter_count(meta[META_ARCH], sender)
    if count > MAX_ELEMENTS:
        raise ModelSourceError(f"{sender} describes a model of {count:,} numbers; edgeopt takes at most {MAX_ELEMENTS:,}")


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
    """Why a site's training reply cannot be aggregated: exactly one ArrayRecord of the model's names
    and shapes, one MetricRecord of exactly REPLY_METRICS (finite scalars, a positive example count no
    larger than MAX_EXAMPLES), nothing else. Flower's strategies also need every reply's metrics alike."""
    records: dict[str, Any] = dict(content.items())
    if set(records) != {ARRAYS, METRICS}:
        return f"the reply holds records {sorted(records)}, not {[ARRAYS, METRICS]}"
    try:
        arrays = read_arrays(content.array_records[ARRAYS], "a site")
    except (ModelSourceError, KeyError, MemoryError) as exc:
        return str(exc)
    problem = arrays_problem(arrays, shapes)
    if problem:
        return problem
    metrics = content.metric_records.get(METRICS)
    if metrics is None or sorted(metrics) != sorted(REPLY_METRICS):
        return f"the reply's metrics are {sorted(metrics or {})}, not {sorted(REPLY_METRICS)}"
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in metrics.values()):
        return "the reply's metrics are not all finite scalars"
    if not isinstance(metrics["num-examples"], int) or not 1 <= metrics["num-examples"] <= MAX_EXAMPLES:
        return f"the reply's num-examples is not a count from 1 to {MAX_EXAMPLES:,}"
    return None
