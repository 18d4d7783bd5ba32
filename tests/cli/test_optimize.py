"""`edgeopt optimize`, `build`, `devices` end to end on scikit-learn's digits, through real processes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edgeopt.core.artifact import Artifact
from edgeopt.backends import get_backend, open_session
from edgeopt.pipeline.recipe import ExportConfig, Recipe, Step
from edgeopt.search.journal import Journal
from edgeopt.search.pareto import choose
from edgeopt.tasks import get_task
from tests.helpers import assert_one_line_error, edgeopt

pytest.importorskip("torch_pruning")
pytestmark = pytest.mark.slow
QUICK = ("--prune-ratios", "none", "--resolutions", "none", "--students", "none", "--no-qat")
CHROMIUM = Path("/usr/bin/chromium")


def optimize(model, out, *args):
    return edgeopt("optimize", str(model), "--data", "digits", "--out", str(out), "--budget", "5m", *args)


@pytest.fixture(scope="module")
def search(trained, tmp_path_factory):
    # accuracy first: stage 2 is not skipped for latency, so the pruned candidate is probed, then trained
    out = tmp_path_factory.mktemp("optimize") / "search"
    proc = optimize(trained[0], out, "--backends", "onnxruntime,openvino", "--prune-ratios", "0.5", "--epochs", "2",
                    "--resolutions", "none", "--students", "none", "--no-qat", "--priority", "accuracy")
    assert proc.returncode == 0, proc.stderr
    return out, proc, json.loads((out / "results.json").read_text())


def test_search_chooses_an_artifact_that_meets_its_goals(search):
    out, proc, results = search
    chosen = results["chosen"]
    assert results["schema"] == 2 and chosen["violations"] == [] and chosen["drop_points"] <= 1.0
    stage1 = [r for r in results["candidates"] if r["stage"] == 1]
    assert {(r["recipe"]["export"]["backend"], (r["recipe"]["export"].get("quantization") or {}).get("mode"))
            for r in stage1} == {("onnxruntime", None), ("onnxruntime", "static"), ("onnxruntime", "aware"),
                                 ("openvino", None), ("openvino", "static"), ("openvino", "aware")}
    passing = [r for r in results["candidates"] if r["status"] == "ok" and not r["violations"]]
    top1 = [r["measurement"]["metrics"]["top1"] for r in passing]
    assert chosen["measurement"]["metrics"]["top1"] == max(top1)  # accuracy first: the most accurate that passes
    best = Artifact.open(out / "best")  # sha256-verified copy of the winner
    assert best.manifest["recipe"] == chosen["recipe"]
    assert Recipe.read(out / "best.toml").hash == chosen["key"]
    assert results["pareto_front"] and results["winner"]["task"]["confusion"]
    assert results["winner"]["profile"]["backend"] == best.backend
    text = " ".join(proc.stdout.split())
    assert "chosen:" in text and "report:" in text and "priority accuracy; at most 1 point of top-1 lost" in text


def test_near_equal_candidates_are_timed_side_by_side_before_one_is_chosen(search):
    from statistics import median

    from edgeopt.search.pareto import runoff_contenders
    from edgeopt.search.candidate import Candidate

    out, proc, results = search
    lines = [json.loads(line) for line in (out / "journal.jsonl").read_text().splitlines()]
    first: dict[str, Candidate] = {}
    for line in lines:
        if line["kind"] == "candidate":
            first.setdefault(line["key"], Candidate.from_dict(line))
    # which stage-1 exports were close enough to need it follows from their first timings (machine noise decides)
    close = {r.key for r in runoff_contenders([r for r in first.values() if r.stage == 1], get_task("classification").main)}
    retimed = {r["key"]: r for r in results["candidates"] if r["status"] == "ok" and r["measurement"]["p50_runs"]}
    if len(close) >= 2:
        assert close <= set(retimed) and "re-timed (median of the timings)" in " ".join(proc.stdout.split())
    for record in retimed.values():  # each timing in turn, the median kept
        runs = record["measurement"]["p50_runs"]
        assert len(runs) >= 4 and record["measurement"]["latency_ms"] == pytest.approx(median(runs))


def test_stage_two_probes_the_architecture_before_it_trains(search):
    out, proc, results = search
    records = [json.loads(line) for line in (out / "journal.jsonl").read_text().splitlines()]
    keys = [r["key"] for r in records]
    pruned = [r for r in records if r["kind"] == "candidate" and r["stage"] == 2 and r["status"] == "ok"]
    assert pruned, "the pruned candidates were not built"
    for candidate in pruned:
        recipe = Recipe.from_dict(candidate["recipe"])
        probe = f"probe:{recipe.untrained().hash}"
        assert probe in keys and keys.index(probe) < keys.index(candidate["key"])  # journaled first
    first = Recipe.from_dict(pruned[0]["recipe"]).label
    lines = proc.stdout.splitlines()
    planned = next(i for i, line in enumerate(lines) if line.startswith(f"{first}: predicted"))
    started = next(i for i, line in enumerate(lines) if line.startswith(f"{first}: building and measuring"))
    trained_line = next(i for i, line in enumerate(lines) if line.startswith(f"{first}: trained 2 epochs"))
    assert planned < started < trained_line  # probed, then built (trained inside the build), in that order


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


def test_a_training_recipe_rebuilds_to_the_same_weights(trained, tmp_path):
    recipe = Recipe(model=str(trained[0]), data="digits", steps=(Step.of("prune", ratio=0.5, fine_tune={"epochs": 1}),),
                    export=ExportConfig("onnxruntime"))
    path = recipe.write(tmp_path / "recipe.toml")
    outputs = []
    for name in ("one", "two"):
        proc = edgeopt("build", str(path), "--out", str(tmp_path / name))
        assert proc.returncode == 0, proc.stderr
        artifact = Artifact.open(tmp_path / name)
        outputs.append(open_session(artifact.path).run([artifact.input_spec.example(batch=4, seed=3)])[0])
    np.testing.assert_array_equal(outputs[0], outputs[1])


def test_killed_search_resumes_without_rerunning_finished_candidates(trained, tmp_path):
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
    records = [json.loads(line) for line in after]
    assert len({r["key"] for r in records}) == 3
    for index, record in enumerate(records):  # a key's second line only re-times it (side by side)
        if any(earlier["key"] == record["key"] for earlier in records[:index]):
            assert len(record["measurement"]["p50_runs"]) > 1
    assert "from the journal" in resumed.stdout
    results = json.loads((out / "results.json").read_text())
    assert results["chosen"]["key"] == choose(Journal(journal).candidates(), "latency", get_task("classification").main).key


def test_impossible_goal_names_the_goal_and_the_closest_candidates(trained, tmp_path):
    out = tmp_path / "search"
    proc = optimize(trained[0], out, "--backends", "onnxruntime", "--max-latency-ms", "0.0001", *QUICK)
    assert proc.returncode == 3, proc.stderr
    text = " ".join(proc.stdout.split())
    assert "no candidate meets the goals" in text and "missed: latency" in text and "closest:" in text
    assert "p50" in text and "(at most 0.0001)" in text
    results = json.loads((out / "results.json").read_text())
    assert results["chosen"] is None and len(results["closest"]) >= 1
    assert not (out / "best").exists()


def microcontroller_search(model, out, *args):
    """A quick search whose goals bound a microcontroller: (process, results.json)."""
    if get_backend("tflm").unavailable_reason():
        pytest.skip(f"tflm: {get_backend('tflm').unavailable_reason()}")
    proc = optimize(model, out, *args, *QUICK)
    return proc, json.loads((out / "results.json").read_text())


def test_a_microcontroller_search_keeps_to_tflm_and_chooses_an_artifact_within_its_sram_and_flash(trained, tmp_path):
    out = tmp_path / "search"
    proc, results = microcontroller_search(trained[0], out, "--device", "nano33-ble", "--max-accuracy-drop", "5")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert results["goals"]["max_sram_kb"] == 256 and results["goals"]["max_flash_kb"] == 1024  # the part's limits
    chosen = results["chosen"]
    assert chosen["recipe"]["export"]["backend"] == "tflm"
    measured = chosen["measurement"]
    manifest = Artifact.open(out / "best").manifest["compile"]
    assert measured["arena_kb"] == manifest["arena_bytes"] / 1024 <= 256
    assert manifest["flatbuffer_bytes"] / 1024 < measured["flash_kb"] <= 1024
    # the latency is the part's estimate from the flatbuffer's MACs (64 MHz, 0.5 MAC per cycle), labelled so
    assert measured["estimated"] and measured["latency_ms"] == pytest.approx(manifest["macs"] / 0.5 / 64e3)
    assert measured["estimate_low_ms"] < measured["latency_ms"] < measured["estimate_high_ms"]
    tried = {entry["label"]: entry["reason"] for entry in results["not_tried"]}
    assert "does not run on" in tried["onnxruntime (any precision)"]
    text = " ".join(proc.stdout.split())
    assert "arena KB" in text and "assumed int8 rate" in text


def test_a_budget_nothing_fits_ends_with_the_smallest_arena_found_and_no_artifact(trained, tmp_path):
    out = tmp_path / "search"
    proc, results = microcontroller_search(trained[0], out, "--max-sram-kb", "1", "--max-flash-kb", "4096")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    smallest = results["smallest_footprint"]["arena_kb"]
    assert smallest > 1 and results["chosen"] is None and not (out / "best").exists()
    text = " ".join(proc.stdout.split())
    assert f"nothing fits: smallest arena found {smallest:.0f} KB (budget 1 KB)" in text
    tried = {entry["label"]: entry["reason"] for entry in results["not_tried"]}
    assert "only a microcontroller runtime" in tried["openvino (any precision)"]  # nothing else can be judged


def test_remote_device_latencies_are_estimates_with_intervals_from_the_measurement_store(trained, tmp_path):
    from edgeopt.devices.calibration import MeasurementStore, Observation

    store = MeasurementStore(tmp_path / "measurements")  # three earlier Raspberry Pi measurements: 2x the roofline
    for estimate in (0.5, 1.0, 2.0):
        store.add(Observation("rpi4b", "onnxruntime", "fp32", estimate_ms=estimate, measured_ms=2 * estimate))
    out = tmp_path / "search"
    proc = optimize(trained[0], out, "--backends", "onnxruntime", "--device", "rpi4b", "--measurements",
                    str(store.root), *QUICK)
    assert proc.returncode == 0, proc.stderr
    results = json.loads((out / "results.json").read_text())
    measured = [r["measurement"] for r in results["candidates"] if r["status"] == "ok"]
    assert results["estimated"] and measured
    assert all(m["estimated"] and m["latency_ms"] != m["measured_ms"] and m["threads"] <= 4 for m in measured)
    assert all(m["estimate_basis"] == 3 and m["estimate_low_ms"] < m["latency_ms"] < m["estimate_high_ms"]
               for m in measured)
    html = (out / "report.html").read_text()
    text = " ".join(proc.stdout.split())
    assert "ESTIMATE" in html and "estimated for Raspberry Pi 4" in text and "corrected by 3 measurements" in text
    cells = html.split('id="candidates"')[1].split("</table>")[0]
    latencies = [row.split("<td>")[4].split("</td>")[0] for row in cells.split("<tr>")[2:]]
    # a row without latency is a candidate not measured (accuracy-aware INT8, when plain INT8 met the goals)
    assert latencies.count("") == len([c for c in results["candidates"] if c["status"] != "ok"])
    assert all(" est. [" in cell and cell.endswith("n=3]") for cell in latencies if cell)


@pytest.mark.skipif(get_backend("executorch").unavailable_reason() is not None, reason="executorch is not installed")
def test_native_runtime_lines_go_to_the_candidate_log_not_the_console(trained, tmp_path):
    out = tmp_path / "search"
    proc = optimize(trained[0], out, "--backends", "executorch", "--no-int8", *QUICK)
    assert proc.returncode == 0, proc.stderr
    console = proc.stdout + proc.stderr
    assert "cpuinfo" not in console and "threadpool" not in console.lower()
    (candidate,) = json.loads((out / "results.json").read_text())["candidates"]
    log = (out / candidate["log"]).read_text()
    assert "cpuinfo" in log or "threadpool" in log.lower()  # ExecuTorch's C++ lines, kept where they belong


def test_unknown_device_and_bad_budget_are_one_clear_error(trained, tmp_path):
    assert_one_line_error(optimize(trained[0], tmp_path / "a", "--device", "pi9"), "unknown device 'pi9'")
    assert_one_line_error(edgeopt("optimize", str(trained[0]), "--data", "digits", "--out", str(tmp_path / "b"),
                                  "--budget", "soon"), "duration")


def test_devices_lists_the_matrix():
    proc = edgeopt("devices", "--sources")
    assert proc.returncode == 0, proc.stderr
    for name in ("rpi4b", "jetson-nano", "jetson-agx-xavier", "jetson-orin-nano", "x86-edge", "host", "estimated"):
        assert name in proc.stdout


def test_a_folder_that_is_not_a_search_is_never_deleted(trained, tmp_path):
    precious = tmp_path / "mine"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    assert_one_line_error(optimize(trained[0], precious, "--force"), "not an edgeopt search folder")
    assert (precious / "notes.txt").read_text() == "keep me"
