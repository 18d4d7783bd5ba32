"""A video source through an artifact: frames → preprocess → infer → decode → track → count → records.

Each processed frame becomes one JSON-ready record (frame index, capture-to-result latency,
the task's result as ``predict`` writes it — labels and scores, or boxes in the frame's
pixels — and for a tracked detector the track ids and line counts). Given a ladder (or an early-exit
model, whose threshold settings are its rungs) and a target,
each frame runs on the most accurate rung that the controller predicts will answer within the
target from the frame's capture (``edgeopt.runtime.controller``); the record names the rung, and
the summary counts frames per rung. Frames meet the model
as ``predict``'s images do (``edgeopt.images``), so a folder of images streamed gives
``predict``'s answers. ``StreamStats`` keeps what users of Frigate, DeepStream and Roboflow Inference
ask for: received, processed and skipped frames and their rates, unreadable frames,
reconnects, and latency p50/p95 — exposed on ``/metrics`` when a port is given — and joules per
frame where the machine has an energy counter (RAPL or hwmon; "not available" elsewhere).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgeopt.core.artifact import Artifact
from edgeopt.core.errors import ConfigError
from edgeopt.core.exits import StagedExits, is_staged_exits
from edgeopt.core.ladder import Ladder, is_ladder
from edgeopt.measure.energy import UNAVAILABLE, EnergyMeter, EnergyTally
from edgeopt.runtime.controller import Backlog, ControlConfig, RungController
from edgeopt.runtime.predictor import describe, predict_pixels
from edgeopt.stream.sources import SourceCounts, is_live, open_source
from edgeopt.tasks import task_of


@dataclass(frozen=True)
class StreamConfig:
    realtime: bool = False  # play a file at its own frame rate with the live drop policy
    fps_cap: float | None = None  # process at most this many frames a second
    max_frames: int | None = None  # stop after this many processed frames
    duration: float | None = None  # stop after this many seconds
    score_threshold: float = 0.3
    track: bool = True  # detectors: ByteTrack ids (trackers), needed for line counts
    # detectors: boxes down to this score reach the tracker's second association only (ByteTrack's low-score
    # boxes: a vehicle whose score dips for a few frames keeps its track, so it is counted once); new tracks
    # and the records take boxes at score_threshold and above
    track_threshold: float = 0.05
    line: tuple[float, float, float, float] | None = None  # x1, y1, x2, y2 in frame pixels: count crossings
    annotate: Path | None = None  # write the frames with boxes drawn to this video file
    reconnect_attempts: int = 10
    threads: int | None = None
    target_ms: float | None = None  # a ladder: each frame's rung is chosen to answer within this from capture


@dataclass
class StreamStats:
    source: SourceCounts = field(default_factory=SourceCounts)  # the source's own counters, read live
    processed: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list, repr=False)
    counts: dict[str, int] = field(default_factory=dict)  # line crossings
    rungs: dict[str, int] = field(default_factory=dict)  # a ladder: frames processed per rung
    joules: float | None = None  # what the machine's energy counters counted over the run (None: no counter)
    energy_source: str = UNAVAILABLE

    @property
    def received(self) -> int:
        return self.source.received

    @property
    def skipped(self) -> int:
        return self.source.skipped

    @property
    def unreadable(self) -> int:
        return self.source.unreadable

    @property
    def reconnects(self) -> int:
        return self.source.reconnects

    def summary(self) -> dict[str, Any]:
        seconds = max(self.seconds, 1e-9)
        latency = np.asarray(self.latencies_ms or [np.nan])
        return {"received": self.received, "processed": self.processed, "skipped": self.skipped,
                "unreadable": self.unreadable, "reconnects": self.reconnects, "seconds": round(self.seconds, 3),
                "received_fps": round(self.received / seconds, 2), "processed_fps": round(self.processed / seconds, 2),
                "skipped_fps": round(self.skipped / seconds, 2),
                "latency_p50_ms": round(float(np.nanpercentile(latency, 50)), 3),
                "latency_p95_ms": round(float(np.nanpercentile(latency, 95)), 3),
                **({"counts": self.counts} if self.counts else {}), **({"rungs": self.rungs} if self.rungs else {}),
                "energy": {"joules_per_frame": None if self.joules is None or not self.processed
                           else round(self.joules / self.processed, 4), "source": self.energy_source}}


class Counter:
    """ByteTrack ids (``trackers``) and, with a line, in/out crossings (supervision's LineZone)."""

    def __init__(self, line: tuple[float, float, float, float] | None, score_threshold: float) -> None:
        import supervision as sv
        import trackers  # about a second to import: done before the source opens

        self.sv, self.trackers, self.score_threshold = sv, trackers, score_threshold
        self.tracker = None
        # a box crosses when its centre does (supervision's default waits for all four corners, which a box
        # that is lost near the far edge never completes)
        self.line = None if line is None else sv.LineZone(start=sv.Point(line[0], line[1]), end=sv.Point(line[2], line[3]),
                                                          triggering_anchors=(sv.Position.CENTER,))

    def start(self, fps: float) -> None:
        # every box reported is one the user asked for: all take part in ByteTrack's first (high-confidence) match
        self.tracker = self.trackers.ByteTrackTracker(frame_rate=fps, track_activation_threshold=self.score_threshold,
                                                      high_conf_det_threshold=self.score_threshold)

    def update(self, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray) -> tuple[list[int], dict[str, int]]:
        detections = self.sv.Detections(xyxy=boxes.reshape(-1, 4).astype(np.float32), confidence=scores.astype(np.float32),
                                        class_id=labels.astype(int))
        tracked = self.tracker.update(detections)
        ids = [] if tracked.tracker_id is None else [int(i) for i in tracked.tracker_id]
        if self.line is None:
            return ids, {}
        self.line.trigger(tracked)
        return ids, {"in": int(self.line.in_count), "out": int(self.line.out_count)}


def run_stream(source: str, artifact: str | Path, config: StreamConfig = StreamConfig(),
               on_record: Callable[[dict[str, Any]], None] = lambda record: None,
               on_progress: Callable[[StreamStats], None] | None = None,
               stop: threading.Event | None = None) -> StreamStats:
    """Run ``artifact`` (an artifact folder, or a ladder or early-exit model with ``config.target_ms``) over ``source`` until it ends, a
    limit is reached or ``stop`` is set (between frames, so every frame taken is either processed or counted
    skipped); every record goes to ``on_record``."""
    model = _Model.open(artifact, config)
    spec, task, labels = model.spec, model.task, model.labels
    if config.line is not None and not task.boxes_tracked:
        raise ConfigError(f"--line counts tracked boxes: it needs a detector artifact (this one's task is {task.name})")
    live = config.realtime or is_live(source)
    counter = Counter(config.line, config.score_threshold) if task.boxes_tracked and config.track else None
    decode_at = min(config.track_threshold, config.score_threshold) if counter is not None else config.score_threshold
    # the source opens last: a live one starts delivering at once, and nothing may be skipped while we load
    feed = open_source(source, realtime=config.realtime, reconnect_attempts=config.reconnect_attempts, stop=stop)
    if counter is not None:
        counter.start(feed.fps)
    writer = None
    meter = EnergyMeter.find()
    stats = StreamStats(feed.counts, energy_source=meter.source if meter else UNAVAILABLE)
    energy = EnergyTally(meter) if meter else None
    started, last = time.perf_counter(), 0.0
    try:
        for frame in feed.frames(stop):
            if config.fps_cap and (wait := last + 1 / config.fps_cap - time.perf_counter()) > 0:
                time.sleep(wait)
                if live:  # this frame went stale while we waited: drop it (counted) and take the newest
                    feed.counts.skipped += 1
                    continue
            last = time.perf_counter()
            rung = model.pick(frame.captured)
            record, result = predict_pixels(model.sessions[rung], spec, task, labels, frame.image, decode_at)
            tracked = task.boxes(result)
            if decode_at < config.score_threshold:  # the faint boxes were for the tracker: the record keeps the rest
                result = task.above(result, config.score_threshold)
                record = describe(task, result, (record["width"], record["height"]), labels)
            if model.controller is not None:
                model.controller.observe(rung, 1, 1000 * (time.perf_counter() - last))
                record = {"rung": model.names[rung], **record}
                stats.rungs[model.names[rung]] = stats.rungs.get(model.names[rung], 0) + 1
            if frame.file is not None:
                record = {"image": frame.file, **record}
            if counter is not None and tracked is not None:
                record["track_ids"], counts = counter.update(tracked.boxes, tracked.scores, tracked.labels)
                if counts:
                    record["counts"] = stats.counts = counts
            latency = (time.perf_counter() - frame.captured) * 1000
            stats.processed += 1
            stats.latencies_ms.append(latency)
            on_record({"frame": frame.index, "time": round(frame.captured - started, 4),
                       "latency_ms": round(latency, 3), **record})
            if config.annotate is not None:
                writer = _annotated(writer, config.annotate, task.draw(frame.image, result, labels), feed.fps)
            stats.seconds = time.perf_counter() - started
            if energy is not None:  # read every frame: a counter that rolls over mid-run is unrolled
                stats.joules = energy.update()
            if on_progress is not None:
                on_progress(stats)
            if (config.max_frames and stats.processed >= config.max_frames) or \
                    (config.duration and time.perf_counter() - started >= config.duration):
                break
    except KeyboardInterrupt:
        pass  # Ctrl-C in a program that set no ``stop``: the stream stops, its figures are still reported
    finally:
        feed.close()
        if writer is not None:
            writer.release()
        stats.seconds = time.perf_counter() - started
        if energy is not None:
            stats.joules = energy.update()
    return stats



@dataclass
class _Model:
    """What frames run on: one artifact's session, a ladder's sessions, or an early-exit model's threshold settings,
    and (for the last two) the controller that picks one per frame."""

    sessions: list[Any]
    names: list[str]
    controller: RungController | None
    spec: Any
    task: Any
    labels: list[str] | None

    @classmethod
    def open(cls, path: str | Path, config: StreamConfig) -> "_Model":
        from edgeopt.backends import get_backend

        def load(artifact: Artifact):  # shared_cpu: beside the decoder
            return get_backend(artifact.backend).load(artifact, threads=config.threads, shared_cpu=True)

        adaptive = is_ladder(path) or is_staged_exits(path)
        if not adaptive:
            artifact = Artifact.open(path)
            task = task_of(artifact)  # an unknown task is refused before the model loads
            return cls([load(artifact)], [], None, artifact.input_spec, task, artifact.manifest.get("labels") or None)
        if config.target_ms is None:
            what = "a ladder" if is_ladder(path) else "an early-exit model"
            raise ConfigError(f"{path} is {what}: streaming it needs a latency target (--target-ms), which picks "
                              "the rung for each frame")
        control = ControlConfig(target_ms=config.target_ms)
        if is_staged_exits(path):
            from edgeopt.runtime.exits import ExitRunner, task_of_exits

            staged = StagedExits.open(path)
            task = task_of_exits(staged)
            controller = RungController.for_exits(staged, control, max_batch=1)  # refuses untimed settings
            sessions = ExitRunner.load_sessions(staged.stages, config.threads)
            return cls([ExitRunner(sessions, s.thresholds) for s in staged.settings], [s.name for s in staged.settings],
                       controller, staged.input_spec, task, staged.labels)
        ladder = Ladder.open(path)
        first = ladder.rungs[0].artifact
        return cls([load(r.artifact) for r in ladder.rungs], [r.name for r in ladder.rungs],
                   RungController.for_ladder(ladder, control, max_batch=1), first.input_spec, task_of(first),
                   first.manifest.get("labels") or None)

    def pick(self, captured: float) -> int:
        """The rung for a frame captured at ``captured`` (perf_counter seconds)."""
        if self.controller is None:
            return 0
        return self.controller.choose(Backlog(1000 * (time.perf_counter() - captured), 1))


def _annotated(writer, out: Path, drawn: np.ndarray, fps: float):
    """``drawn`` (an RGB frame with the task's result on it) appended to the video ``out``."""
    import cv2

    if writer is None:
        out.parent.mkdir(parents=True, exist_ok=True)
        writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps, (drawn.shape[1], drawn.shape[0]))
    writer.write(np.ascontiguousarray(drawn[..., ::-1]))
    return writer
