"""`edgeopt stream` as a user runs it: a video of the test images scores what `edgeopt eval` scores, truncated
videos report their bad frames, live sources count what they skip, a dropped network source is reconnected,
and tracked boxes are counted crossing a line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import edgeopt, free_port

cv2 = pytest.importorskip("cv2", reason="the stream extra (opencv-python) is not installed")
UNBUFFERED = {**os.environ, "PYTHONUNBUFFERED": "1"}  # each record reaches the test as it is written


def write_video(frames: list[np.ndarray], path, fps: float = 25) -> None:
    """Frames (H, W) or (H, W, 3) uint8 as a lossless FFV1 AVI (the container declares its frame count)."""
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), fps, (width, height))
    assert writer.isOpened()
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR) if frame.ndim == 2 else frame)
    writer.release()


def _records(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _moving_square(count: int = 60, size: int = 64) -> list[np.ndarray]:
    frames, rng = [], np.random.default_rng(0)
    for i in range(count):
        frame = np.full((size, size), 40, np.uint8) + rng.integers(0, 20, (size, size), dtype=np.uint8)
        x = 2 + i * (size - 22) // count
        frame[22:40, x:x + 18] = 220  # a filled square, as the shapes detector learnt them
        frames.append(frame)
    return frames


@pytest.fixture(scope="module")
def detector_artifact(trained_detector, tmp_path_factory):
    checkpoint, _ = trained_detector
    out = tmp_path_factory.mktemp("stream-det") / "fp32"
    proc = edgeopt("export", str(checkpoint), "-b", "onnxruntime", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.mark.slow
def test_a_video_of_the_test_images_scores_the_map_that_eval_reports(trained_detector, detector_artifact, tmp_path):
    from PIL import Image

    from edgeopt.tasks.detection.boxes import Detections
    from edgeopt.tasks.detection.data import load_detection
    from edgeopt.tasks.detection.task import coco_evaluation

    _, data = trained_detector
    test = load_detection(str(data), size=None, channels=1).test  # the images at their own size, as filmed
    frames = [np.asarray(Image.open(data / "images" / name)) for name in test.names]
    write_video(frames, tmp_path / "conveyor.avi")
    proc = edgeopt("stream", str(tmp_path / "conveyor.avi"), str(detector_artifact), "--score-threshold", "0.01",
                   "--no-track", "--summary", str(tmp_path / "summary.json"))
    assert proc.returncode == 0, proc.stderr
    records = _records(proc.stdout)
    assert [r["frame"] for r in records] == list(range(len(test)))
    found = [Detections(np.asarray(r["boxes"], np.float32).reshape(-1, 4), np.asarray(r["scores"], np.float32),
                        np.asarray([test.classes.index(name) for name in r["labels"]], np.int64)) for r in records]
    streamed = coco_evaluation(found, test)["map50"]
    evaluated = edgeopt("eval", str(detector_artifact), "--data", str(data), "--json", str(tmp_path / "eval.json"))
    assert evaluated.returncode == 0, evaluated.stderr
    expected = json.loads((tmp_path / "eval.json").read_text())["metrics"]["map50"]
    print(f"mAP@0.5 streamed {streamed:.4%} vs eval {expected:.4%}")
    assert expected > 0.5 and abs(streamed - expected) < 0.002, (streamed, expected)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["received"] == summary["processed"] == len(test) and summary["skipped"] == summary["unreadable"] == 0


class _BrightSquareDetector:
    """A detector that never misses the one bright square on a dark, noisy ground, in YOLOv8's layout (N, 4 + 2
    classes, 1 candidate; boxes in input pixels): the line-count test is about tracking and counting, and a trained
    detector's misses and stray low-score boxes (which differ with the CPU it was trained on) would decide it."""

    @staticmethod
    def export(onnx_file) -> None:
        import torch

        class Oracle(torch.nn.Module):
            def forward(self, x):
                gray = x.mean(1)  # whatever the normalization: bright is above the middle of the frame's range
                low, high = gray.amin((1, 2), keepdim=True), gray.amax((1, 2), keepdim=True)
                inside = gray > (low + high) / 2
                height, width = gray.shape[1], gray.shape[2]
                ys = torch.arange(height, dtype=x.dtype).view(1, height, 1).expand_as(gray)
                xs = torch.arange(width, dtype=x.dtype).view(1, 1, width).expand_as(gray)
                far = torch.full_like(gray, 1e6)
                x0, x1 = torch.where(inside, xs, far).amin((1, 2)), torch.where(inside, xs, -far).amax((1, 2)) + 1
                y0, y1 = torch.where(inside, ys, far).amin((1, 2)), torch.where(inside, ys, -far).amax((1, 2)) + 1
                sure = torch.ones_like(x0)
                boxes = torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0, sure, 0 * sure], dim=1)
                return boxes.unsqueeze(-1)

        torch.onnx.export(Oracle().eval(), (torch.zeros(1, 3, 64, 64),), str(onnx_file), dynamo=True, opset_version=18)


def test_tracked_boxes_crossing_a_line_are_counted(tmp_path):
    _BrightSquareDetector.export(tmp_path / "oracle.onnx")
    made = edgeopt("export", str(tmp_path / "oracle.onnx"), "-b", "onnxruntime", "--outputs", "yolov8", "--labels",
                   "square,frame", "-o", str(tmp_path / "oracle"))
    assert made.returncode == 0, made.stderr
    write_video(_moving_square(), tmp_path / "belt.avi")
    proc = edgeopt("stream", str(tmp_path / "belt.avi"), str(tmp_path / "oracle"), "--line", "32,0,32,64",
                   "--summary", str(tmp_path / "s.json"))
    assert proc.returncode == 0, proc.stderr
    records = _records(proc.stdout)
    assert all(len(r["boxes"]) == 1 for r in records)  # the detector is sure of the one square in every frame
    tracked = {i for r in records for i in r["track_ids"]} - {-1}
    counts = json.loads((tmp_path / "s.json").read_text())["counts"]
    assert len(tracked) == 1 and counts in ({"in": 1, "out": 0}, {"in": 0, "out": 1}), (tracked, counts)


def test_a_truncated_video_reports_its_bad_frames_and_exits_cleanly(served, tmp_path):
    write_video([np.random.default_rng(i).integers(0, 255, (64, 64, 3), dtype=np.uint8) for i in range(40)],
                tmp_path / "whole.avi")
    data = (tmp_path / "whole.avi").read_bytes()
    (tmp_path / "cut.avi").write_bytes(data[: int(len(data) * 0.6)])
    proc = edgeopt("stream", str(tmp_path / "cut.avi"), str(served["det"]), "--summary", str(tmp_path / "s.json"))
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    assert 0 < summary["processed"] < 40 and summary["processed"] + summary["unreadable"] == 40, summary
    assert f"{summary['unreadable']} frame(s)" in proc.stderr and "could not be decoded" in proc.stderr
    assert len(_records(proc.stdout)) == summary["processed"]


def test_a_missing_or_non_video_source_is_one_clear_error(served, tmp_path):
    (tmp_path / "notes.avi").write_text("not a video")
    for source, phrase in [(str(tmp_path / "absent.mp4"), "neither a file"), (str(tmp_path / "notes.avi"), "cannot open")]:
        proc = edgeopt("stream", source, str(served["det"]))
        assert proc.returncode == 1 and "Traceback" not in proc.stderr and phrase in proc.stderr, proc.stderr


def test_a_live_source_faster_than_the_model_counts_every_skipped_frame(served, tmp_path):
    write_video([np.full((64, 64, 3), i % 255, np.uint8) for i in range(300)], tmp_path / "fast.avi", fps=100)
    proc = edgeopt("stream", str(tmp_path / "fast.avi"), str(served["det"]), "--realtime", "--fps-cap", "20",
                   "--summary", str(tmp_path / "s.json"))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    records = _records(proc.stdout)
    assert summary["received"] == 300 and len(records) == summary["processed"]
    assert summary["received"] == summary["processed"] + summary["skipped"], summary
    assert summary["skipped"] > 150 and summary["skipped_fps"] > 0, summary  # ~100 fps in, 20 fps processed
    frames = [r["frame"] for r in records]
    assert frames == sorted(frames) and len(set(frames)) == len(frames)


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed (apt-get install ffmpeg)")
def test_a_network_source_that_drops_mid_run_is_reconnected(served, tmp_path):
    # ffmpeg's own HTTP server (-listen 1); it cannot serve RTSP (its RTSP muxer only pushes to a server), so the
    # RTSP reconnect below runs against GStreamer's RTSP server
    write_video(_moving_square(100), tmp_path / "loop.avi")
    port = free_port()
    url = f"http://127.0.0.1:{port}/belt.ts"

    def serve_video() -> subprocess.Popen:
        return _ffmpeg_http_server(tmp_path / "loop.avi", url)

    _assert_reconnects_after_a_drop(url, serve_video, served["det"], tmp_path)


def _ffmpeg_http_server(video: Path, url: str) -> subprocess.Popen:
    """ffmpeg's own HTTP server (-listen 1) playing ``video`` in a loop at its frame rate."""
    return subprocess.Popen(["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i",
                             str(video), "-c:v", "mpeg4", "-q:v", "3", "-f", "mpegts", "-listen", "1", url],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed (apt-get install ffmpeg)")
def test_a_stream_started_before_its_source_is_up_connects_when_it_appears(served, tmp_path):
    """A camera that boots after the stream: the stream waits (with the reconnect backoff), then runs its 3 s."""
    write_video(_moving_square(100), tmp_path / "loop.avi")
    url = f"http://127.0.0.1:{free_port()}/late.ts"
    stream = subprocess.Popen([sys.executable, "-m", "edgeopt", "stream", url, str(served["det"]), "--duration", "3",
                               "--summary", str(tmp_path / "s.json")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=UNBUFFERED)
    server = None
    try:
        time.sleep(2.5)  # the stream has tried, and is waiting
        assert stream.poll() is None, stream.communicate()[1]
        server = _ffmpeg_http_server(tmp_path / "loop.avi", url)
        out, err = stream.communicate(timeout=60)
    finally:
        stream.kill()
        if server is not None:
            server.kill()
    assert stream.returncode == 0, err
    assert "not up yet" in err
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["processed"] > 0 and summary["received"] == summary["processed"] + summary["skipped"]
    energy = summary["energy"]  # a figure where the machine counts energy, else said plainly
    assert (energy["joules_per_frame"] is None) == energy["source"].startswith("not available"), energy


def test_a_source_that_never_comes_up_is_given_up_on_with_one_clear_error(served, tmp_path):
    url = f"http://127.0.0.1:{free_port()}/never.ts"
    started = time.perf_counter()
    proc = edgeopt("stream", url, str(served["det"]), "--reconnect-attempts", "2")
    assert proc.returncode == 1 and "not reachable after 3 attempts" in proc.stderr and "Traceback" not in proc.stderr
    assert time.perf_counter() - started < 30


def test_a_stream_waiting_for_its_source_stops_at_sigterm_and_a_protocol_it_cannot_read_is_refused_at_once(served,
                                                                                                      tmp_path):
    url = f"http://127.0.0.1:{free_port()}/never.ts"
    stream = subprocess.Popen([sys.executable, "-m", "edgeopt", "stream", url, str(served["det"]), "--summary",
                               str(tmp_path / "s.json")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while "not up yet" not in (line := stream.stderr.readline()) and line and time.monotonic() < deadline:
        pass  # edgeopt's imports and the model's load take a few seconds here: wait for the first retry
    stream.terminate()  # a service manager stopping it mid-wait
    out, err = stream.communicate(timeout=15)
    assert stream.returncode == 0 and "Traceback" not in err, err
    assert json.loads((tmp_path / "s.json").read_text())["received"] == 0
    started = time.perf_counter()
    proc = edgeopt("stream", "htps://127.0.0.1/typo", str(served["det"]))
    assert proc.returncode != 0 and "not a stream protocol" in proc.stderr and time.perf_counter() - started < 20


def _assert_reconnects_after_a_drop(url: str, start_server, artifact, tmp_path) -> None:
    """`edgeopt stream URL` for 8 s while the server started by ``start_server`` is killed about 3 s in (2 s after
    the stream's first frame: the drop is mid-run however long the stream took to start) and started again 1 s
    later: the stream reconnects, processes frames after the return, and its counts add up. The stream may
    start before the server listens: it waits for it."""
    server = start_server()
    stream = subprocess.Popen([sys.executable, "-m", "edgeopt", "stream", url, str(artifact), "--duration", "8",
                               "--summary", str(tmp_path / "s.json")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=UNBUFFERED)
    try:
        first = stream.stdout.readline()  # the stream is connected and processing ("" if it exited)
        time.sleep(2)
        server.kill()  # the source drops mid-run ...
        server.wait()
        time.sleep(1)
        server = start_server()  # ... and comes back on the same address
        out, err = stream.communicate(timeout=60)
    finally:
        server.kill()
        stream.kill()
    assert stream.returncode == 0, err
    summary = json.loads((tmp_path / "s.json").read_text())
    records = _records(first + out)
    assert summary["reconnects"] >= 1, summary
    assert records and records[-1]["time"] > 4.5, "no frame was processed after the source came back"
    assert summary["received"] == summary["processed"] + summary["skipped"]


def _rtsp_server_unavailable() -> str | None:
    probe = subprocess.run(["/usr/bin/python3", "-c", "import gi; gi.require_version('GstRtspServer', '1.0')"],
                           capture_output=True) if shutil.which("/usr/bin/python3") else None
    if probe is None or probe.returncode != 0:
        return "no RTSP server here: needs the system python3 with gir1.2-gst-rtsp-server-1.0 (see .ci/run)"
    return None


@pytest.mark.skipif(_rtsp_server_unavailable() is not None, reason=str(_rtsp_server_unavailable()))
def test_an_rtsp_source_that_drops_mid_run_is_reconnected(served, tmp_path):
    port = free_port()
    script = str(Path(__file__).with_name("rtsp_server.py"))

    def serve_rtsp() -> subprocess.Popen:
        server = subprocess.Popen(["/usr/bin/python3", script, str(port)], stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, text=True)
        assert server.stdout.readline().strip() == "ready"
        return server

    _assert_reconnects_after_a_drop(f"rtsp://127.0.0.1:{port}/belt", serve_rtsp, served["det"], tmp_path)


def test_sigterm_stops_a_live_stream_cleanly_with_its_figures(served, tmp_path):
    write_video([np.full((64, 64, 3), i % 255, np.uint8) for i in range(500)], tmp_path / "long.avi", fps=25)
    stream = subprocess.Popen([sys.executable, "-m", "edgeopt", "stream", str(tmp_path / "long.avi"), str(served["det"]),
                               "--realtime", "--summary", str(tmp_path / "s.json")], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=UNBUFFERED)
    first = stream.stdout.readline()  # under way ("" if it exited): however long it took to start
    time.sleep(2)
    stream.terminate()
    out, err = stream.communicate(timeout=30)
    assert stream.returncode == 0 and "Traceback" not in err, err
    summary = json.loads((tmp_path / "s.json").read_text())
    assert 0 < summary["processed"] < 500 and len(_records(first + out)) == summary["processed"]
    assert summary["received"] == summary["processed"] + summary["skipped"]


@pytest.fixture(scope="module")
def slow_fast_ladder(tmp_path_factory):
    """A ladder of a wide CNN (r0, milliseconds a frame at 128 px) and a narrow one (r1, many times faster)."""
    from edgeopt.compile import export
    from edgeopt.models.sources import load_model
    from edgeopt.pipeline.ladder import LadderConfig, assemble

    root = tmp_path_factory.mktemp("stream-ladder")
    for width in (96, 8):
        export(load_model(f"edgeopt.models.zoo:tiny_cnn?width={width}", input="1x3x128x128"), "onnxruntime",
               root / f"w{width}")
    ladder, _ = assemble(root / "ladder", [root / "w96", root / "w8"], config=LadderConfig(batches=(1,), threads=1))
    assert len(ladder.rungs) == 2
    return ladder


@pytest.mark.slow  # two 128-px CNNs exported and timed; tests/serve/test_ladder.py keeps the controller in the fast tier
def test_a_ladder_stream_at_twice_the_full_rungs_capacity_switches_rungs_and_accounts_for_every_frame(
        slow_fast_ladder, tmp_path):
    full_ms = slow_fast_ladder.rungs[0].latency_ms[1]["p50"]
    fps = min(200.0, 2000.0 / full_ms)  # frames arrive twice as fast as r0 can take them
    write_video([np.full((128, 128, 3), i % 255, np.uint8) for i in range(int(fps * 3))], tmp_path / "v.avi", fps=fps)
    # r0 answers a fresh frame in time; one that waited a while (up to half of r0's time) makes it step down
    target = 1.4 * full_ms
    proc = edgeopt("stream", str(tmp_path / "v.avi"), str(slow_fast_ladder.path), "--realtime", "--threads", "1",
                   "--target-ms", f"{target:.3f}", "--summary", str(tmp_path / "s.json"))
    assert proc.returncode == 0, proc.stderr
    summary, records = json.loads((tmp_path / "s.json").read_text()), _records(proc.stdout)
    assert summary["received"] == summary["processed"] + summary["skipped"], summary
    assert summary["processed"] == len(records) == sum(summary["rungs"].values())
    assert set(summary["rungs"]) == {"r0", "r1"}, summary["rungs"]
    assert {r: sum(rec["rung"] == r for rec in records) for r in ("r0", "r1")} == summary["rungs"]


@pytest.mark.slow  # two 128-px CNNs exported and timed; tests/serve/test_ladder.py keeps the controller in the fast tier
def test_a_ladder_without_a_target_is_refused(slow_fast_ladder, tmp_path):
    write_video([np.zeros((128, 128, 3), np.uint8)] * 3, tmp_path / "v.avi")
    proc = edgeopt("stream", str(tmp_path / "v.avi"), str(slow_fast_ladder.path))
    assert proc.returncode == 1 and "--target-ms" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow  # trains a digits model and its exits (20 s)
def test_an_early_exit_model_streams_on_the_setting_its_target_allows(staged_digits, tmp_path):
    from edgeopt.tasks import get_task

    _, staged = staged_digits
    names = [s.name for s in staged.settings]
    digits = get_task("classification").load("digits", staged.input_spec).test.images[:40]  # 8x8 gray uint8
    write_video([np.kron(d[..., 0], np.ones((8, 8), np.uint8)) for d in digits], tmp_path / "digits.avi")
    for target in ("60000", "0.001"):
        proc = edgeopt("stream", str(tmp_path / "digits.avi"), str(staged.path), "--target-ms", target,
                       "--summary", str(tmp_path / "s.json"))
        assert proc.returncode == 0, proc.stderr
        summary, records = json.loads((tmp_path / "s.json").read_text()), _records(proc.stdout)
        assert summary["received"] == summary["processed"] + summary["skipped"] == 40, summary
        assert sum(summary["rungs"].values()) == 40 and set(summary["rungs"]) <= set(names), summary["rungs"]
        assert {r: sum(rec["rung"] == r for rec in records) for r in summary["rungs"]} == summary["rungs"]
        if target == "60000":
            assert summary["rungs"] == {names[0]: 40}  # time to spare: never leave early
        else:  # no time at all: the first frame on the fastest (then frame times teach the estimates, which may move it)
            assert records[0]["rung"] == names[-1] and summary["rungs"].get(names[0], 0) < 40
    proc = edgeopt("stream", str(tmp_path / "digits.avi"), str(staged.path))
    assert proc.returncode == 1 and "--target-ms" in proc.stderr and "early-exit model" in proc.stderr
