"""The seams hold: what a model's outputs mean is the task's business, and pixels take one road.

Static checks over edgeopt's source (``ast``: nothing is imported or run), so a change that reaches
around a seam fails here, naming the file and line.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "edgeopt"
TASKS = ROOT / "tasks"
IMAGES = ROOT / "images"


def _sources(skip: Path | None = None):
    for path in sorted(ROOT.rglob("*.py")):
        if skip is None or skip not in path.parents:
            yield path, ast.parse(path.read_text(), str(path))


def _where(path: Path, node: ast.AST) -> str:
    return f"{path.relative_to(ROOT.parent)}:{node.lineno}"


def test_no_module_outside_the_tasks_reads_the_head_record():
    """The head (anchors, thresholds, convention) is read by ``task_of`` and the detection task alone:
    ``manifest["head"]``, ``manifest.get("head")`` and ``model.head`` lookups elsewhere go around the task."""
    found = []
    for path, tree in _sources(skip=TASKS):
        for node in ast.walk(tree):
            key = None
            if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
                key = node.slice.value
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" \
                    and node.args and isinstance(node.args[0], ast.Constant):
                key = node.args[0].value
            if key == "head":
                found.append(_where(path, node))
    # where heads are made and stored (a model source that builds a detector, the export that writes the
    # manifest, the checkpoint that saves it) is not reading them to decide what outputs mean
    allowed = {"edgeopt/models/sources.py", "edgeopt/compile.py"}
    found = [w for w in found if w.rsplit(":", 1)[0] not in allowed]
    assert not found, "reads the head record outside edgeopt/tasks (ask tasks.task_of(...)): " + ", ".join(found)


def test_nothing_asks_which_kind_of_model_by_a_task_name_or_a_detail_key():
    """``task == "detection"`` or ``"per_class_map" in details`` outside the tasks is a task decision made
    elsewhere: the next task would have to edit that file."""
    found = []
    for path, tree in _sources(skip=TASKS):
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare) and any(isinstance(c, ast.Constant) and c.value in
                                                     ("detection", "classification", "per_class_map")
                                                     for c in [node.left, *node.comparators]):
                found.append(_where(path, node))
    assert not found, "decides by task name outside edgeopt/tasks: " + ", ".join(found)


def test_images_are_decoded_and_resized_only_in_edgeopt_images():
    """Pillow's ``Image.open``/``.resize`` and OpenCV's ``imread``/``resize`` and torch's ``interpolate``
    appear nowhere else: a served model sees the pixels it was scored on."""
    calls = {"open", "resize", "imread", "imdecode", "interpolate"}
    found = []
    for path, tree in _sources(skip=IMAGES):
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in calls:
                owner = node.func.value
                name = owner.id if isinstance(owner, ast.Name) else getattr(owner, "attr", "")
                if name in ("Image", "PILImage", "cv2", "F") or (node.func.attr == "resize" and name == "image"):
                    found.append(f"{_where(path, node)} {name}.{node.func.attr}")
    # drawing.py draws on a canvas it made itself; kd.py resizes feature maps, and a training batch for the
    # teacher's eyes during distillation (inside one training step: no model is scored or served on it)
    allowed = {"edgeopt/tasks/drawing.py", "edgeopt/passes/kd.py"}
    found = [w for w in found if w.split(":", 1)[0] not in allowed]
    assert not found, "decodes or resizes images outside edgeopt/images: " + ", ".join(found)
