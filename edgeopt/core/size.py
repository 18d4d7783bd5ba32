"""An image input's size: one number for a square, ``WIDTHxHEIGHT`` for a rectangle.

A camera gives 640x480 or 320x240; letterboxing that into a square wastes a quarter of the
pixels, so a model's input may be rectangular. Sizes are written the way people say them
(width first: ``320x240``) and held as ``(width, height)``; tensors are ``(N, C, H, W)``.

Example:
    >>> parse_size("320x240"), parse_size(128), parse_size("96")
    ((320, 240), (128, 128), (96, 96))
    >>> size_text((320, 240)), size_text((128, 128)), scaled((320, 240), 0.75)
    ('320x240', 128, (240, 180))
"""

from __future__ import annotations

import numbers
import re
from typing import Sequence, Union

from edgeopt.core.errors import ConfigError

Size = tuple[int, int]  # (width, height) in pixels
SizeLike = Union[int, str, Sequence[int]]
MAX_SIDE = 4096  # px: a 4K camera (3840x2160) fits; a size read from a file cannot make a model allocate more
_TEXT = re.compile(r"^\s*(\d{1,6})\s*(?:[xX×]\s*(\d{1,6}))?\s*$")


def parse_size(value: SizeLike | None) -> Size | None:
    """``value`` (``256``, ``"256"``, ``"320x240"``, ``(320, 240)``) as (width, height); None stays None."""
    if value is None:
        return None
    if isinstance(value, bool) or (isinstance(value, numbers.Number) and not isinstance(value, numbers.Integral)):
        raise ConfigError(f"an input size is a whole number of pixels or WIDTHxHEIGHT, not {value!r}")
    if isinstance(value, numbers.Integral):
        width = height = int(value)
    elif isinstance(value, str):
        match = _TEXT.match(value)
        if not match:
            raise ConfigError(f"input size {value!r} is neither a number of pixels (256) nor WIDTHxHEIGHT (320x240)")
        width, height = int(match[1]), int(match[2] or match[1])
    elif isinstance(value, (list, tuple)):
        parts = list(value)
        if len(parts) != 2 or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in parts):
            raise ConfigError(f"an input size is (width, height) in whole pixels, not {value!r}")
        width, height = (int(v) for v in parts)
    else:
        raise ConfigError(f"an input size is a number of pixels or WIDTHxHEIGHT, not {value!r}")
    if width < 1 or height < 1:
        raise ConfigError(f"an input size must be at least 1x1 pixels, not {width}x{height}")
    if max(width, height) > MAX_SIDE:
        raise ConfigError(f"an input size of {width}x{height} is larger than edgeopt builds models for (sides up to "
                          f"{MAX_SIDE} px); resize the images")
    return int(width), int(height)


def size_text(size: Size) -> int | str:
    """How a size is written in an architecture source or a config: a square as its side, else ``WxH``."""
    width, height = size
    return width if width == height else f"{width}x{height}"


def scaled(size: Size, fraction: float) -> Size:
    """``size`` with both sides scaled by ``fraction`` (a lower resolution keeps the aspect ratio)."""
    return max(1, round(size[0] * fraction)), max(1, round(size[1] * fraction))


def of_shape(shape: Sequence[int]) -> Size:
    """The (width, height) of an ``(N, C, H, W)`` input shape."""
    return int(shape[-1]), int(shape[-2])
