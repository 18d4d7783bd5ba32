"""Detectors cut at their raw head outputs, so the graph compiles with static shapes.

torchvision's SSD and SSDlite run preprocessing, the network, box decoding and NMS in one
``forward``; only the network belongs in a compiled artifact (decoding and NMS quantize
badly and have data-dependent shapes). ``SSDGraph`` keeps the backbone and the head and
returns ``(box deltas, class logits)``; its ``head`` record (``edgeopt.tasks.detection.boxes.DetectionHead``)
carries the anchors for the input size, so the artifact decodes itself. Training uses
torchvision's own matcher, box coder and SSD loss.

Sources: ``edgeopt.models.detectors:ssdlite?num_classes=6&size=128`` (a MobileNetV3 SSDlite built
for that input size, square or ``size=320x240``, trained from scratch), ``edgeopt.models.detectors:ssd_tiny?num_classes=2&size=64``
(four convolutions and an SSD head: microcontroller budgets, quick tests), or ``torchvision:ssdlite320_mobilenet_v3_large``
/ ``torchvision:ssd300_vgg16`` (``?weights=DEFAULT`` with internet: COCO-pretrained).

Example:
    >>> graph = ssdlite(num_classes=6, in_channels=1, size=128).eval()
    >>> deltas, logits = graph(torch.zeros(1, 1, 128, 128))
    >>> tuple(deltas.shape), tuple(logits.shape), graph.detection_head().num_classes
    ((1, 522, 4), (1, 522, 7), 6)
"""

from __future__ import annotations

import types
from typing import Any

import torch
from torch import nn

from edgeopt.tasks.detection.boxes import DetectionHead
from edgeopt.core.errors import ConfigError
from edgeopt.core.size import parse_size

MAX_CLASSES = 10_000  # a class count read from a file cannot make a head of millions of channels
NEGATIVES_PER_POSITIVE = 3  # SSD's hard negative mining ratio
DEPLOY_SCORE_THRESHOLD = 0.25  # Ultralytics' predict default; evaluation uses 0.01


class SSDGraph(nn.Module):
    """A torchvision ``SSD`` up to its head: ``x (N, C, H, W)`` → ``(deltas (N, A, 4), logits (N, A, 1 + classes))``.

    ``x`` is already preprocessed (the InputSpec's normalisation, at ``size`` = (height, width)); the
    anchors for that size are computed once and kept as a buffer.
    """

    def __init__(self, ssd: nn.Module, size: tuple[int, int]) -> None:
        super().__init__()
        self.backbone, self.head = ssd.backbone, ssd.head
        self.size = tuple(size)
        self.num_classes = int(ssd.head.classification_head.num_columns) - 1
        self.box_weights = tuple(float(w) for w in ssd.box_coder.weights)
        # the deployment threshold (what a caller waits for, and what latency is timed at); COCO
        # evaluation decodes at a lower one (tasks.detection.EVAL_SCORE_THRESHOLD)
        self.score_threshold, self.iou_threshold = DEPLOY_SCORE_THRESHOLD, float(ssd.nms_thresh)
        self.topk_candidates = int(ssd.topk_candidates)
        # torchvision's matcher and anchor generator, held outside the module tree (they have no weights)
        self._ssd_parts = types.SimpleNamespace(anchor_generator=ssd.anchor_generator,
                                                proposal_matcher=ssd.proposal_matcher, box_coder=ssd.box_coder,
                                                neg_to_pos_ratio=NEGATIVES_PER_POSITIVE)
        self.register_buffer("anchors", self._anchors(), persistent=False)

    def _anchors(self) -> torch.Tensor:
        """torchvision's anchors (xyxy, input pixels) for the feature maps the backbone makes at ``size``."""
        from torchvision.models.detection.image_list import ImageList

        channels = next(m for m in self.backbone.modules() if isinstance(m, nn.Conv2d)).in_channels
        example = torch.zeros(1, channels, *self.size)
        was_training = self.backbone.training
        self.backbone.eval()
        with torch.no_grad():
            features = list(self.backbone(example).values())
        self.backbone.train(was_training)
        return self._ssd_parts.anchor_generator(ImageList(example, [self.size]), features)[0].detach()

    def at_size(self, size: tuple[int, int]) -> "SSDGraph":
        """A copy for another input size: the same layers (convolutions do not care), new anchors."""
        import copy

        graph = copy.deepcopy(self)
        graph.size = tuple(size)
        graph.anchors = graph._anchors()
        return graph

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.head(list(self.backbone(x).values()))
        return out["bbox_regression"], out["cls_logits"]

    def detection_head(self) -> DetectionHead:
        return DetectionHead("ssd", self.num_classes, image_size=self.size, anchors=self.anchors.numpy().copy(),
                             box_weights=self.box_weights, score_threshold=self.score_threshold,
                             iou_threshold=self.iou_threshold, topk_candidates=self.topk_candidates)

    def head_layers(self) -> list[str]:
        """The last convolution of every class and box predictor: their output channels are the
        anchors' meaning, so pruning keeps them whole and INT8 keeps them in float by default."""
        names = []
        for branch in ("classification_head", "regression_head"):
            for index, predictor in enumerate(getattr(self.head, branch).module_list):
                convs = [n for n, m in predictor.named_modules() if isinstance(m, nn.Conv2d)]
                names.append(f"head.{branch}.module_list.{index}" + (f".{convs[-1]}" if convs[-1] else ""))
        return names

    def detection_loss(self, outputs: tuple[torch.Tensor, torch.Tensor], targets: list[dict[str, torch.Tensor]]) -> torch.Tensor:
        """torchvision's SSD loss (smooth L1 on matched boxes, cross-entropy with 3:1 hard negatives).

        ``targets``: per image ``boxes`` (K, 4) xyxy in input pixels and ``labels`` (K,) 0-based.
        """
        from torchvision.models.detection.ssd import SSD
        from torchvision.ops import boxes as box_ops

        deltas, logits = outputs
        matched = []
        for target in targets:
            if target["boxes"].numel() == 0:  # an image without defects: every anchor is background
                matched.append(torch.full((len(self.anchors),), -1, dtype=torch.int64))
                continue
            matched.append(self._ssd_parts.proposal_matcher(box_ops.box_iou(target["boxes"], self.anchors)))
        shifted = [{"boxes": t["boxes"], "labels": t["labels"] + 1} for t in targets]  # 0 is the background
        losses = SSD.compute_loss(self._ssd_parts, shifted, {"bbox_regression": deltas, "cls_logits": logits},
                                  [self.anchors] * len(targets), matched)
        return losses["bbox_regression"] + losses["classification"]


def ssdlite(num_classes: int = 6, in_channels: int = 3, size: "int | str" = 128, width_mult: float = 1.0,
            min_ratio: float = 0.2, max_ratio: float = 0.95) -> SSDGraph:
    """SSDlite with a MobileNetV3-Large backbone at ``size`` (a side, or ``WxH`` such as ``320x240``), untrained
    (no download). ``min_ratio``/``max_ratio``: the smallest and largest anchor as a share of the input
    (torchvision's 0.2 and 0.95 by default; small objects such as distant vehicles want a smaller start)."""
    from torchvision.models.detection import ssdlite320_mobilenet_v3_large
    from torchvision.models.detection.anchor_utils import DefaultBoxGenerator

    # MobileNetV3 pads its way down to 1/32 and the anchors follow the feature maps' own grids, so any side works
    # (240 = 7.5 x 32; a lower resolution of 320x240 at 0.75 is 240x180)
    width, height = _input_size(size, smallest=64, name="ssdlite")
    if not 0 < width_mult <= 4 or not 1 <= num_classes <= MAX_CLASSES:
        raise ConfigError(f"ssdlite takes 0 < width_mult <= 4 and 1..{MAX_CLASSES} classes; got {width_mult} and "
                          f"{num_classes}")
    if not 0 < min_ratio < max_ratio <= 1:
        raise ConfigError(f"ssdlite's anchors need 0 < min_ratio < max_ratio <= 1; got {min_ratio} and {max_ratio}")
    ssd = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=num_classes + 1,
                                        width_mult=width_mult)
    if (min_ratio, max_ratio) != (0.2, 0.95):  # the same aspect ratios, so the head's anchors per cell still match
        ssd.anchor_generator = DefaultBoxGenerator([[2, 3] for _ in range(6)], min_ratio=min_ratio, max_ratio=max_ratio)
    if in_channels != 3:
        from edgeopt.models.layer_shapes import adapt_input_channels

        adapt_input_channels(ssd.backbone, in_channels)
    return SSDGraph(ssd, (height, width))


def _input_size(size: "int | str", smallest: int, name: str) -> tuple[int, int]:
    """``size`` as (width, height), each side at least ``smallest`` (and at most ``core.size.MAX_SIDE``)."""
    width, height = parse_size(size)
    if min(width, height) < smallest:
        raise ConfigError(f"{name} needs input sides of at least {smallest} px; got {width}x{height}")
    return width, height


class _TinyBackbone(nn.Module):
    """Four stride-2 convolutions: features at 1/8 and 1/16 of the input, as an SSD head wants them."""

    def __init__(self, in_channels: int, width: int) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout),
                                 nn.ReLU(inplace=True))

        self.eighth = nn.Sequential(block(in_channels, width), block(width, width * 2), block(width * 2, width * 2))
        self.sixteenth = block(width * 2, width * 4)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        eighth = self.eighth(x)
        return {"0": eighth, "1": self.sixteenth(eighth)}


def ssd_tiny(num_classes: int = 6, in_channels: int = 3, size: "int | str" = 64, width: int = 16) -> SSDGraph:
    """A small SSD (four convolutions, two feature maps, torchvision's SSD head and anchors), untrained:
    for microcontroller-class budgets and for tests, where SSDlite's export takes seconds."""
    from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
    from torchvision.models.detection.ssd import SSD, SSDHead

    if not 1 <= width <= 256 or not 1 <= num_classes <= MAX_CLASSES:
        raise ConfigError(f"ssd_tiny takes 1 <= width <= 256 and 1..{MAX_CLASSES} classes; got {width} and {num_classes}")
    size_w, size_h = _input_size(size, smallest=32, name="ssd_tiny")
    anchors = DefaultBoxGenerator([[2], [2]])
    head = SSDHead([width * 2, width * 4], anchors.num_anchors_per_location(), num_classes + 1)
    ssd = SSD(_TinyBackbone(in_channels, width), anchors, (size_w, size_h), num_classes + 1, head=head)  # SSD: (w, h)
    return SSDGraph(ssd, (size_h, size_w))


def wrap_torchvision(name: str, module: nn.Module) -> SSDGraph:
    """A torchvision detection model cut at its head; only the SSD family has a fixed-size graph."""
    from torchvision.models.detection.ssd import SSD

    if not isinstance(module, SSD):
        raise ConfigError(f"torchvision:{name} is not an SSD; edgeopt compiles torchvision's SSD and SSDlite "
                          "detectors (ssdlite320_mobilenet_v3_large, ssd300_vgg16), or an ONNX detector with a "
                          "declared output convention")
    width, height = module.transform.fixed_size or (module.transform.min_size[0],) * 2  # torchvision's SSD: (w, h)
    return SSDGraph(module, (height, width))


def head_record(module: Any) -> dict[str, Any] | None:
    """The head record of a detector module (None for anything else)."""
    head = getattr(module, "detection_head", None)
    return head().to_dict() if callable(head) else None
