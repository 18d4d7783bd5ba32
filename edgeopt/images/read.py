"""The one image reader: every image edgeopt decodes — a training set, calibration, ``predict``,
the server's ``/predict``, a folder streamed — comes in through here, and only as JPEG, PNG, BMP or WebP.

Pillow can read some forty formats, and some of them are programs or lean on other programs
(EPS runs Ghostscript, whose sandbox escapes would become ours; others are rarely exercised
decoders). An image is data from a stranger, so only the decoders edgeopt documents are even
tried (Pillow's ``formats=``), whatever the file is called. The size is read from the header
and checked before a pixel is decoded, so a decompression bomb costs nothing.

Example:
    >>> import io
    >>> from PIL import Image
    >>> png = io.BytesIO(); Image.new("L", (4, 3)).save(png, "PNG")
    >>> decode_image(png.getvalue(), channels=3).shape
    (3, 4, 3)
    >>> decode_image(b"%!PS-Adobe-3.0 EPSF-3.0", channels=3)
    Traceback (most recent call last):
    ...
    edgeopt.core.errors.InputError: the image is not a JPEG, PNG, BMP or WebP image (edgeopt decodes only those); convert it to one of them
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np

from edgeopt.core.errors import InputError

if TYPE_CHECKING:
    from PIL.Image import Image

FORMATS = ("JPEG", "PNG", "BMP", "WEBP")  # Pillow's names for the decoders edgeopt lets run
SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")  # how dataset folders name them
MAX_PIXELS = 64_000_000  # a decoded image larger than this is refused before it fills memory
MAX_FILE_BYTES = 256 << 20  # an image file larger than this is not read (64 MP as an RGB BMP is 192 MB)
GRAY_MODES = ("1", "L", "I", "I;16", "F")  # Pillow modes of single-channel images
KINDS = "JPEG, PNG, BMP or WebP"


@contextlib.contextmanager
def open_image(source: bytes | str | os.PathLike, what: str | None = None,
               max_pixels: int = MAX_PIXELS) -> Iterator["Image"]:
    """``source`` (encoded bytes or a file) opened by Pillow — header read, nothing decoded yet — or one
    InputError saying what is wrong: missing, empty, not one of the four formats, too large, damaged."""
    from PIL import Image as PILImage
    from PIL import UnidentifiedImageError

    if isinstance(source, bytes):
        what, data = what or "the image", source
    else:
        what, data = what or str(source), _read_file(Path(source), what or str(source))
    if not data:
        raise InputError(f"{what} is empty (0 bytes); send a {KINDS} image")
    try:
        with PILImage.open(io.BytesIO(data), formats=FORMATS) as image:
            if image.width * image.height > max_pixels:
                raise InputError(f"{what} is {image.width}x{image.height}, over the {max_pixels:,}-pixel limit; "
                                 "resize it first")
            yield image
    except InputError:
        raise
    except PILImage.DecompressionBombError:
        raise InputError(f"{what} decodes to more than {max_pixels:,} pixels; resize it first") from None
    except UnidentifiedImageError:
        raise InputError(f"{what} is not a {KINDS} image (edgeopt decodes only those); convert it to one of them") \
            from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:  # truncated or corrupt data inside a known format
        raise InputError(f"{what} is a damaged image ({exc}); send an intact {KINDS} image") from None


def _read_file(path: Path, what: str) -> bytes:
    """A regular file's bytes (not a device, a FIFO or a folder: ``/dev/zero`` would never end), capped."""
    if not path.is_file():
        raise InputError(f"{what} does not exist or is not a regular file")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise InputError(f"{what} is {size / 2**20:.0f} MB, over the {MAX_FILE_BYTES >> 20} MB an image file may be")
    return path.read_bytes()


def decode_image(source: bytes | str | os.PathLike, channels: int, what: str | None = None,
                 max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """``source`` decoded to uint8 (H, W, ``channels``): 1 is grayscale, 3 RGB."""
    with open_image(source, what, max_pixels) as image:
        pixels = np.asarray(image.convert("L" if channels == 1 else "RGB"))
    if pixels.size == 0:
        raise InputError(f"{what or 'the image'} has no pixels")
    return pixels[..., None] if pixels.ndim == 2 else pixels


def as_channels(pixels: np.ndarray, channels: int) -> np.ndarray:
    """uint8 RGB (H, W, 3) or gray (H, W, 1) ``pixels`` with ``channels`` channels, converted as
    ``decode_image`` converts a file (Pillow's ITU-R 601 luma): a video frame meets a model as a photo does."""
    from PIL import Image as PILImage

    if pixels.shape[-1] == channels:
        return pixels
    gray = pixels.shape[-1] == 1
    converted = np.asarray(PILImage.fromarray(pixels[..., 0] if gray else pixels, "L" if gray else "RGB").convert(
        "L" if channels == 1 else "RGB"))
    return converted[..., None] if converted.ndim == 2 else converted


def image_files(folder: str | os.PathLike) -> list[Path]:
    """Every image file under ``folder`` (by suffix, recursively), sorted by path."""
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file())


def decode_as_stored(source: str | os.PathLike, what: str | None = None) -> np.ndarray:
    """A dataset's image as it is stored: uint8 (H, W) when single-channel, (H, W, 3) otherwise."""
    with open_image(source, what) as image:
        return np.asarray(image.convert("L" if image.mode in GRAY_MODES else "RGB"))
