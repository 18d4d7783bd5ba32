"""Detection datasets: images with boxes, held in memory at the model's input size.

Sources:

- an ``.npz`` with ``x_<split>`` images and ``boxes_<split>`` (xyxy), ``box_labels_<split>``,
  ``box_image_index_<split>`` (the NEU-DET layout of the shared datasets), or a folder holding one;
- a COCO json (``bbox`` = x, y, w, h in pixels) with its images in the json's folder or its
  ``images/`` subfolder — a folder with ``instances_train.json`` and ``instances_test.json``
  (or ``instances_val.json``) gives both splits, a single json is split 80/20 (seeded);
- a YOLO folder: ``images/`` and ``labels/`` (one ``.txt`` per image: ``class cx cy w h``,
  normalised) with class names in ``classes.txt``, split 80/20.

Every image is letterboxed to the model's input (scaled to fit, padded with grey; square, or a
rectangle such as 320x240 for a camera's frames) and its boxes moved with it, so boxes are
always in input pixels. A box outside its image,
of zero or negative size, or of an unknown class is refused with the file and annotation
named; an image without boxes is a valid negative example.

Example:
    >>> splits = load_detection("../shared/datasets/neu_det", size=128)    # doctest: +SKIP
    >>> len(splits.test), splits.test.boxes[0]                               # doctest: +SKIP
    (360, array([[ 1.28,  1.28, 123.52, 124.16]], dtype=float32))
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgeopt.core.errors import ConfigError, EdgeoptError, InputError
from edgeopt.core.size import Size, SizeLike, parse_size
from edgeopt.images import SUFFIXES, as_channels, decode_as_stored, image_files, letterbox

EDGE_TOLERANCE = 1.0  # px a box may stick out of its image (annotation tools round outwards)


@dataclass(frozen=True, eq=False)
class DetectionDataset:
    """uint8 images (N, H, W, C) with per-image boxes (K, 4) xyxy in pixels and labels (K,)."""

    images: np.ndarray
    boxes: tuple[np.ndarray, ...]
    box_labels: tuple[np.ndarray, ...]
    classes: tuple[str, ...]
    names: tuple[str, ...] = ()
    sizes: tuple[tuple[int, int], ...] = ()  # each image's own (width, height) before it was letterboxed

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.dtype != np.uint8:
            raise ConfigError(f"images must be uint8 NHWC, got {self.images.dtype} {self.images.shape}")
        if not len(self.images) == len(self.boxes) == len(self.box_labels):
            raise ConfigError(f"{len(self.images)} images but {len(self.boxes)} box lists")
        if not self.names:
            object.__setattr__(self, "names", tuple(f"image {i}" for i in range(len(self.images))))
        if not self.sizes:
            object.__setattr__(self, "sizes", ((self.images.shape[2], self.images.shape[1]),) * len(self.images))

    def __len__(self) -> int:
        return len(self.images)

    @property
    def channels(self) -> int:
        return self.images.shape[-1]

    @property
    def labels(self) -> np.ndarray:
        """Every box's class, concatenated (what a fingerprint of the annotations hashes)."""
        return np.concatenate([*self.box_labels, np.empty(0, np.int64)]).astype(np.int64)

    def subset(self, indices: Sequence[int] | np.ndarray) -> "DetectionDataset":
        indices = [int(i) for i in np.asarray(indices, dtype=np.int64)]
        return DetectionDataset(self.images[indices], tuple(self.boxes[i] for i in indices),
                                tuple(self.box_labels[i] for i in indices), self.classes,
                                tuple(self.names[i] for i in indices), tuple(self.sizes[i] for i in indices))

    def stratified_indices(self, count: int, seed: int) -> np.ndarray:
        """``count`` images in a seeded random order (boxes of many classes share an image: no strata)."""
        return np.random.default_rng(seed).permutation(len(self))[: min(count, len(self))]

    def split(self, fraction: float, seed: int) -> tuple["DetectionDataset", "DetectionDataset"]:
        """A seeded random (rest, part) split with ``fraction`` of the images in ``part``."""
        if not 0.0 < fraction < 1.0:
            raise ConfigError(f"split fraction must be between 0 and 1, got {fraction}")
        order = np.random.default_rng(seed).permutation(len(self))
        cut = max(1, round(len(self) * fraction))
        return self.subset(order[cut:]), self.subset(order[:cut])

    def calibration(self, count: int = 300, seed: int = 0) -> "DetectionDataset":
        return self.subset(self.stratified_indices(count, seed))

    def to_coco(self) -> dict[str, Any]:
        """The ground truth as a COCO dict (image id = row, category id = class index)."""
        height, width = self.images.shape[1:3]
        images = [{"id": i, "width": int(width), "height": int(height), "file_name": name}
                  for i, name in enumerate(self.names)]
        annotations = []
        for image_id, (boxes, labels) in enumerate(zip(self.boxes, self.box_labels)):
            for box, label in zip(boxes.astype(np.float64), labels):
                w, h = box[2] - box[0], box[3] - box[1]
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": int(label),
                                    "bbox": [box[0], box[1], w, h], "area": w * h, "iscrowd": 0})
        categories = [{"id": i, "name": name} for i, name in enumerate(self.classes)]
        return {"images": images, "annotations": annotations, "categories": categories}


@dataclass(frozen=True)
class DetectionSplits:
    train: DetectionDataset
    test: DetectionDataset
    source: str

    @property
    def classes(self) -> tuple[str, ...]:
        return self.train.classes


# -- loading ---------------------------------------------------------------------------
def load_detection(source: str, size: "SizeLike | None", channels: int | None = None, seed: int = 0) -> DetectionSplits:
    """Train/test splits of ``source`` letterboxed to ``size`` (a side, ``WxH`` or (width, height); None: the
    images' own size, when they all share one); ``channels``: 1 or 3 (None: as stored). Malformed
    annotations raise ConfigError."""
    wanted = parse_size(size)  # a bad size is its own error, not a malformed dataset
    try:
        return _load_detection(source, wanted, channels, seed)
    except EdgeoptError:
        raise
    except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:  # a structure the readers did not expect
        raise ConfigError(f"detection dataset {source}: its annotations are malformed ({type(exc).__name__}: "
                          f"{str(exc)[:120]}); check it against the COCO or YOLO layout") from None


def _load_detection(source: str, size: Size | None, channels: int | None, seed: int) -> DetectionSplits:
    path = Path(source)
    if path.is_dir():
        npz = sorted(p for p in path.glob("*.npz") if _has_boxes(p))
        if npz:
            return _npz(npz[0], size, channels)
        jsons = {p.stem: p for p in path.glob("*.json")}
        train = next((jsons[k] for k in ("instances_train", "train") if k in jsons), None)
        test = next((jsons[k] for k in ("instances_test", "instances_val", "test", "val") if k in jsons), None)
        if train and test:
            return DetectionSplits(_coco(train, size, channels), _coco(test, size, channels), str(path))
        if (path / "labels").is_dir():
            return _split(_yolo(path, size, channels), seed, str(path))
        coco = [p for p in jsons.values() if _is_coco(p)]
        if len(coco) == 1:
            return _split(_coco(coco[0], size, channels), seed, str(path))
        raise ConfigError(f"{path} holds no detection dataset: expected an .npz with boxes, instances_train.json and "
                          "instances_test.json (COCO), one COCO json, or images/ with YOLO labels/")
    if path.suffix.lower() == ".npz" and path.is_file():
        return _npz(path, size, channels)
    if path.suffix.lower() == ".json" and path.is_file():
        return _split(_coco(path, size, channels), seed, str(path))
    raise ConfigError(f"detection dataset {source!r} not found: give a COCO json, a folder of them, an .npz with "
                      "boxes, or a YOLO folder")


def _split(dataset: DetectionDataset, seed: int, source: str) -> DetectionSplits:
    train, test = dataset.split(0.2, seed)
    return DetectionSplits(train, test, source)


def _has_boxes(path: Path) -> bool:
    try:
        with np.load(path, allow_pickle=False) as data:
            return "boxes_train" in data.files
    except (OSError, ValueError):
        return False


def _is_coco(path: Path) -> bool:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "annotations" in data and "images" in data


def _npz(path: Path, size: Size | None, channels: int | None) -> DetectionSplits:
    try:
        data = np.load(path, allow_pickle=False)
        arrays = {k: data[k] for k in data.files}
    except (ValueError, OSError) as exc:
        raise ConfigError(f"{path} is not a readable .npz of plain arrays ({exc})") from None
    classes = tuple(str(c) for c in arrays["classes"]) if "classes" in arrays else None

    def split(name: str) -> DetectionDataset:
        needed = [f"{k}_{name}" for k in ("x", "boxes", "box_labels", "box_image_index")]
        missing = [k for k in needed if k not in arrays]
        if missing:
            raise ConfigError(f"{path} lacks {missing}; a detection .npz holds x_, boxes_, box_labels_ and "
                              "box_image_index_ arrays per split")
        images = arrays[f"x_{name}"]
        images = images[..., None] if images.ndim == 3 else images
        index, boxes, labels = (arrays[f"box_image_index_{name}"], arrays[f"boxes_{name}"].astype(np.float32),
                                arrays[f"box_labels_{name}"].astype(np.int64))
        names = tuple(str(n) for n in arrays.get(f"files_{name}", [f"{path.name}:{name}[{i}]" for i in range(len(images))]))
        known = classes or tuple(str(c) for c in range(int(labels.max(initial=-1)) + 1))
        records = []
        for i in range(len(images)):
            mine = index == i
            records.append((images[i], boxes[mine], labels[mine], names[i], [f"box {k}" for k in np.flatnonzero(mine)]))
        return _assemble(records, known, size, channels, f"{path} ({name} split)")

    return DetectionSplits(split("train"), split("test"), str(path))


def _coco(path: Path, size: Size | None, channels: int | None) -> DetectionDataset:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path} is not a readable COCO json ({exc})") from None
    if not isinstance(data, dict) or not all(k in data for k in ("images", "annotations", "categories")):
        raise ConfigError(f"{path} is not COCO: it needs images, annotations and categories")
    categories = sorted(data["categories"], key=lambda c: c["id"])
    index_of = {c["id"]: i for i, c in enumerate(categories)}
    classes = tuple(str(c["name"]) for c in categories)
    folder = next((d for d in (path.parent / "images", path.parent) if d.is_dir()), path.parent)
    npz = next(iter(sorted(path.parent.glob("*.npz"))), None)
    by_image: dict[Any, list[dict[str, Any]]] = {image["id"]: [] for image in data["images"]}
    for ann in data["annotations"]:
        if ann.get("image_id") not in by_image:
            raise ConfigError(f"{path}: annotation {ann.get('id')} refers to image {ann.get('image_id')}, which the "
                              "file does not list")
        by_image[ann["image_id"]].append(ann)
    records = []
    stored = None
    for image in data["images"]:
        anns = by_image[image["id"]]
        for ann in anns:
            if ann.get("category_id") not in index_of:
                raise ConfigError(f"{path}: annotation {ann.get('id')} (image {image.get('file_name')}) has category "
                                  f"{ann.get('category_id')}, which is not among the file's categories; fix or remove it")
        boxes = np.asarray([_xywh_to_xyxy(ann, path, image) for ann in anns], np.float32).reshape(-1, 4)
        labels = np.asarray([index_of[ann["category_id"]] for ann in anns], np.int64)
        if "npz_index" in image and npz is not None:  # the shared NEU-DET json points into its npz
            stored = stored if stored is not None else np.load(npz, allow_pickle=False)
            split = "train" if "train" in path.stem else "test"
            pixels = stored[f"x_{split}"][image["npz_index"]]
        else:
            pixels = _read_image(_inside(folder, image.get("file_name"), path))
        records.append((pixels, boxes, labels, str(image.get("file_name", image["id"])),
                        [f"annotation {ann.get('id')}" for ann in anns]))
    return _assemble(records, classes, size, channels, str(path))


def _xywh_to_xyxy(ann: dict[str, Any], path: Path, image: dict[str, Any]) -> list[float]:
    bbox = ann.get("bbox")
    if not isinstance(bbox, list) or len(bbox) != 4 or not all(isinstance(v, (int, float)) for v in bbox):
        raise ConfigError(f"{path}: annotation {ann.get('id')} (image {image.get('file_name')}) has bbox {bbox!r}; "
                          "COCO boxes are [x, y, width, height]")
    x, y, w, h = bbox
    return [x, y, x + w, y + h]


def _yolo(root: Path, size: Size | None, channels: int | None) -> DetectionDataset:
    names_file = root / "classes.txt"
    if not names_file.is_file():
        raise ConfigError(f"{root} has YOLO labels but no classes.txt naming the classes (one per line)")
    classes = tuple(line.strip() for line in names_file.read_text().splitlines() if line.strip())
    image_dir = root / "images" if (root / "images").is_dir() else root
    records = []
    for file in image_files(image_dir):
        pixels = _read_image(file)
        height, width = pixels.shape[:2]
        label_file = root / "labels" / file.relative_to(image_dir).with_suffix(".txt")
        rows = []
        if label_file.is_file():
            for number, line in enumerate(label_file.read_text().splitlines(), 1):
                parts = line.split()
                if not parts:
                    continue
                try:
                    cls, cx, cy, w, h = int(parts[0]), *(float(v) for v in parts[1:5])
                except (ValueError, TypeError):
                    raise ConfigError(f"{label_file}:{number}: {line!r} is not 'class cx cy w h'") from None
                rows.append((cls, [(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width,
                                   (cy + h / 2) * height], f"line {number} of {label_file.name}"))
        boxes = np.asarray([r[1] for r in rows], np.float32).reshape(-1, 4)
        labels = np.asarray([r[0] for r in rows], np.int64)
        records.append((pixels, boxes, labels, str(file.relative_to(root)), [r[2] for r in rows]))
    if not records:
        raise ConfigError(f"{image_dir} holds no images with suffixes {SUFFIXES}")
    return _assemble(records, classes, size, channels, str(root))


def _inside(folder: Path, name: object, where: Path) -> Path:
    """The image a COCO file names: a relative path inside the dataset's folder (annotations are data from
    elsewhere too: they name no file outside the dataset)."""
    if not isinstance(name, str) or not name or Path(name).is_absolute() or ".." in Path(name).parts:
        raise ConfigError(f"{where}: image file_name {name!r} is not a relative path inside {folder}; "
                          "a dataset's annotations may only name its own images")
    return folder / name


def _read_image(file: Path) -> np.ndarray:
    try:
        return decode_as_stored(file, f"image {file} listed by the dataset")
    except InputError as exc:
        raise ConfigError(f"{exc}, or remove it from the dataset") from None


# -- checking and letterboxing -----------------------------------------------------------
def check_boxes(boxes: np.ndarray, labels: np.ndarray, classes: int, height: int, width: int, where: str,
                names: Sequence[str]) -> None:
    """Refuse a box outside its image, of zero or negative size, or of an unknown class (naming it)."""
    for box, label, name in zip(boxes, labels, names):
        x0, y0, x1, y1 = (float(v) for v in box)
        problem = None
        if not np.isfinite(box).all():
            problem = "has a non-finite coordinate"
        elif x1 <= x0 or y1 <= y0:
            problem = f"has zero or negative size ({x1 - x0:g} x {y1 - y0:g})"
        elif x0 < -EDGE_TOLERANCE or y0 < -EDGE_TOLERANCE or x1 > width + EDGE_TOLERANCE or y1 > height + EDGE_TOLERANCE:
            problem = f"lies outside the {width}x{height} image ([{x0:g}, {y0:g}, {x1:g}, {y1:g}])"
        elif not 0 <= int(label) < classes:
            problem = f"has class {int(label)}, outside 0..{classes - 1}"
        if problem:
            raise ConfigError(f"{where}: {name} {problem}; fix or remove that annotation")


def _assemble(records: list[tuple[np.ndarray, np.ndarray, np.ndarray, str, list[str]]], classes: tuple[str, ...],
              size: Size | None, channels: int | None, where: str) -> DetectionDataset:
    images, boxes, labels, names, sizes = [], [], [], [], []
    if size is None:
        shapes = {r[0].shape[:2] for r in records}
        if len(shapes) != 1:
            raise ConfigError(f"the images of {where} differ in size; give the size to letterbox them to "
                              "(--input-size 320 for a square, 320x240 for a rectangle)")
        height, width = next(iter(shapes))
        size = (width, height)
    want = channels or (1 if all(r[0].ndim == 2 or r[0].shape[-1] == 1 for r in records) else 3)
    for pixels, image_boxes, image_labels, name, box_names in records:
        pixels = pixels[..., None] if pixels.ndim == 2 else pixels
        check_boxes(image_boxes, image_labels, len(classes), pixels.shape[0], pixels.shape[1], f"{where}, {name}", box_names)
        if pixels.shape[-1] != want:
            pixels = as_channels(pixels, want)
        fitted, scale, (pad_x, pad_y) = letterbox(pixels, size)
        clipped = np.clip(image_boxes, 0, [pixels.shape[1], pixels.shape[0]] * 2)
        images.append(fitted)
        boxes.append((clipped * scale + [pad_x, pad_y, pad_x, pad_y]).astype(np.float32))
        labels.append(image_labels.astype(np.int64))
        names.append(name)
        sizes.append((pixels.shape[1], pixels.shape[0]))
    return DetectionDataset(np.stack(images), tuple(boxes), tuple(labels), classes, tuple(names), tuple(sizes))
