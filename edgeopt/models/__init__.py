"""Model sources: where a model comes from (``sources``: torchvision, timm, a factory, a checkpoint, ONNX),
edgeopt's own architectures (``zoo``, and ``detectors``: SSD graphs cut at the head), and the layer widths
a pruned model rebuilds with (``layer_shapes``)."""
