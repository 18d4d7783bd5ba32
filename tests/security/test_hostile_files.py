"""The hostile corpus, generated here: files made to run code, escape their folder, lie about their size or
format, or break a parser. Every one is refused with one message naming the file and the reason; no payload
ever runs (the file it would create never appears); nothing is written outside the output folder."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import random
import shutil
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from edgeopt.core.artifact import Artifact
from edgeopt.core.bundle import pack, unpack
from edgeopt.core.errors import ArtifactError, InputError, ModelSourceError
from edgeopt.core.formats import sniff
from edgeopt.models.sources import load_model
from edgeopt.core.onnx_external import references
from tests.helpers import CreatesAFile, assert_one_line_error, edgeopt, tar_of


@pytest.fixture
def sentinel(tmp_path):
    path = tmp_path / "PAYLOAD-RAN"
    yield path
    assert not path.exists(), "a payload ran"


def snapshot(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def hostile_onnx(folder: Path, location: str, where: str = "graph", name: str = "model.onnx") -> Path:
    """A valid ONNX graph whose weight claims to live in external data at ``location``: an initializer of the
    graph, or (``where="subgraph"``) of an If node's branch; ``name`` other than .onnx gets the model's fields
    in another order (ir_version last), so its first byte is not the one ONNX files usually start with."""
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "64")):
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    x, y = (helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4]) for n in ("x", "y"))
    if where == "graph":
        graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g", [x], [y], [weight])
    else:
        branch = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "b", [], [y], [weight])
        flag = numpy_helper.from_array(np.array(True), "flag")
        graph = helper.make_graph([helper.make_node("If", ["flag"], ["y"], then_branch=branch, else_branch=branch)],
                                  "g", [x], [y], [flag])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = folder / name
    if name.endswith(".onnx"):
        path.write_bytes(model.SerializeToString())
    else:  # protobuf merges concatenated messages: the same model, ir_version (field 1) written last
        version = model.ir_version
        model.ClearField("ir_version")
        path.write_bytes(model.SerializeToString() + b"\x08" + bytes([version]))
    return path


@pytest.mark.parametrize("name", ["payload.pt", "payload.pth", "payload.onnx", "payload.safetensors", "payload.bin"])
def test_a_pickle_payload_never_runs_whatever_its_name(tmp_path, sentinel, name):
    path = tmp_path / name
    path.write_bytes(pickle.dumps(CreatesAFile(sentinel), protocol=4))
    with pytest.raises(ModelSourceError) as refused:
        load_model(str(path), arch="edgeopt.models.zoo:tiny_cnn")
    assert str(path) in str(refused.value)
    assert "pickle" in str(refused.value)


def test_a_torch_save_zip_holding_a_payload_is_refused_by_weights_only(tmp_path, sentinel):
    import torch

    path = tmp_path / "checkpoint.pt"
    torch.save({"state_dict": CreatesAFile(sentinel)}, path)
    with pytest.raises(ModelSourceError, match="never unpickles code"):
        load_model(str(path), arch="edgeopt.models.zoo:tiny_cnn")


def test_torchscript_and_pt2_are_programs_loaded_only_when_trusted(tmp_path):
    import torch

    model = load_model("edgeopt.models.zoo:tiny_cnn", input="1x3x32x32")
    scripted = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.trace(model.module, torch.zeros(1, 3, 32, 32)), scripted)
    exported = tmp_path / "exported.pt2"
    torch.export.save(torch.export.export(model.module, (torch.zeros(1, 3, 32, 32),)), exported)
    for path, kind in ((scripted, "TorchScript"), (exported, ".pt2")):
        with pytest.raises(ModelSourceError, match=f"{kind}.*--trust-model"):
            load_model(str(path), input="1x3x32x32")
        trusted = load_model(str(path), input="1x3x32x32", trust_model=True)
        assert trusted.reference()(np.zeros((1, 3, 32, 32), np.float32))[0].shape == (1, 10)
    disguised = tmp_path / "model.onnx"
    shutil.copy(scripted, disguised)
    with pytest.raises(ModelSourceError, match="named like an ONNX model but is a TorchScript archive"):
        load_model(str(disguised), trust_model=True)


def test_lying_headers_and_broken_files_are_refused_before_parsing(tmp_path):
    claims_10gb = tmp_path / "huge.safetensors"
    claims_10gb.write_bytes(struct.pack("<Q", 10 << 30) + b'{"__metadata__": {}}')
    with pytest.raises(ModelSourceError, match="claiming 10.0 GB in a file of 28 bytes"):
        load_model(str(claims_10gb), arch="edgeopt.models.zoo:tiny_cnn")
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(ModelSourceError, match="is empty"):
        load_model(str(empty))
    noise = tmp_path / "noise.onnx"
    # seeded: one random file in 256 has "{" as its ninth byte and is then (rightly) a lying safetensors header
    noise.write_bytes(random.Random(0).randbytes(4096))
    with pytest.raises(ModelSourceError, match="named like an ONNX model but is of no format"):
        load_model(str(noise))
    with pytest.raises(ModelSourceError, match="over the 1 MB limit"):
        sniff(_big_file(tmp_path), max_bytes=1 << 20)


def _big_file(folder: Path) -> Path:
    path = folder / "big.onnx"
    with open(path, "wb") as handle:
        handle.truncate(2 << 20)  # sparse: 2 MB claimed, nothing read
    return path


@pytest.mark.parametrize("escape", ["parent", "absolute", "symlink", "hardlink"])
def test_onnx_external_data_must_stay_beside_the_model(tmp_path, escape, artifact_cache):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.full(16, 7, np.float32).tobytes())
    folder = tmp_path / "model"
    folder.mkdir()
    location = {"parent": "../secret.bin", "absolute": str(secret), "symlink": "link.bin", "hardlink": "hard.bin"}[escape]
    if escape == "symlink":
        (folder / "link.bin").symlink_to(secret)
    if escape == "hardlink":
        os.link(secret, folder / "hard.bin")
    reason = {"parent": "outside the model's folder", "absolute": "an absolute path", "symlink": "a symbolic link",
              "hardlink": "a hard link"}[escape]
    path = hostile_onnx(folder, location)
    with pytest.raises(ModelSourceError) as refused:
        load_model(str(path), input="1x4")
    assert str(path) in str(refused.value) and reason in str(refused.value)
    # As an artifact's entry, its sha256 honestly listed — in the graph, in a subgraph, with its fields reordered
    # under another name — edgeopt refuses it on opening (wherever an artifact loads: predict, serve, the agent's
    # worker), not leaving it to the runtime (which lets a hard link through)
    for where, name in (("graph", "model.onnx"), ("subgraph", "model.onnx"), ("graph", "model.bin")):
        for old in folder.glob("model.*"):
            old.unlink()
        entry = hostile_onnx(folder, location, where, name)
        manifest = json.loads((artifact_cache("onnxruntime").path / "manifest.json").read_text())
        manifest["entry"], manifest["files"] = name, {name: {"sha256": hashlib.sha256(entry.read_bytes()).hexdigest(),
                                                             "bytes": entry.stat().st_size}}
        (folder / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(ArtifactError) as refused:
            Artifact.open(folder)
        assert str(folder) in str(refused.value) and reason in str(refused.value), (where, name)
        assert references(entry.read_bytes()) == onnx_references(entry)  # the light reader sees what onnx sees


def onnx_references(path: Path) -> list[tuple[str, str]]:
    """What the onnx package itself finds: every external tensor of every graph, subgraph and function."""
    import onnx

    from edgeopt.core.onnx_external import all_tensors

    return [(t.name, next(e.value for e in t.external_data if e.key == "location"))
            for t in all_tensors(onnx.load(str(path), load_external_data=False)) if t.data_location == 1]


def test_the_light_onnx_reader_finds_what_the_onnx_package_finds_in_a_real_export(tmp_path, artifact_cache):
    import onnx

    model = onnx.load(str(artifact_cache("onnxruntime").entry))
    onnx.save(model, str(tmp_path / "split.onnx"), save_as_external_data=True, location="weights.bin",
              size_threshold=0)
    found = references((tmp_path / "split.onnx").read_bytes())
    assert len(found) == len(model.graph.initializer) > 10 and {loc for _, loc in found} == {"weights.bin"}
    assert found == onnx_references(tmp_path / "split.onnx")
    assert load_model(str(tmp_path / "split.onnx")).input_spec.shape == (1, 3, 32, 32)  # a plain file beside it
    assert references(artifact_cache("onnxruntime").entry.read_bytes()) == []


def test_altered_artifacts_and_manifests_naming_files_outside_are_refused(tmp_path, artifact_cache):
    source = artifact_cache("onnxruntime").path
    for how in ("truncated", "bit-flipped", "outside", "absolute"):
        copy = tmp_path / how / "artifact"
        shutil.copytree(source, copy)
        model = copy / "model.onnx"
        data = bytearray(model.read_bytes())
        manifest = json.loads((copy / "manifest.json").read_text())
        if how == "truncated":
            model.write_bytes(bytes(data[: len(data) // 2]))
        elif how == "bit-flipped":
            data[len(data) // 2] ^= 0x01
            model.write_bytes(bytes(data))
        else:
            outside = tmp_path / how / "elsewhere.onnx"
            outside.write_bytes(bytes(data))
            name = "../elsewhere.onnx" if how == "outside" else str(outside)
            manifest["files"] = {name: {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}}
            manifest["entry"] = name
            (copy / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(ArtifactError) as refused:
            Artifact.open(copy)
        expected = {"truncated": "truncated", "bit-flipped": "does not match the sha256",
                    "outside": "outside its artifact folder", "absolute": "outside its artifact folder"}[how]
        assert expected in str(refused.value) and str(copy) in str(refused.value)


def test_bundles_round_trip_and_tar_slips_links_and_payloads_write_nothing(tmp_path, artifact_cache, sentinel):
    source = artifact_cache("onnxruntime").path
    good = tmp_path / "model.edgeopt"
    good.write_bytes(pack(source))
    assert unpack(good, tmp_path / "out" / "model").manifest == Artifact.open(source).manifest
    manifest = (source / "manifest.json").read_bytes()
    model = (source / "model.onnx").read_bytes()
    hostile = {
        "tar-slip": (tar_of({"manifest.json": manifest, "../../escaped.onnx": model}), "not a plain file name"),
        "absolute": (tar_of({"manifest.json": manifest, str(tmp_path / "abs.onnx"): model}), "not a plain file name"),
        "symlink": (tar_of({"manifest.json": manifest}, {"model.onnx": "/etc/passwd"}), "link"),
        "payload": (tar_of({"manifest.json": manifest, "model.onnx": pickle.dumps(CreatesAFile(sentinel))}), "pickle"),
        "zip": (tar_of({"manifest.json": manifest, "model.onnx": _zip()}), "zip archive"),
        "not a tar": (b"\x1f\x8b" + random.Random(1).randbytes(200), "not an uncompressed tar"),
    }
    before = snapshot(tmp_path)
    for what, (data, phrase) in hostile.items():
        bundle = tmp_path / f"{what}.edgeopt"
        bundle.write_bytes(data)
        before.add(bundle.name)
        with pytest.raises(ArtifactError, match=phrase) as refused:
            unpack(bundle, tmp_path / "out" / what)
        assert str(refused.value).startswith(f"{bundle}: "), refused.value  # names the file, then the reason
        assert snapshot(tmp_path) == before, what  # nothing written, anywhere
    proc = edgeopt("unpack", str(tmp_path / "tar-slip.edgeopt"), "--out", str(tmp_path / "out" / "cli"))
    assert_one_line_error(proc, "not a plain file name")


def _zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/data.pkl", b"\x80\x04N.")
    return buffer.getvalue()


def test_hostile_inputs_get_one_clear_input_error(artifact_cache):
    from edgeopt.backends import open_session
    from edgeopt.images import decode_image

    session = open_session(artifact_cache("onnxruntime").path)
    good = session.input_spec.example(batch=2)
    for bad, phrase in ((np.full_like(good, np.nan), "NaN"), (np.full_like(good, np.inf), "NaN"),
                        (good.astype(np.complex64), "dtype"), (good.astype(object), "dtype"),
                        (good.astype(str), "dtype"), (good[:, :1], "shape"), (good[:0], "empty batch")):
        with pytest.raises(InputError, match=phrase):
            session.run([bad])
    bomb = io.BytesIO()  # a PNG whose header claims 100,000 x 100,000 pixels
    from PIL import Image

    Image.new("L", (1, 1)).save(bomb, format="PNG")
    data = bytearray(bomb.getvalue())
    data[16:24] = struct.pack(">II", 100_000, 100_000)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # a valid IHDR chunk: only the size lies
    for image, phrase in ((b"", "empty"), (bytes(data), "pixels"), (random.Random(2).randbytes(512), "not a JPEG, PNG, BMP or WebP")):
        with pytest.raises(InputError, match=phrase):
            decode_image(image, channels=3, what="upload", max_pixels=16_000_000)


def test_a_recipe_pointing_at_a_payload_outside_its_folder_builds_nothing(tmp_path, sentinel):
    outside = tmp_path / "elsewhere" / "weights.pt"
    outside.parent.mkdir()
    outside.write_bytes(pickle.dumps(CreatesAFile(sentinel)))
    work = tmp_path / "work"
    work.mkdir()
    (work / "recipe.toml").write_text(f'format = 2\nmodel = "{outside}"\ndata = "digits"\narch = "edgeopt.models.zoo:tiny_cnn"\n\n'
                                      '[export]\nbackend = "onnxruntime"\n')
    before = snapshot(tmp_path)
    proc = edgeopt("build", str(work / "recipe.toml"), "--out", str(work / "built"), cwd=work)
    assert_one_line_error(proc, str(outside), "pickle")
    assert snapshot(tmp_path) == before


def test_the_command_line_refuses_a_program_unless_told_to_trust_it(tmp_path):
    import torch

    model = load_model("edgeopt.models.zoo:tiny_cnn", input="1x3x32x32")
    scripted = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.trace(model.module, torch.zeros(1, 3, 32, 32)), scripted)
    args = ("export", str(scripted), "-b", "openvino", "--input", "1x3x32x32", "-o")
    assert_one_line_error(edgeopt(*args, str(tmp_path / "refused")), "TorchScript archive", "--trust-model")
    assert not (tmp_path / "refused").exists()
    trusted = edgeopt(*args, str(tmp_path / "trusted"), "--trust-model")
    assert trusted.returncode == 0, trusted.stderr
    assert Artifact.open(tmp_path / "trusted").backend == "openvino"
    # A command with no --trust-model says what to do instead of naming an option it lacks.
    quantized = edgeopt("quantize", str(scripted), "--data", "digits", "--backend", "onnxruntime",
                        "--out", str(tmp_path / "quantized"))
    assert_one_line_error(quantized, "TorchScript archive", ".safetensors and pass --arch")
    assert not (tmp_path / "quantized").exists()


EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\n0 0 moveto 16 16 lineto stroke\nshowpage\n%%EOF\n"


def test_only_the_documented_image_formats_are_decoded_wherever_images_enter(tmp_path, served):
    """EPS would run Ghostscript; TIFF and GIF are decoders edgeopt does not document: none is tried, whatever
    the file is called, in decode_image, an ImageFolder dataset, `edgeopt predict` and the server's /predict."""
    import httpx
    from PIL import Image

    from edgeopt.tasks.classification.data import load_dataset
    from edgeopt.core.errors import ConfigError
    from edgeopt.images import decode_image
    from tests.helpers import RunningServer

    pixels = np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    encoded = {}
    for kind in ("JPEG", "PNG", "BMP", "WEBP", "TIFF", "GIF"):
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format=kind)
        encoded[kind] = buffer.getvalue()
    for kind in ("JPEG", "PNG", "BMP", "WEBP"):
        assert decode_image(encoded[kind], channels=3).shape == (16, 16, 3)
    hostile = {"EPS": EPS, "TIFF": encoded["TIFF"], "GIF": encoded["GIF"]}
    for kind, data in hostile.items():
        with pytest.raises(InputError, match="not a JPEG, PNG, BMP or WebP image"):
            decode_image(data, channels=3, what=kind)
    tree = tmp_path / "parts" / "scratch"  # an ImageFolder whose one image is an EPS named like a PNG
    tree.mkdir(parents=True)
    (tree / "a.png").write_bytes(EPS)
    with pytest.raises(ConfigError, match=f"{tree / 'a.png'} is not a JPEG, PNG, BMP or WebP image"):
        load_dataset(str(tmp_path / "parts"), image_size=16)
    (tmp_path / "eps.png").write_bytes(EPS)
    predicted = edgeopt("predict", str(served["tiny"]), str(tmp_path / "eps.png"))
    assert predicted.returncode == 1 and "not a JPEG, PNG, BMP or WebP image" in json.loads(predicted.stdout)["error"]
    with RunningServer(f"tiny={served['tiny']}") as running:
        for kind, data in hostile.items():
            answer = httpx.post(f"{running.url}/v2/models/tiny/predict", content=data,
                                headers={"content-type": "image/png"})
            assert answer.status_code == 400 and "not a JPEG, PNG, BMP or WebP" in answer.json()["error"], kind
        assert httpx.post(f"{running.url}/v2/models/tiny/predict", content=encoded["PNG"]).status_code == 200


def test_downloaded_weights_load_as_weights_only_and_a_dataset_names_no_file_outside_itself(tmp_path, monkeypatch,
                                                                                            sentinel):
    """torch.hub reads its cache with weights_only=False: a pickle planted there must not run when a user asks
    for pretrained weights. A COCO file_name may not leave the dataset, nor an image be a device."""
    import torchvision

    from edgeopt.tasks.detection.data import load_detection
    from edgeopt.core.errors import ConfigError
    from edgeopt.images import decode_image

    weights = torchvision.models.MobileNet_V3_Small_Weights.DEFAULT
    cached = tmp_path / "torch" / "hub" / "checkpoints" / weights.url.rsplit("/", 1)[-1]
    cached.parent.mkdir(parents=True)
    cached.write_bytes(pickle.dumps(CreatesAFile(sentinel)))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(ModelSourceError, match="could not build torchvision:mobilenet_v3_small"):
        load_model("torchvision:mobilenet_v3_small?weights=DEFAULT")
    assert os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD") is None  # the switch is off again outside the build
    coco = tmp_path / "coco"
    (coco / "images").mkdir(parents=True)
    (tmp_path / "outside.png").write_bytes(b"")
    for name in ("../../outside.png", "/etc/hostname"):
        (coco / "instances_train.json").write_text(json.dumps({
            "images": [{"id": 1, "file_name": name, "width": 8, "height": 8}], "annotations": [],
            "categories": [{"id": 1, "name": "thing"}]}))
        with pytest.raises(ConfigError, match="not a relative path inside"):
            load_detection(str(coco / "instances_train.json"), size=8)
    with pytest.raises(InputError, match="not a regular file"):
        decode_image("/dev/zero", channels=3)
