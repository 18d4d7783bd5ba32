"""Drawing results on images (Pillow): boxes with their labels, a caption. Tasks draw with these;
``predict --annotate``, the stream's annotated video and the search report show what they draw.

Example:
    >>> import numpy as np
    >>> canvas = draw_boxes(np.zeros((32, 32, 1), np.uint8), np.asarray([[4, 4, 20, 20]]), ["crazing 0.91"], [0])
    >>> canvas.shape, int(canvas[4, 10].max()) > 0
    ((32, 32, 3), True)
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180)]
TRUTH, FOUND = (40, 200, 40), (230, 30, 30)  # a comparison's true boxes and the model's


def as_rgb(image: np.ndarray, zoom: int = 1) -> np.ndarray:
    """A uint8 RGB copy of (H, W, 1 or 3) ``image``, enlarged ``zoom`` times (nearest: pixels stay visible)."""
    rgb = np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image.copy()
    return rgb.repeat(zoom, axis=0).repeat(zoom, axis=1) if zoom != 1 else rgb


def draw_boxes(image: np.ndarray, boxes: np.ndarray, texts: Sequence[str], colours: Sequence[int | tuple],
               zoom: int = 1) -> np.ndarray:
    """``image`` as RGB (``as_rgb``) with xyxy ``boxes`` (image pixels) outlined, each with its text; a
    colour is an RGB tuple or a class index into ``PALETTE``."""
    from PIL import Image, ImageDraw

    canvas = Image.fromarray(as_rgb(image, zoom))
    draw = ImageDraw.Draw(canvas)
    for box, text, colour in zip(np.asarray(boxes, np.float64).reshape(-1, 4) * zoom, texts, colours):
        colour = PALETTE[int(colour) % len(PALETTE)] if not isinstance(colour, tuple) else colour
        draw.rectangle([float(v) for v in box], outline=colour, width=2)
        if text:
            draw.text((float(box[0]) + 3, float(box[1]) + 2), text, fill=colour)
    return np.asarray(canvas)


def caption(image: np.ndarray, text: str) -> np.ndarray:
    """``image`` as RGB with ``text`` written in its top-left corner (a classifier's answer)."""
    from PIL import Image, ImageDraw

    canvas = Image.fromarray(as_rgb(image))
    draw = ImageDraw.Draw(canvas)
    left, top, right, bottom = draw.textbbox((2, 2), text)
    draw.rectangle([left - 2, top - 2, right + 2, bottom + 2], fill=(0, 0, 0))
    draw.text((2, 2), text, fill=(255, 255, 255))
    return np.asarray(canvas)


def class_name(labels: Sequence[str] | None, label: int) -> str:
    return labels[int(label)] if labels and 0 <= int(label) < len(labels) else str(int(label))


def save_image(pixels: np.ndarray, out: Path) -> Path:
    """``pixels`` written to ``out`` (PNG or JPEG by its suffix), its folder made."""
    from PIL import Image

    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(out)
    return out
