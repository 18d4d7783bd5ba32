"""Layer widths of a (possibly pruned) architecture, so a checkpoint can rebuild it.

Structured pruning makes layers physically narrower, so a pruned checkpoint no longer
fits a fresh build of its architecture. Instead of pickling the module (never done
here), a checkpoint carries the width attributes of every layer as JSON; loading
builds the original architecture, sets those attributes and resizes the parameters
and buffers to the checkpoint's shapes before ``load_state_dict`` fills them.

Example:
    >>> widths = describe(pruned_module)                      # doctest: +SKIP
    >>> reshape(torchvision.models.resnet18(), widths, state)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from edgeopt.core.errors import ModelSourceError

WIDTH_ATTRIBUTES = ("in_channels", "out_channels", "groups", "num_features", "in_features", "out_features",
                    "num_channels", "num_groups", "normalized_shape", "embed_dim")


def describe(module: nn.Module) -> dict[str, dict[str, Any]]:
    """Width attributes (ints, or tuples of ints) of every layer that has any."""
    widths: dict[str, dict[str, Any]] = {}
    for name, layer in module.named_modules():
        found = {attr: _plain(getattr(layer, attr)) for attr in WIDTH_ATTRIBUTES if _is_width(getattr(layer, attr, None))}
        if found:
            widths[name] = found
    return widths


def reshape(module: nn.Module, widths: dict[str, dict[str, Any]], state: dict[str, torch.Tensor]) -> None:
    """Make ``module``'s layers as wide as ``widths`` says and its tensors the shapes in ``state``."""
    layers = dict(module.named_modules())
    for name, attributes in widths.items():
        if name not in layers:
            raise ModelSourceError(f"the checkpoint describes a layer {name!r} that its architecture does not have")
        for attr, value in attributes.items():
            setattr(layers[name], attr, tuple(value) if isinstance(value, list) else value)
    for key, tensor in state.items():
        owner, _, leaf = key.rpartition(".")
        layer = layers.get(owner)
        if layer is None:
            continue  # load_state_dict reports unexpected keys with context
        if layer._parameters.get(leaf) is not None and layer._parameters[leaf].shape != tensor.shape:
            old = layer._parameters[leaf]
            layer._parameters[leaf] = nn.Parameter(torch.empty_like(tensor, dtype=old.dtype), old.requires_grad)
        elif layer._buffers.get(leaf) is not None and layer._buffers[leaf].shape != tensor.shape:
            layer._buffers[leaf] = torch.empty_like(tensor, dtype=layer._buffers[leaf].dtype)


def _is_width(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, (tuple, list)) and bool(value) and all(isinstance(v, int) for v in value)


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def adapt_input_channels(module: "torch.nn.Module", channels: int) -> None:
    """Give the first convolution ``channels`` inputs (e.g. 1 for grayscale), in place.

    For one channel the RGB filters are summed, so a pretrained stem sees a gray image
    as it saw the same image replicated over R, G and B.
    """
    name, conv = next(((n, m) for n, m in module.named_modules() if isinstance(m, torch.nn.Conv2d)), (None, None))
    if conv is None or conv.groups != 1:
        raise ModelSourceError("in_channels needs a model whose first layer is an ordinary Conv2d")
    stem = torch.nn.Conv2d(channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                           conv.dilation, bias=conv.bias is not None)
    with torch.no_grad():
        if channels == 1:
            stem.weight.copy_(conv.weight.sum(dim=1, keepdim=True))
        if conv.bias is not None:
            stem.bias.copy_(conv.bias)
    parent_name, _, attr = name.rpartition(".")
    setattr(module.get_submodule(parent_name) if parent_name else module, attr, stem)
