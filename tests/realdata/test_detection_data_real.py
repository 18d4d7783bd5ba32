"""The real detection datasets load as their README says: NEU-DET (npz and COCO json agree) and
COCO128 (80 categories, letterboxed). Skipped, with the reason, when ../shared/datasets is absent."""

from __future__ import annotations

import numpy as np
import pytest

from edgeopt.tasks.detection.data import load_detection
from tests.helpers import DATASETS

pytestmark = pytest.mark.skipif(not (DATASETS / "neu_det").is_dir(),
                                reason=f"real datasets not found at {DATASETS} (neu_det, coco128)")


def test_neu_det_npz_and_coco_json_give_the_same_boxes(monkeypatch):
    from edgeopt.tasks.detection.data import _coco  # the json on its own, beside the folder's npz

    splits = load_detection(str(DATASETS / "neu_det"), None)
    assert (len(splits.train), len(splits.test)) == (1440, 360)
    assert sum(len(b) for b in splits.train.boxes) == 3330 and sum(len(b) for b in splits.test.boxes) == 859
    assert splits.train.images.shape[1:] == (128, 128, 1) and len(splits.classes) == 6
    # The json's images point into the npz, read once per image: np.load's NpzFile inflates the whole
    # compressed x_test array on every read (12 s for 360 images). The same arrays, each inflated once:
    read_npz = np.load

    def npz_read_once(file, *args, **kwargs):
        loaded = read_npz(file, *args, **kwargs)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            return loaded
        with loaded:
            return {name: loaded[name] for name in loaded.files}

    monkeypatch.setattr(np, "load", npz_read_once)
    from_json = _coco(DATASETS / "neu_det" / "instances_test.json", None, None)
    for boxes, labels, json_boxes, json_labels in zip(splits.test.boxes, splits.test.box_labels, from_json.boxes,
                                                      from_json.box_labels):
        np.testing.assert_allclose(np.sort(boxes, axis=0), np.sort(json_boxes, axis=0), atol=0.02)
        assert sorted(labels) == sorted(json_labels)


@pytest.mark.skipif(not (DATASETS / "coco128").is_dir(), reason="coco128 not found")
def test_coco128_letterboxes_to_the_model_size_with_its_boxes():
    splits = load_detection(str(DATASETS / "coco128" / "instances_train2017.json"), 320)
    assert len(splits.train) + len(splits.test) == 128 and len(splits.classes) == 80
    assert splits.train.images.shape[1:] == (320, 320, 3)
    boxes = np.concatenate([*splits.train.boxes, *splits.test.boxes])
    assert len(boxes) == 939 and boxes.min() >= 0 and boxes.max() <= 320
