"""A deliberately broken backend: its compile writes an ONNX graph whose outputs ignore the input.

Registered from outside edgeopt, it shows that the parity check still refuses a compile
that is broken (constant outputs), however lenient it is with INT8's honest differences.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeopt.backends.base import CompileResult
from edgeopt.backends.onnxruntime import MODEL, OnnxRuntimeBackend


class ConstantBackend(OnnxRuntimeBackend):
    name = "constant-broken"
    order = 90

    def compile(self, model, precision, folder: Path, options, quantization=None, calibration=None, validation=None,
                deadline=None):
        import onnx
        from onnx import TensorProto, helper

        spec = model.input_spec
        features = int(np.prod(spec.sample_shape))
        classes = int(model.reference()(spec.example(batch=1))[0].shape[1])
        weights = helper.make_tensor("zeros", TensorProto.FLOAT, [features, classes], [0.0] * (features * classes))
        bias = helper.make_tensor("bias", TensorProto.FLOAT, [classes], [float(i) for i in range(classes)])
        graph = helper.make_graph(
            [helper.make_node("Flatten", [spec.name], ["flat"]), helper.make_node("MatMul", ["flat", "zeros"], ["mm"]),
             helper.make_node("Add", ["mm", "bias"], ["logits"])],
            "constant", [helper.make_tensor_value_info(spec.name, TensorProto.FLOAT, ["batch", *spec.sample_shape])],
            [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])], [weights, bias])
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(folder / MODEL))
        return CompileResult(entry=MODEL, notes=["a broken compile, on purpose"])


BACKEND = ConstantBackend()
