"""Classification: the task (``task``), its datasets (``data``: digits, .npz, ImageFolder trees) and its
training batches (``batches``)."""

from edgeopt.tasks.classification.task import TASK, Classification, ClassScores

__all__ = ["TASK", "ClassScores", "Classification"]
