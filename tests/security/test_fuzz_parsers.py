"""Property-based fuzzing (hypothesis) of everything that parses user or file input: whatever it is
given, a parser returns a value or raises edgeopt's own error (one sentence) — never another exception,
which the command line would print as a traceback."""

from __future__ import annotations

import json
import string

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeopt.core.errors import EdgeoptError

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None,
                derandomize=True)
TEXT = st.text(alphabet=string.printable + "×µ…\u202e", max_size=40)
JSON = st.recursive(st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=True) | TEXT,
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4), max_leaves=20)


def only_our_errors(call, *args):
    try:
        return call(*args)
    except EdgeoptError as exc:
        assert str(exc).strip() and "\n" not in str(exc).strip(), repr(exc)
        return None


@FUZZ
@given(TEXT)
def test_durations_counts_and_shapes_parse_or_say_why(text):
    from edgeopt.cli.common import parse_count, parse_int_list
    from edgeopt.search import parse_duration
    from edgeopt.core.spec import InputSpec

    seconds = only_our_errors(parse_duration, text)
    assert seconds is None or seconds > 0
    sizes = only_our_errors(parse_int_list, text, "--batch")
    assert sizes is None or all(isinstance(s, int) and s > 0 for s in sizes)
    only_our_errors(parse_count, text, "--samples")
    spec = only_our_errors(InputSpec.parse, text)
    assert spec is None or all(isinstance(d, int) for d in spec.shape)


@FUZZ
@given(st.one_of(JSON, st.fixed_dictionaries({
    "schema": st.integers(-2, 3) | TEXT, "backend": TEXT | st.sampled_from(["onnxruntime", "openvino"]),
    "precision": TEXT, "input": JSON, "outputs": JSON, "entry": TEXT | st.just("model.onnx"),
    "files": st.dictionaries(TEXT | st.sampled_from(["model.onnx", "../x", "/etc/passwd", "a/../../b"]), JSON, max_size=3)})))
def test_manifests_parse_or_are_refused(data):
    from edgeopt.core.artifact import parse_manifest

    manifest = only_our_errors(parse_manifest, json.dumps(data).encode(), "manifest.json")
    if manifest is not None:
        assert all(".." not in name and not name.startswith("/") for name in manifest["files"])


@FUZZ
@given(st.binary(max_size=2048))
def test_bundles_and_file_heads_parse_or_are_refused(data):
    from edgeopt.core.bundle import BundleLimits, read_bundle
    from edgeopt.core.formats import sniff_bytes

    only_our_errors(read_bundle, data, BundleLimits(max_bytes=1 << 20))
    only_our_errors(sniff_bytes, data[:64], len(data))


@FUZZ
@given(st.one_of(JSON, st.fixed_dictionaries({"format": st.integers(0, 3), "model": TEXT, "data": TEXT,
                                              "steps": JSON, "export": JSON, "seed": JSON})))
def test_recipes_parse_or_are_refused(data):
    from edgeopt.pipeline.recipe import Recipe

    only_our_errors(Recipe.from_dict, data) if isinstance(data, dict) else None


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    from PIL import Image

    folder = tmp_path_factory.mktemp("coco")
    (folder / "images").mkdir()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(folder / "images" / "a.png")
    return folder


@FUZZ
@given(data=st.one_of(JSON, st.fixed_dictionaries({
    "images": st.lists(st.fixed_dictionaries({"id": JSON, "file_name": st.just("a.png") | TEXT}), max_size=3) | JSON,
    "annotations": st.lists(st.fixed_dictionaries({"id": JSON, "image_id": JSON, "category_id": JSON,
                                                   "bbox": JSON | st.lists(st.floats(-1e6, 1e6), min_size=4, max_size=4)}),
                            max_size=3) | JSON,
    "categories": st.lists(st.fixed_dictionaries({"id": JSON, "name": JSON}), max_size=3) | JSON})))
def test_coco_annotations_load_or_are_refused(image_folder, data):
    from edgeopt.tasks.detection.data import load_detection

    path = image_folder / "annotations.json"
    path.write_text(json.dumps(data))
    only_our_errors(load_detection, str(path), 16)


@FUZZ
@given(st.lists(TEXT, max_size=5))
def test_yolo_labels_load_or_are_refused(tmp_path_factory, lines):
    from PIL import Image

    from edgeopt.tasks.detection.data import load_detection

    root = tmp_path_factory.mktemp("yolo")
    (root / "images").mkdir()
    (root / "labels").mkdir()
    for name in ("a", "b"):
        Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(root / "images" / f"{name}.png")
        (root / "labels" / f"{name}.txt").write_text("\n".join(lines))
    (root / "classes.txt").write_text("square\nframe\n")
    only_our_errors(load_detection, str(root), 16)
