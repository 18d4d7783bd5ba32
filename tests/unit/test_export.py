"""Export's guarantees: a diverging backend is refused, and nothing half-written remains."""

import pytest
import torch

from edgeopt.compile import export
from edgeopt.core.errors import BackendUnavailable, ParityError
from edgeopt.measure.latency import TimingConfig
from edgeopt.models.sources import LoadedModel
from edgeopt.pipeline.bench import BenchConfig, bench
from edgeopt.core.spec import InputSpec


class CallCounter(torch.nn.Module):
    """Scales by how often it was called: tracing bakes in one count, so TorchScript diverges."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 3)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.linear(x) * self.calls


def _counter_model() -> LoadedModel:
    torch.manual_seed(0)
    return LoadedModel("tests:CallCounter", InputSpec((1, 4)), module=CallCounter().eval(), task="classification")


def test_diverging_backend_raises_parity_error_and_leaves_nothing(tmp_path):
    with pytest.raises(ParityError, match="diverge from the FP32 reference") as info:
        export(_counter_model(), "torchscript", tmp_path / "art")
    assert info.value.parity["passed"] is False
    assert list(tmp_path.iterdir()) == []


def test_bench_reports_parity_failure_as_failed(tmp_path):
    config = BenchConfig(backends=("torchscript",), timing=TimingConfig(warmup=0, min_iters=2, min_seconds=0))
    report = bench(_counter_model(), config)
    (row,) = report.results
    assert row.status == "failed" and row.reason.startswith("parity")
    assert row.measurement is None and row.label.startswith("failed: parity")


def test_unknown_backend_option_is_refused(tmp_path):
    from edgeopt.core.errors import ConfigError
    from edgeopt.models.sources import load_model

    with pytest.raises(ConfigError, match="accepts"):
        export(load_model("edgeopt.models.zoo:tiny_cnn", input="1x3x16x16"), "onnxruntime", tmp_path / "a", options={"mobile": True})


def test_torchscript_mobile_and_lite_options(tmp_path):
    from edgeopt.backends import open_session
    from edgeopt.backends.torchscript import xnnpack_in_torch
    from edgeopt.models.sources import load_model

    model = load_model("edgeopt.models.zoo:tiny_cnn", input="1x3x16x16")
    art = export(model, "torchscript", tmp_path / "lite", options={"lite": True})
    assert art.entry.name == "model.ptl" and "saved for the lite interpreter" in art.manifest["notes"]
    out = open_session(art.path).run([model.input_spec.example(batch=2)])
    assert out[0].shape == (2, 10)
    if xnnpack_in_torch():
        art = export(model, "torchscript", tmp_path / "mobile", options={"mobile": True})
        assert "optimized for mobile" in art.manifest["notes"]
    else:
        with pytest.raises(BackendUnavailable, match="XNNPACK"):
            export(model, "torchscript", tmp_path / "mobile", options={"mobile": True})
        assert not (tmp_path / "mobile").exists()
