"""Detection: the task (``task``: mAP, box fidelity), its datasets (``data``: COCO, YOLO, NEU-DET), its
heads (``boxes``: decoding and NMS, numpy and torchvision) and its training batches (``batches``)."""

from edgeopt.tasks.detection.task import TASK, Detection

__all__ = ["TASK", "Detection"]
