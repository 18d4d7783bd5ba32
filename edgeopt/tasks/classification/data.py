"""Datasets for training, calibration and evaluation, held in memory as uint8 images.

Sources:

- ``digits`` — scikit-learn's bundled handwritten digits (8x8 grayscale, 10 classes):
  the built-in demo set, real data that needs no download.
- ``path.npz`` — ``x_train, y_train, x_test, y_test`` (uint8 NHW or NHWC) and optional
  ``classes``, the format of the project's shared datasets; ``extra_train`` files add
  training images.
- a folder — an ImageFolder tree with ``train/`` and ``test/`` (or ``val/``) subfolders,
  or one tree split 80/20, every image resized to ``image_size``.

Images stay uint8 NHWC until ``edgeopt.images.to_input`` turns a batch into the model's float NCHW
input with the InputSpec's preprocessing, so training, evaluation and serving agree.

Example:
    >>> splits = load_dataset("digits")
    >>> splits.train.images.shape[1:], len(splits.classes)
    ((8, 8, 1), 10)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from edgeopt.core.errors import ConfigError, InputError
from edgeopt.images import SUFFIXES
from edgeopt.core.spec import InputSpec, Preprocess
from edgeopt.tasks.base import default_preprocess, input_spec_for



@dataclass(frozen=True)
class ImageDataset:
    """uint8 images (N, H, W, C) with int64 labels (N,) and class names."""

    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.dtype != np.uint8:
            raise ConfigError(f"images must be uint8 NHWC, got {self.images.dtype} {self.images.shape}")
        if len(self.images) != len(self.labels):
            raise ConfigError(f"{len(self.images)} images but {len(self.labels)} labels")
        if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= len(self.classes)):
            raise ConfigError(f"labels must lie in 0..{len(self.classes) - 1}")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def channels(self) -> int:
        return self.images.shape[-1]

    def subset(self, indices: Sequence[int] | np.ndarray) -> "ImageDataset":
        indices = np.asarray(indices, dtype=np.int64)
        return ImageDataset(self.images[indices], self.labels[indices], self.classes)

    def stratified_indices(self, count: int, seed: int) -> np.ndarray:
        """``count`` indices drawn evenly from every class (seeded), in shuffled order."""
        rng = np.random.default_rng(seed)
        per_class = [rng.permutation(np.flatnonzero(self.labels == c)) for c in range(len(self.classes))]
        picked: list[int] = []
        for rank in range(max((len(p) for p in per_class), default=0)):
            picked += [int(p[rank]) for p in per_class if rank < len(p)]
        return rng.permutation(np.asarray(picked[: min(count, len(picked))], dtype=np.int64))

    def split(self, fraction: float, seed: int) -> tuple["ImageDataset", "ImageDataset"]:
        """A stratified (rest, part) split with ``fraction`` of every class in ``part``."""
        if not 0.0 < fraction < 1.0:
            raise ConfigError(f"split fraction must be between 0 and 1, got {fraction}")
        rng = np.random.default_rng(seed)
        part = np.concatenate([
            rng.permutation(idx)[: max(1, round(len(idx) * fraction))]
            for idx in (np.flatnonzero(self.labels == c) for c in range(len(self.classes))) if len(idx)
        ])
        rest = np.setdiff1d(np.arange(len(self)), part)
        return self.subset(rng.permutation(rest)), self.subset(rng.permutation(part))

    def calibration(self, count: int = 300, seed: int = 0) -> "ImageDataset":
        """A stratified calibration subset for INT8 quantization."""
        return self.subset(self.stratified_indices(count, seed))


@dataclass(frozen=True)
class DatasetSplits:
    train: ImageDataset
    test: ImageDataset
    source: str

    @property
    def classes(self) -> tuple[str, ...]:
        return self.train.classes


# -- loading ---------------------------------------------------------------------------
def load_dataset(source: str, extra_train: Sequence[str] = (), image_size: int | None = None,
                 seed: int = 0) -> DatasetSplits:
    """Load ``digits``, an ``.npz`` file or an ImageFolder tree as train/test splits."""
    if source == "digits":
        splits = _digits(seed)
    elif source.lower().endswith(".npz"):
        splits = _npz(Path(source))
    elif Path(source).is_dir():
        splits = _image_folder(Path(source), image_size, seed)
    else:
        raise ConfigError(f"dataset {source!r} not found: use digits, a .npz file, or an ImageFolder directory")
    for extra in extra_train:
        more = _npz(Path(extra)).train
        if more.images.shape[1:] != splits.train.images.shape[1:]:
            raise ConfigError(f"{extra} has images of shape {more.images.shape[1:]}, {source} has {splits.train.images.shape[1:]}")
        train = ImageDataset(np.concatenate([splits.train.images, more.images]),
                             np.concatenate([splits.train.labels, more.labels]), splits.classes)
        splits = DatasetSplits(train, splits.test, splits.source)
    return splits


def _digits(seed: int) -> DatasetSplits:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.clip(digits.images * 16.0, 0, 255).astype(np.uint8)[..., None]  # 0..16 -> 0..255
    full = ImageDataset(images, digits.target.astype(np.int64), tuple(str(c) for c in digits.target_names))
    train, test = full.split(0.2, seed)
    return DatasetSplits(train, test, "digits")


def _npz(path: Path) -> DatasetSplits:
    if not path.is_file():
        raise ConfigError(f"dataset file {path} does not exist")
    try:
        data = np.load(path, allow_pickle=False)
        arrays = {k: data[k] for k in data.files}
    except (ValueError, OSError) as exc:
        raise ConfigError(f"{path} is not a readable .npz of plain arrays ({exc})") from None
    missing = [k for k in ("x_train", "y_train") if k not in arrays]
    if missing:
        raise ConfigError(f"{path} lacks {missing}; expected x_train, y_train, x_test, y_test")

    def images(x: np.ndarray) -> np.ndarray:
        return (x[..., None] if x.ndim == 3 else x).astype(np.uint8)

    labels_all = np.concatenate([arrays["y_train"], arrays.get("y_test", np.empty(0, np.int64))])
    classes = tuple(str(c) for c in arrays["classes"]) if "classes" in arrays else tuple(
        str(c) for c in range(int(labels_all.max()) + 1))
    train = ImageDataset(images(arrays["x_train"]), arrays["y_train"].astype(np.int64), classes)
    if "x_test" in arrays:
        test = ImageDataset(images(arrays["x_test"]), arrays["y_test"].astype(np.int64), classes)
    else:
        train, test = train.split(0.2, seed=0)
    return DatasetSplits(train, test, str(path))


def _image_folder(root: Path, image_size: int | None, seed: int) -> DatasetSplits:
    if image_size is None:
        raise ConfigError(f"{root} is an image folder: give the size to load its images at (--image-size)")
    test_dir = next((root / d for d in ("test", "val") if (root / d).is_dir()), None)
    if (root / "train").is_dir() and test_dir is not None:
        train = _read_tree(root / "train", image_size, None)
        return DatasetSplits(train, _read_tree(test_dir, image_size, train.classes), str(root))
    train, test = _read_tree(root, image_size, None).split(0.2, seed)
    return DatasetSplits(train, test, str(root))


def _read_tree(root: Path, size: int, classes: tuple[str, ...] | None) -> ImageDataset:
    from edgeopt.images import as_channels, decode_as_stored, image_files, resize

    classes = classes or tuple(sorted(d.name for d in root.iterdir() if d.is_dir()))
    if not classes:
        raise ConfigError(f"{root} has no class subfolders (expected {root}/<class>/<image>)")
    images, labels = [], []
    for label, name in enumerate(classes):
        for file in image_files(root / name):
            try:
                pixels = decode_as_stored(file)
            except InputError as exc:
                raise ConfigError(f"{exc}, or remove it from the dataset") from None
            images.append(resize(pixels[..., None] if pixels.ndim == 2 else pixels, size, size))
            labels.append(label)
    if not images:
        raise ConfigError(f"{root} holds no images with suffixes {SUFFIXES}")
    # A tree of grayscale images (steel surfaces, X-rays) stays one channel; any colour image
    # makes the whole set RGB, so every sample has the same shape.
    channels = 1 if all(image.shape[-1] == 1 for image in images) else 3
    return ImageDataset(np.stack([as_channels(image, channels) for image in images]), np.asarray(labels, np.int64),
                        classes)
