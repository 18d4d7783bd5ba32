"""The edge side's shared parts: an artifact predicting images (``predictor``: torch-free for ONNX Runtime
and OpenVINO) and what the HTTP services share (``http``: refusals, tokens, body caps)."""
