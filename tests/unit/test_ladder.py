"""A ladder folder: written whole, read back verified, and refused (with what to do) when its record or a rung
is not what was written — it is a stranger's file like any other."""

from __future__ import annotations

import json
import shutil

import pytest

from edgeopt.core.errors import ArtifactError, ConfigError
from edgeopt.core.ladder import LADDER_FILE, Ladder, write_ladder
from edgeopt.pipeline.ladder import LadderConfig, Measured, choose_rungs

LATENCY = {1: {"p50": 1.0, "p99": 2.0}, 8: {"p50": 4.0, "p99": 6.0}}


@pytest.fixture()
def ladder(tmp_path, artifact_cache):
    rungs = [(artifact_cache("onnxruntime"), {"top1": 0.9}, LATENCY),
             (artifact_cache("openvino"), {"top1": 0.8}, {1: {"p50": 0.5, "p99": 1.0}})]
    return write_ladder(tmp_path / "ladder", rungs)


def test_a_written_ladder_opens_with_its_rungs_in_order(ladder):
    opened = Ladder.open(ladder.path)
    assert [r.name for r in opened.rungs] == ["r0", "r1"]
    assert [r.artifact.backend for r in opened.rungs] == ["onnxruntime", "openvino"]
    assert opened.rungs[0].latency_ms == LATENCY and opened.rungs[1].quality == {"top1": 0.8}
    assert not list(ladder.path.parent.glob(".ladder.partial-*"))  # nothing staged is left behind


def test_a_rung_swapped_for_another_artifact_is_refused(ladder):
    shutil.rmtree(ladder.path / "r1")
    shutil.copytree(ladder.path / "r0", ladder.path / "r1")
    with pytest.raises(ArtifactError, match="r1 is not the artifact the ladder was written with"):
        Ladder.open(ladder.path)


def test_a_rung_that_is_a_link_to_another_folder_is_refused(ladder, tmp_path):
    import os

    shutil.copytree(ladder.path / "r1", tmp_path / "elsewhere")
    shutil.rmtree(ladder.path / "r1")
    os.symlink(tmp_path / "elsewhere", ladder.path / "r1")
    with pytest.raises(ArtifactError, match="link"):
        Ladder.open(ladder.path)


def test_a_tampered_rung_file_is_refused(ladder):
    entry = ladder.rungs[0].artifact.manifest["entry"]
    (ladder.path / "r0" / entry).write_bytes(b"not a model")
    with pytest.raises(ArtifactError, match="r0"):
        Ladder.open(ladder.path)


@pytest.mark.parametrize("edit, phrase", [
    (lambda r: r.update(format="something-else"), "format 'edgeopt-ladder'"),
    (lambda r: r.update(schema=99), "upgrade"),
    (lambda r: r.update(rungs=[]), "1 to 8 rungs"),
    (lambda r: r["rungs"][0].update(name="../../etc"), "rung names are r0"),
    (lambda r: r["rungs"][1].update(name="r0"), "listed twice"),
    (lambda r: r["rungs"][0].update(latency_ms={"1": {"p50": -1, "p99": 1}}), "positive p50 and p99"),
    (lambda r: r["rungs"][0].update(latency_ms={"0": {"p50": 1, "p99": 1}}), "whole number from 1"),
    (lambda r: r["rungs"][0].update(quality={"top1": "high"}), "quality"),
    (lambda r: r["rungs"][0].update(quality={"top1": 10 ** 400}), "quality"),
    (lambda r: r["rungs"][0].update(latency_ms={"\u00b2": {"p50": 1, "p99": 1}}), "whole number from 1"),
    (lambda r: r["rungs"][0].update(latency_ms={"01": {"p50": 1, "p99": 1}}), "whole number from 1"),
    (lambda r: r.update(schema=-1), "upgrade"),
    (lambda r: r["rungs"][0].pop("manifest_sha256"), "sha256"),
])
def test_a_malformed_record_is_refused_with_one_sentence(ladder, edit, phrase):
    record = json.loads((ladder.path / LADDER_FILE).read_text())
    edit(record)
    (ladder.path / LADDER_FILE).write_text(json.dumps(record))
    with pytest.raises(ArtifactError, match=phrase):
        Ladder.open(ladder.path)


@pytest.mark.parametrize("text", [b"\xff\xfe", b"[" * 100_000, b"[]", b'{"format": "edgeopt-ladder", "schema": 1' + b"9" * 5000 + b"}"])
def test_a_record_that_is_not_a_json_object_is_refused(ladder, text):
    (ladder.path / LADDER_FILE).write_bytes(text)
    with pytest.raises(ArtifactError, match="ladder"):
        Ladder.open(ladder.path)


def test_artifacts_that_take_different_inputs_cannot_share_a_ladder(tmp_path, artifact_cache, tiny_model):
    from edgeopt.compile import export
    from edgeopt.models.sources import load_model

    other = export(load_model("edgeopt.models.zoo:tiny_cnn", input="1x3x48x48"), "onnxruntime", tmp_path / "other")
    with pytest.raises(ConfigError, match="input shape"):
        write_ladder(tmp_path / "ladder", [(artifact_cache("onnxruntime"), {}, LATENCY), (other, {}, LATENCY)])
    assert not (tmp_path / "ladder").exists()


def test_rungs_are_kept_only_for_a_real_speed_step(artifact_cache):
    def measured(top1: float, ms_at_8: float) -> Measured:
        return Measured(artifact_cache("onnxruntime"), {"top1": top1}, {8: {"p50": ms_at_8, "p99": ms_at_8}})

    from edgeopt.tasks import get_task

    items = [measured(0.95, 6.0), measured(0.99, 16.0), measured(0.97, 14.0), measured(0.90, 2.0)]
    kept = choose_rungs(items, get_task("classification").main, LadderConfig(min_speedup=1.5))
    assert [m.quality["top1"] for m in kept] == [0.99, 0.95, 0.90]
    assert "not 1.5x cheaper" in items[2].reason and not items[2].kept
    assert [m.quality["top1"] for m in choose_rungs(items, None, LadderConfig(min_speedup=1.5, max_rungs=1))] == [0.95]


@pytest.mark.slow  # a search: about a minute
def test_optimize_writes_a_ladder_from_its_front_starting_with_its_choice(tmp_path):
    import edgeopt
    from edgeopt.core.members import manifest_sha256

    checkpoint = tmp_path / "digits.safetensors"
    edgeopt.train("digits", "edgeopt.models.zoo:tiny_cnn?in_channels=1&width=48", checkpoint, epochs=3, lr=0.01,
                  augment=False, progress=False)
    space = edgeopt.SearchSpace(backends=("onnxruntime", "openvino"), prune_ratios=(), resolutions=(), students=(),
                                qat=False, calibration_samples=200)
    outcome = edgeopt.optimize(str(checkpoint), "digits", tmp_path / "search", space=space, budget="10m", ladder=3)
    ladder = Ladder.open(tmp_path / "search" / "ladder")
    chosen = edgeopt.Artifact.open(tmp_path / "search" / outcome.chosen.artifact)
    assert manifest_sha256(ladder.rungs[0].artifact) == manifest_sha256(chosen)
    assert ladder.rungs[0].quality == outcome.chosen.measurement.metrics
    per_row = [r.latency_ms[max(r.latency_ms)]["p50"] / max(r.latency_ms) for r in ladder.rungs]
    assert all(later * 1.25 <= earlier for earlier, later in zip(per_row, per_row[1:]))
