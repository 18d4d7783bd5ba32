"""What a cluster's worker sends back is data from elsewhere: only the files that build makes are written,
each whole (written beside its place, then renamed), and anything else refuses the whole answer."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from edgeopt.core.errors import ConfigError
from edgeopt.pipeline.recipe import Recipe
from edgeopt.search.remote_build import digest, files_of, pack_files, unpack_files
from tests.helpers import tar_of

RECIPE = Recipe.from_dict({"format": 2, "model": "runs/m.safetensors", "data": "digits",
                           "steps": [{"kind": "prune", "ratio": 0.5}], "export": {"backend": "onnxruntime"}})


def _own(name: str) -> str:
    return {"model": f"models/{RECIPE.prefix_hash(1)}.safetensors",
            "artifact": f"candidates/{RECIPE.hash}/artifact/model.onnx"}[name]


def test_the_files_a_build_makes_come_back_whole_and_nothing_else_is_written(tmp_path):
    source = tmp_path / "worker"
    for name in (_own("model"), _own("artifact")):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_bytes(name.encode() * 100)
    data = pack_files(source, [Path(_own("model")), Path(_own("artifact"))])
    out = tmp_path / "search"
    written = unpack_files(data, out, files_of(RECIPE))
    assert sorted(p.relative_to(out).as_posix() for p in written) == sorted([_own("model"), _own("artifact")])
    assert (out / _own("model")).read_bytes() == _own("model").encode() * 100
    assert not list(out.rglob("*.partial"))
    assert pack_files(source, []) == b"" and unpack_files(b"", out, files_of(RECIPE)) == []


@pytest.mark.parametrize("hostile", ["another model", "recipe.toml", "climbing", "absolute", "link", "garbage"])
def test_a_worker_answer_with_anything_else_is_refused_before_a_byte_is_written(tmp_path, hostile):
    other = Recipe.from_dict({"format": 2, "model": "runs/m.safetensors", "data": "digits",
                              "steps": [{"kind": "prune", "ratio": 0.25}], "export": {"backend": "onnxruntime"}})
    good = {_own("artifact"): b"fine"}
    data = {
        "another model": tar_of({**good, f"models/{other.prefix_hash(1)}.safetensors": b"x"}),
        "recipe.toml": tar_of({**good, f"candidates/{RECIPE.hash}/recipe.toml": b"model = 'elsewhere'"}),
        "climbing": tar_of({**good, f"candidates/{RECIPE.hash}/artifact/../../../../escape": b"x"}),
        "absolute": tar_of({**good, "/tmp/escape": b"x"}),
        "link": tar_of(good, {f"candidates/{RECIPE.hash}/artifact/link": "/etc/passwd"}),
        "garbage": b"\x00not a tar" * 100,
    }[hostile]
    out = tmp_path / "search"
    with pytest.raises(ConfigError, match="refused"):
        unpack_files(data, out, files_of(RECIPE))
    assert not out.exists() or not any(out.rglob("*"))


def test_the_sources_digest_follows_the_content_not_the_size():
    assert digest({"model": ("m.safetensors", b"abc")}) != digest({"model": ("m.safetensors", b"abd")})
    assert digest({"model": ("m.safetensors", b"abc")}) == digest({"model": ("m.safetensors", b"abc")})
