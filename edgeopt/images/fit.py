"""The one way pixels meet a model's input: resized (stretched or letterboxed) and normalised.

Training, evaluation, calibration, ``predict``, the server and the stream all fit images here,
so a served model sees the pixels it was scored on. Resizing is Pillow's bilinear filter on
uint8 pixels (antialiased when shrinking), never torch: an edge box runs this without torch.

Example:
    >>> import numpy as np
    >>> from edgeopt.core.spec import InputSpec, Preprocess
    >>> spec = InputSpec((1, 1, 4, 4), preprocess=Preprocess(mean=(0.0,), std=(1.0,), channels="GRAY"))
    >>> fitted = fit_image(np.full((2, 8, 1), 255, np.uint8), spec)
    >>> fitted.input.shape, float(fitted.input.max()), fitted.scale
    ((1, 1, 4, 4), 1.0, (0.5, 2.0))
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeopt.core.errors import ConfigError
from edgeopt.core.size import Size, parse_size
from edgeopt.core.spec import InputSpec, Preprocess

PAD_VALUE = 114  # the letterbox border (YOLO's grey)


def resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """uint8 (H, W, C) ``image`` resized to ``width`` x ``height`` (bilinear, antialiased when shrinking)."""
    from PIL import Image

    if image.shape[:2] == (height, width):
        return image
    gray = image.shape[-1] == 1
    resized = np.asarray(Image.fromarray(image[..., 0] if gray else image, "L" if gray else "RGB").resize(
        (width, height), Image.BILINEAR))
    return resized[..., None] if gray else resized


def letterbox_geometry(width: int, height: int, size: "int | Size") -> tuple[float, tuple[int, int], tuple[int, int]]:
    """How a ``width`` x ``height`` image sits in a ``size`` box (a side, or (width, height)):
    (scale, its new (w, h), padding (x, y)). An image of the box's own shape is only scaled."""
    box_w, box_h = parse_size(size)
    if (width, height) == (box_w, box_h):
        return 1.0, (box_w, box_h), (0, 0)
    scale = min(box_w / width, box_h / height)
    new_w, new_h = min(box_w, max(1, round(width * scale))), min(box_h, max(1, round(height * scale)))
    return scale, (new_w, new_h), ((box_w - new_w) // 2, (box_h - new_h) // 2)


def letterbox(image: np.ndarray, size: "int | Size") -> tuple[np.ndarray, float, tuple[float, float]]:
    """``image`` (H, W, C) scaled to fit a ``size`` box (a side, or (width, height)) and padded:
    (image, scale, (pad x, pad y))."""
    height, width = image.shape[:2]
    box_w, box_h = parse_size(size)
    if (height, width) == (box_h, box_w):
        return image, 1.0, (0.0, 0.0)
    scale, (new_w, new_h), (pad_x, pad_y) = letterbox_geometry(width, height, (box_w, box_h))
    canvas = np.full((box_h, box_w, image.shape[-1]), PAD_VALUE, np.uint8)
    canvas[pad_y:pad_y + new_h, pad_x:pad_x + new_w] = resize(image, new_w, new_h)
    return canvas, scale, (float(pad_x), float(pad_y))


@dataclass(frozen=True)
class Fitted:
    """An image fitted to the input, and how to map the input's pixels back to the image's."""

    input: np.ndarray  # (1, C, H, W) float32
    scale: tuple[float, float]  # input px per image px (x, y)
    pad: tuple[float, float]  # input px of padding (x, y)
    size: tuple[int, int]  # the image's (width, height)

    @classmethod
    def stretched(cls, size: tuple[int, int], spec: InputSpec) -> "Fitted":
        """How an image of ``size`` (width, height) stretched to ``spec``'s input maps back (its input not kept)."""
        height, width = spec.shape[2:4]
        return cls(np.empty(0, np.float32), (width / size[0], height / size[1]), (0.0, 0.0), size)

    def then(self, inner: "Fitted") -> "Fitted":
        """This mapping followed by ``inner`` (the result of this one fitted again): one image's way into a model
        fed a dataset image that was itself resized or letterboxed from the original."""
        scale = (self.scale[0] * inner.scale[0], self.scale[1] * inner.scale[1])
        pad = (self.pad[0] * inner.scale[0] + inner.pad[0], self.pad[1] * inner.scale[1] + inner.pad[1])
        return Fitted(inner.input, scale, pad, self.size)

    def to_image(self, boxes: np.ndarray) -> np.ndarray:
        """(N, 4) xyxy boxes in the input's pixels, in the image's pixels (clipped to it)."""
        offset = np.asarray([*self.pad, *self.pad], np.float32)
        scale = np.asarray([*self.scale, *self.scale], np.float32)
        width, height = self.size
        return np.clip((boxes - offset) / scale, 0, [width, height, width, height]).astype(np.float32)


def fit_image(image: np.ndarray, spec: InputSpec) -> Fitted:
    """``image`` (H, W, C) as the model's input batch of one, stretched or letterboxed as ``spec`` says."""
    height, width = spec.shape[2:4]
    size = (image.shape[1], image.shape[0])
    if spec.preprocess is not None and spec.preprocess.fit == "letterbox":
        fitted, scale, pad = letterbox(image, (width, height))
        return Fitted(to_input(fitted[None], spec), (scale, scale), pad, size)
    fitted = resize(image, width, height)
    return Fitted(to_input(fitted[None], spec), (width / size[0], height / size[1]), (0.0, 0.0), size)


def to_input(images: np.ndarray, spec: InputSpec) -> np.ndarray:
    """uint8 NHWC images -> the model's float32 NCHW input: each image stretched to the input's size
    (``resize``: a dataset stored at another size meets the model as one image would), scaled, normalised."""
    if images.ndim != 4 or images.shape[-1] != spec.shape[1]:
        raise ConfigError(f"images of shape {images.shape} do not fit input {spec.shape} (channels last expected)")
    height, width = spec.shape[2:4]
    if images.shape[1:3] != (height, width):
        images = np.stack([resize(image, width, height) for image in images])
    preprocess = spec.preprocess or Preprocess(mean=(0.0,) * spec.shape[1], std=(1.0,) * spec.shape[1])
    batch = images.astype(np.float32).transpose(0, 3, 1, 2) * np.float32(preprocess.scale)
    mean = np.asarray(preprocess.mean, np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(preprocess.std, np.float32).reshape(1, -1, 1, 1)
    return np.ascontiguousarray((batch - mean) / std, dtype=np.float32)
