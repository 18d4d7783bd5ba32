"""`edgeopt optimize`, `build`, `devices` end to end on scikit-learn's digits, through real processes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edgeopt.artifact import Artifact
from edgeopt.backends import open_session
from edgeopt.search import Recipe, Step
from edgeopt.search.pareto import choose
from tests.cli.test_cli import assert_one_line_error, edgeopt
from tests.cli.test_train_eval import trained  # noqa: F401  (the module-scoped trained checkpoint)

pytest.importorskip("torch_pruning")
QUICK = ("--prune-ratios", "none", "--resolutions", "none", "--students", "none", "--no-qat")
CHROMIUM = Path("/usr/bin/chromium")


def optimize(model, out, *args):
    return edgeopt("optimize", str(model), "--data", "digits", "--out", str(out), "--budget", "5m", *args)


@pytest.fixture(scope="module")
def search(trained, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("optimize") / "search"
    proc = optimize(trained[0], out, "--backends", "onnxruntime,openvino", "--prune-ratios", "0.5", "--epochs", "2",
                    "--resolutions", "none", "--students", "none", "--no-qat")
    assert proc.returncode == 0, proc.stderr
    return out, proc, json.loads((out / "results.json").read_text())


def test_search_chooses_an_artifact_that_meets_its_goals(search):
    out, proc, results = search
    chosen = results["chosen"]
    assert chosen["violations"] == [] and chosen["drop_points"] <= 1.0
    stage1 = [r for r in results["candidates"] if r["stage"] == 1]
    assert {(r["backend"], r["quantization"]) for r in stage1} == {
        ("onnxruntime", "none"), ("onnxruntime", "ptq"), ("onnxruntime", "aware"),
        ("openvino", "none"), ("openvino", "ptq"), ("openvino", "aware")}
    passing = [r for r in results["candidates"] if r["status"] == "ok" and not r["violations"]]
    assert chosen["latency_ms"] == min(r["latency_ms"] for r in passing)  # latency first: the fastest that passes
    best = Artifact.open(out / "best")  # sha256-verified copy of the winner
    assert best.backend == chosen["backend"] and best.precision == chosen["precision"]
    assert Recipe.read(out / "best.toml").hash == chosen["key"]
    assert results["pareto_front"] and chosen["key"] in results["pareto_front"]
    assert results["winner"]["metrics"]["confusion"] and results["winner"]["profile"]["backend"] == chosen["backend"]
    text = " ".join(proc.stdout.split())
    assert "chosen:" in text and "report:" in text and "meets priority latency; max-accuracy-drop 1" in text


def test_stage_two_probes_before_it_trains(search):
    out, _, results = search
    stage2 = [r for r in results["candidates"] if r["stage"] == 2]
    pruned = stage2 + [r for r in results["not_tried"] if "prune" in r["label"]]
    assert pruned, "the prune 0.5 candidate was neither run, skipped with a reason, nor listed as not tried"
    probes = [json.loads(line) for line in (out / "journal.jsonl").read_text().splitlines()
              if json.loads(line)["kind"] == "probe"]
    assert probes and all(p["latency_ms"] > 0 for p in probes if p["status"] == "ok")
    for record in stage2:
        assert record["status"] in ("ok", "skipped", "failed")
        if record["status"] == "skipped":
            assert record["reason"]


def test_report_html_renders_in_headless_chromium_with_its_plot(search, tmp_path):
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium; .ci/run installs it)")
    playwright = pytest.importorskip("playwright.sync_api")
    out, _, results = search
    errors: list[str] = []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu",
                                    "--disable-background-networking", "--disable-component-update", "--no-first-run"])
        page = browser.new_page()
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto((out / "report.html").as_uri())
        assert page.locator("#pareto svg").count() == 1
        box = page.locator("#pareto svg").bounding_box()
        assert box["width"] > 300 and box["height"] > 200  # the plot is drawn at a readable size
        assert page.locator("#candidates tbody tr").count() == len(results["candidates"])
        assert page.locator("#confusion svg").count() == 1
        assert "chosen:" in page.locator("#decision").inner_text()
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        browser.close()
    assert errors == []
    assert (tmp_path / "report.png").stat().st_size > 10_000


def test_build_rebuilds_the_chosen_recipe(search, tmp_path):
    out, _, _ = search
    proc = edgeopt("build", str(out / "best.toml"), "--out", str(tmp_path / "rebuilt"))
    assert proc.returncode == 0, proc.stderr
    rebuilt, best = Artifact.open(tmp_path / "rebuilt"), Artifact.open(out / "best")
    batch = best.input_spec.example(batch=4, seed=3)
    np.testing.assert_allclose(open_session(rebuilt.path).run([batch])[0], open_session(best.path).run([batch])[0],
                               rtol=1e-5, atol=1e-5)


def test_a_training_recipe_rebuilds_to_the_same_weights(trained, tmp_path):  # noqa: F811
    recipe = Recipe(model=str(trained[0]), data="digits", steps=(Step.of("prune", ratio=0.5, epochs=1),),
                    backend="onnxruntime")
    path = recipe.write(tmp_path / "recipe.toml")
    outputs = []
    for name in ("one", "two"):
        proc = edgeopt("build", str(path), "--out", str(tmp_path / name))
        assert proc.returncode == 0, proc.stderr
        artifact = Artifact.open(tmp_path / name)
        outputs.append(open_session(artifact.path).run([artifact.input_spec.example(batch=4, seed=3)])[0])
    np.testing.assert_array_equal(outputs[0], outputs[1])


def test_killed_search_resumes_without_rerunning_finished_candidates(trained, tmp_path):  # noqa: F811
    out = tmp_path / "search"
    args = ["optimize", str(trained[0]), "--data", "digits", "--out", str(out), "--backends", "onnxruntime", *QUICK]
    journal = out / "journal.jsonl"
    process = subprocess.Popen([sys.executable, "-m", "edgeopt", *args], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (journal.is_file() and journal.read_text().count("\n") >= 1):
        time.sleep(0.2)
    process.kill()  # SIGKILL: no clean-up runs
    process.wait()
    before = journal.read_text().splitlines()
    assert 1 <= len(before) < 3, "the search should have been killed midway"

    refused = edgeopt(*args)
    assert_one_line_error(refused, "already holds a search", "--resume")
    resumed = edgeopt(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    after = journal.read_text().splitlines()
    assert after[:len(before)] == before  # finished candidates were not run again
    keys = [json.loads(line)["key"] for line in after]
    assert len(keys) == len(set(keys)) == 3
    assert "from the journal" in resumed.stdout
    results = json.loads((out / "results.json").read_text())
    records = [json.loads(line) for line in after]
    assert results["chosen"]["key"] == choose(records, "latency")["key"]


def test_impossible_goal_names_the_goal_and_the_closest_candidates(trained, tmp_path):  # noqa: F811
    out = tmp_path / "search"
    proc = optimize(trained[0], out, "--backends", "onnxruntime", "--max-latency-ms", "0.0001", *QUICK)
    assert proc.returncode == 3, proc.stderr
    text = " ".join(proc.stdout.split())
    assert "no candidate meets the goals" in text and "missed: --max-latency-ms" in text and "closest:" in text
    results = json.loads((out / "results.json").read_text())
    assert results["chosen"] is None and len(results["closest"]) >= 1
    assert not (out / "best").exists()


def test_remote_device_latencies_are_all_marked_as_estimates(trained, tmp_path):  # noqa: F811
    out = tmp_path / "search"
    proc = optimize(trained[0], out, "--backends", "onnxruntime", "--device", "rpi4b", *QUICK)
    assert proc.returncode == 0, proc.stderr
    results = json.loads((out / "results.json").read_text())
    measured = [r for r in results["candidates"] if r["status"] == "ok"]
    assert results["estimated"] and measured
    assert all(r["estimated"] and r["latency_ms"] != r["measured_ms"] and r["threads"] <= 4 for r in measured)
    html = (out / "report.html").read_text()
    assert "ESTIMATE" in html and "estimated for Raspberry Pi 4" in " ".join(proc.stdout.split())
    cells = html.split('id="candidates"')[1].split("</table>")[0]
    latencies = [row.split("<td>")[4].split("</td>")[0] for row in cells.split("<tr>")[2:]]
    assert latencies and all(cell.endswith("est.") for cell in latencies)


def test_unknown_device_and_bad_budget_are_one_clear_error(trained, tmp_path):  # noqa: F811
    assert_one_line_error(optimize(trained[0], tmp_path / "a", "--device", "pi9"), "unknown device 'pi9'")
    assert_one_line_error(edgeopt("optimize", str(trained[0]), "--data", "digits", "--out", str(tmp_path / "b"),
                                  "--budget", "soon"), "duration")


def test_devices_lists_the_matrix():
    proc = edgeopt("devices", "--sources")
    assert proc.returncode == 0, proc.stderr
    for name in ("rpi4b", "jetson-nano", "jetson-agx-xavier", "jetson-orin-nano", "x86-edge", "host", "estimated"):
        assert name in proc.stdout


def test_a_folder_that_is_not_a_search_is_never_deleted(trained, tmp_path):  # noqa: F811
    precious = tmp_path / "mine"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    assert_one_line_error(optimize(trained[0], precious, "--force"), "not an edgeopt search folder")
    assert (precious / "notes.txt").read_text() == "keep me"
