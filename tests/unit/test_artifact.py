import json

import pytest

from edgeopt.core.artifact import MANIFEST, Artifact, ArtifactWriter
from edgeopt.core.errors import ArtifactError, ConfigError

MANIFEST_BASE = {
    "backend": "onnxruntime", "precision": "fp32", "entry": "model.bin",
    "input": {"shape": [1, 4]}, "outputs": [{"name": "output0", "shape": [-1, 2]}],
}


def _write(out, payload=b"weights" * 100):
    with ArtifactWriter(out) as writer:
        (writer.dir / "model.bin").write_bytes(payload)
        writer.write_manifest(MANIFEST_BASE)
        return writer.commit()


def test_commit_writes_manifest_with_hashes(tmp_path):
    art = _write(tmp_path / "art")
    assert (tmp_path / "art" / MANIFEST).is_file()
    assert art.manifest["files"]["model.bin"]["bytes"] == 700
    assert len(art.manifest["files"]["model.bin"]["sha256"]) == 64
    assert "numpy" in art.manifest["versions"]
    assert Artifact.open(tmp_path / "art").size_bytes == 700
    assert list(tmp_path.iterdir()) == [tmp_path / "art"]  # no staging folder left


def test_interrupted_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with ArtifactWriter(tmp_path / "art") as writer:
            (writer.dir / "model.bin").write_bytes(b"half")
            raise RuntimeError("killed mid-compile")
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_refused_unless_overwrite(tmp_path):
    _write(tmp_path / "art")
    with pytest.raises(ConfigError, match="already exists"):
        _write(tmp_path / "art")
    with ArtifactWriter(tmp_path / "art", overwrite=True) as writer:
        (writer.dir / "model.bin").write_bytes(b"new")
        writer.write_manifest(MANIFEST_BASE)
        assert writer.commit().size_bytes == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]


def test_missing_file_is_named(tmp_path):
    _write(tmp_path / "art")
    (tmp_path / "art" / "model.bin").unlink()
    with pytest.raises(ArtifactError, match="model.bin .*is missing"):
        Artifact.open(tmp_path / "art")


def test_truncated_file_is_named(tmp_path):
    _write(tmp_path / "art")
    path = tmp_path / "art" / "model.bin"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ArtifactError, match=r"model.bin is truncated \(100 of 700 bytes\)"):
        Artifact.open(tmp_path / "art")


def test_altered_file_or_manifest_hash_is_detected(tmp_path):
    _write(tmp_path / "art")
    path = tmp_path / "art" / "model.bin"
    path.write_bytes(b"x" * 700)
    with pytest.raises(ArtifactError, match="does not match the sha256"):
        Artifact.open(tmp_path / "art")
    _write(tmp_path / "art2")
    manifest = json.loads((tmp_path / "art2" / MANIFEST).read_text())
    manifest["files"]["model.bin"]["sha256"] = "0" * 64
    (tmp_path / "art2" / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="does not match the sha256"):
        Artifact.open(tmp_path / "art2")


def test_not_an_artifact_and_bad_manifest(tmp_path):
    with pytest.raises(ArtifactError, match="does not exist"):
        Artifact.open(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtifactError, match="no manifest.json"):
        Artifact.open(tmp_path / "empty")
    (tmp_path / "empty" / MANIFEST).write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        Artifact.open(tmp_path / "empty")
    (tmp_path / "empty" / MANIFEST).write_text(json.dumps({"schema": 1}))
    with pytest.raises(ArtifactError, match="lacks required fields"):
        Artifact.open(tmp_path / "empty")


def test_newer_schema_is_refused(tmp_path):
    _write(tmp_path / "art")
    manifest = json.loads((tmp_path / "art" / MANIFEST).read_text())
    manifest["schema"] = 99
    (tmp_path / "art" / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="upgrade edgeopt"):
        Artifact.open(tmp_path / "art")


@pytest.mark.parametrize("manifest", [{"task": ["detection"]}, {"task": {"name": "x"}},
                                      {"task": "detection", "head": "anchors"}, {"task": 3}])
def test_a_manifest_whose_task_or_head_has_the_wrong_type_is_one_clear_error(manifest):
    from edgeopt.tasks import task_of

    with pytest.raises(ConfigError, match="manifest is malformed"):
        task_of(manifest)
