"""Images: the one reader (``read``: four formats, a decompression-bomb limit, one list of
suffixes, gray/RGB rules) and the one fitting of pixels to a model's input (``fit``: resize,
letterbox, normalise), used by training, evaluation, calibration, predict, serve and stream."""

from edgeopt.images.fit import PAD_VALUE, Fitted, fit_image, letterbox, letterbox_geometry, resize, to_input
from edgeopt.images.read import (
    FORMATS,
    GRAY_MODES,
    MAX_PIXELS,
    SUFFIXES,
    as_channels,
    decode_as_stored,
    decode_image,
    image_files,
    open_image,
)

__all__ = ["FORMATS", "GRAY_MODES", "MAX_PIXELS", "PAD_VALUE", "SUFFIXES", "Fitted", "as_channels", "decode_as_stored",
           "decode_image", "fit_image", "image_files", "letterbox", "letterbox_geometry", "open_image", "resize", "to_input"]
