"""Names in files are data (issue 19): a checkpoint, a manifest, a bundle, a recipe or a model repository
that names code — ``subprocess:getoutput?cmd=touch MARKER``, a module that runs when imported, a
TorchScript program — is refused by every command that reads it, and the marker never appears. The
same files work once the user vouches for them on the command line: ``--arch`` for an architecture,
``--plugin`` for a pass's module, ``--trust-model`` for a program."""

from __future__ import annotations

import json
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from edgeopt.api import export
from edgeopt.core.bundle import pack
from edgeopt.models.sources import load_model, save_checkpoint
from edgeopt.pipeline.recipe import ExportConfig, Recipe
from edgeopt.core.trust import UntrustedName
from tests.helpers import RunningServer, assert_one_line_error, edgeopt

ROOT = Path(__file__).resolve().parents[2]
CUSTOM = "tests.plugins.custom_arch:build"


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "PWNED"
    yield path
    assert not path.exists(), "a name read from a file was imported and run"


def payload(marker: Path) -> str:
    return f"subprocess:getoutput?cmd=touch {marker}"


def rewrite_metadata(checkpoint: Path, **changes: str) -> Path:
    """The same weights with some of the checkpoint's metadata replaced (what an attacker edits)."""
    from safetensors import safe_open
    from safetensors.numpy import save_file

    with safe_open(str(checkpoint), framework="np") as handle:
        tensors, meta = {k: handle.get_tensor(k) for k in handle.keys()}, dict(handle.metadata())
    save_file(tensors, str(checkpoint), metadata={**meta, **changes})
    return checkpoint


def rewrite_manifest(folder: Path, arch: str) -> Path:
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["compile"]["arch"] = arch
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def png(path: Path) -> Path:
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(path)
    return path


def run_all(*commands: tuple[str, ...], cwd: Path = ROOT) -> list:
    """Several CLI runs at once (each imports torch: seconds apiece), their results in order."""
    with ThreadPoolExecutor(max_workers=3) as pool:
        return list(pool.map(lambda args: edgeopt(*args, cwd=str(cwd)), commands))


@pytest.fixture(scope="module")
def custom_checkpoint(tmp_path_factory) -> Path:
    """A checkpoint of the user's own architecture: its metadata names tests.plugins.custom_arch:build."""
    model = load_model(CUSTOM, input="1x3x32x32")  # named here, by the caller: granted in this process only
    model.task = "classification"
    return save_checkpoint(model, tmp_path_factory.mktemp("custom") / "custom.safetensors")


def test_a_checkpoint_naming_a_command_runs_nothing_through_bench_export_or_eval(tmp_path, marker, trained):
    checkpoint = tmp_path / "evil.safetensors"
    checkpoint.write_bytes(trained[0].read_bytes())
    rewrite_metadata(checkpoint, **{"edgeopt.arch": payload(marker)})
    with pytest.raises(UntrustedName, match=f"{checkpoint} asks to import 'subprocess:getoutput'.*--arch"):
        load_model(str(checkpoint))
    refused = run_all(("bench", str(checkpoint), "--backends", "onnxruntime"),
                      ("export", str(checkpoint), "-b", "onnxruntime", "-o", str(tmp_path / "exported")),
                      ("eval", str(checkpoint), "--data", "digits"))
    for proc in refused:
        assert_one_line_error(proc, str(checkpoint), "'subprocess:getoutput'", "--arch subprocess:getoutput")
    assert not (tmp_path / "exported").exists()
    # The user names the architecture the weights belong to: the file's own record of it is not consulted
    arch = load_model(str(trained[0])).arch
    works = edgeopt("eval", str(checkpoint), "--data", "digits", "--arch", arch)
    assert works.returncode == 0 and "top1" in works.stdout, works.stderr


def test_the_users_own_architecture_loads_only_when_named_on_the_command_line(tmp_path, custom_checkpoint):
    out = tmp_path / "exported"
    refused, works = run_all(("export", str(custom_checkpoint), "-b", "onnxruntime", "-o", str(out)),
                             ("export", str(custom_checkpoint), "-b", "onnxruntime", "-o", str(out) + "-ok",
                              "--arch", CUSTOM))
    assert_one_line_error(refused, f"asks to import '{CUSTOM}'", f"--arch {CUSTOM}")
    assert not out.exists()
    assert works.returncode == 0, works.stderr


def test_an_eager_artifact_and_its_bundle_run_nothing_through_predict_eval_unpack_or_serve(tmp_path, marker,
                                                                                          custom_checkpoint):
    artifact = export(load_model(str(custom_checkpoint)), "eager", tmp_path / "eager").path
    good_bundle = tmp_path / "good.edgeopt"
    good_bundle.write_bytes(pack(artifact))
    rewrite_manifest(artifact, payload(marker))
    bundle = tmp_path / "evil.edgeopt"
    bundle.write_bytes(pack(artifact))
    image = png(tmp_path / "image.png")
    unpacked = tmp_path / "unpacked"
    assert edgeopt("unpack", str(bundle), "-o", str(unpacked)).returncode == 0  # unpacking loads nothing
    predicted, evaluated, from_bundle = run_all(("predict", str(artifact), str(image)),
                                                ("eval", str(artifact), "--data", "digits"),
                                                ("predict", str(unpacked), str(image)))
    for proc in (predicted, evaluated, from_bundle):
        assert_one_line_error(proc, "manifest", "asks to import 'subprocess:getoutput'")
    for source in (artifact, bundle):  # a server refuses to start on it, with one line
        served = edgeopt("serve", f"m={source}", "--port", "9")
        assert_one_line_error(served, "asks to import 'subprocess:getoutput'")
    # The honest artifact of the same architecture serves once the user names it
    with RunningServer(f"m={good_bundle}", "--arch", CUSTOM) as running:
        body = {"inputs": [{"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32",
                            "data": np.zeros(3 * 32 * 32).tolist()}]}
        answer = httpx.post(f"{running.url}/v2/models/m/infer", json=body, timeout=30)
        assert answer.status_code == 200, answer.text


def test_a_watched_repository_refuses_a_version_that_names_code_or_is_a_program(tmp_path, marker, served,
                                                                                custom_checkpoint):
    repository = tmp_path / "models"
    (repository / "m").mkdir(parents=True)
    (repository / "m" / "1.edgeopt").write_bytes(pack(served["tiny"]))
    evil = rewrite_manifest(export(load_model(str(custom_checkpoint)), "eager", tmp_path / "evil").path,
                            payload(marker))
    scripted = export(load_model("edgeopt.models.zoo:tiny_cnn", input="1x3x32x32"), "torchscript", tmp_path / "ts").path
    with RunningServer("--model-repository", str(repository), "--poll-seconds", "0.2") as running:
        staged = repository / "m" / ".2.partial"  # written beside it, then renamed: it appears whole
        staged.write_bytes(pack(evil))
        staged.rename(repository / "m" / "2.edgeopt")
        wait_for_refusals(running, 1)
        shutil.copytree(scripted, repository / "m" / ".3.partial")  # bundles take no programs at all: a folder
        (repository / "m" / ".3.partial").rename(repository / "m" / "3")
        wait_for_refusals(running, 2)
        assert httpx.get(f"{running.url}/v2/models/m").json()["versions"] == ["1"]
        log = running.stop()
    assert "refused m version 2" in log and "asks to import 'subprocess:getoutput'" in log, log
    assert "refused m version 3" in log and "TorchScript artifact" in log and "--trust-model" in log, log
    with RunningServer("--model-repository", str(repository), "--trust-model") as trusting:
        assert httpx.get(f"{trusting.url}/v2/models/m").json()["versions"] == ["3"]


def wait_for_refusals(running: RunningServer, count: int, within: float = 30) -> None:
    counted = f'edgeopt_model_versions_refused_total{{model="m"}} {float(count)}'
    deadline = time.time() + within
    while counted not in httpx.get(f"{running.url}/metrics").text and time.time() < deadline:
        time.sleep(0.1)


def test_a_torchscript_artifact_folder_needs_trust_model_wherever_it_comes_from(tmp_path):
    scripted = export(load_model("edgeopt.models.zoo:tiny_cnn", input="1x3x32x32"), "torchscript", tmp_path / "ts").path
    image = png(tmp_path / "image.png")
    refused, trusted = run_all(("predict", str(scripted), str(image)),
                               ("predict", str(scripted), str(image), "--trust-model"))
    assert_one_line_error(refused, str(scripted), "TorchScript artifact", "--trust-model")
    assert trusted.returncode == 0 and json.loads(trusted.stdout)["outputs"], trusted.stderr  # no task: raw outputs
    assert_one_line_error(edgeopt("serve", f"m={scripted}", "--port", "9"), "TorchScript artifact", "--trust-model")
    with RunningServer(f"m={scripted}", "--trust-model") as running:
        assert httpx.get(f"{running.url}/v2/models/m").status_code == 200


def test_a_recipe_names_no_code_the_user_did_not(tmp_path, marker, custom_checkpoint, trained):
    (tmp_path / "evilmod.py").write_text(f"open({str(marker)!r}, 'w')\nbuild = None\n")  # runs if ever imported
    (tmp_path / "evilmod:build").write_text("")  # a file of that name: the student is still an import path
    base = Recipe(str(custom_checkpoint), "digits", export=ExportConfig("onnxruntime")).to_dict()
    digits = {**base, "model": str(trained[0])}  # a baseline whose architecture is edgeopt's own
    distill = {"kind": "distill", "fine_tune": {"epochs": 1}}
    recipes = {
        "model": {**base, "model": payload(marker)},
        "arch": {**base, "arch": payload(marker)},
        "plugin": {**digits, "steps": [{"kind": "backdoor", "module": "evilmod"}]},
        "student": {**digits, "steps": [{**distill, "student": payload(marker)}]},
        # names that look like files when read but not when the step loads them (it adds the data's classes)
        "student-suffix": {**digits, "steps": [{**distill, "student": "evilmod:build?x=.onnx"}]},
        "student-file": {**digits, "steps": [{**distill, "student": "evilmod:build"}]},
        "checkpoint": base,  # its checkpoint names the user's own architecture, which the user has not named
    }
    import tomli_w

    commands = []
    for name, recipe in recipes.items():
        (tmp_path / f"{name}.toml").write_text(tomli_w.dumps(recipe))
        commands.append(("build", str(tmp_path / f"{name}.toml"), "--out", str(tmp_path / f"out-{name}")))
    # run where evilmod.py lies, so `python -m edgeopt` could import it: only a name in the recipe stands between
    for name, proc in zip(recipes, run_all(*commands, cwd=tmp_path)):
        wanted = {"plugin": "--plugin evilmod", "checkpoint": f"--arch {CUSTOM}", "student-suffix": "'evilmod:build'",
                  "student-file": "'evilmod:build'"}.get(name, "subprocess:getoutput")
        assert_one_line_error(proc, "asks to import", wanted)
        assert not (tmp_path / f"out-{name}").exists()
    works = edgeopt("build", str(tmp_path / "checkpoint.toml"), "--out", str(tmp_path / "built"), "--arch", CUSTOM)
    assert works.returncode == 0, works.stderr
