"""`edgeopt unpack` of a bundle cut short, nesting its manifest past any parser, or listing a file without
its size: one `error:` line naming the bundle, no traceback, and nothing written."""

from __future__ import annotations

import json

import pytest

from edgeopt.core.bundle import pack
from tests.helpers import assert_one_line_error, edgeopt, tar_of


def hostile_bundle(how: str, source) -> bytes:
    model = (source / "model.onnx").read_bytes()
    if how == "truncated":
        return pack(source)[: len(model) // 2]
    manifest = json.loads((source / "manifest.json").read_text())
    del manifest["files"]["model.onnx"]["bytes"]
    text = b"[" * 5000 + b"]" * 5000 if how == "deep" else json.dumps(manifest).encode()
    return tar_of({"manifest.json": text, "model.onnx": model})


@pytest.mark.parametrize("how, phrase", [("truncated", "truncated"), ("deep", "nests deeper"),
                                         ("no bytes", '"bytes"')])
def test_unpack_refuses_a_hostile_bundle_in_one_line_and_writes_nothing(how, phrase, tmp_path, artifact_cache):
    bundle = tmp_path / "hostile.edgeopt"
    bundle.write_bytes(hostile_bundle(how, artifact_cache("onnxruntime").path))
    proc = edgeopt("unpack", str(bundle), "--out", str(tmp_path / "out" / "model"), timeout=120)
    assert_one_line_error(proc, str(bundle), phrase)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hostile.edgeopt"]
