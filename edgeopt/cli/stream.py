"""``edgeopt stream``: video through an artifact, one JSON line per processed frame (torch-free)."""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path
from typing import List, Optional

import typer

from edgeopt.cli.app import app
from edgeopt.cli.common import ArchOption, PluginOption, ThreadsOption, TrustModelOption


@app.command("stream")
def stream_command(
    source: str = typer.Argument(..., help="A video file, a folder of images, a camera index (0), or an rtsp:// or http:// URL."),
    artifact: Path = typer.Argument(..., help="An artifact folder (classifier or detector), or a ladder (`edgeopt ladder`) or early-exit model (`edgeopt exits`) with --target-ms."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write the JSON lines here instead of stdout."),
    summary: Optional[Path] = typer.Option(None, "--summary", help="Write the run's figures (received/processed/skipped FPS, latency) as JSON."),
    realtime: bool = typer.Option(False, "--realtime", help="Play a file at its own frame rate with the live drop policy (newest frame wins), as a camera would."),
    fps_cap: Optional[float] = typer.Option(None, "--fps-cap", help="Process at most this many frames a second."),
    max_frames: Optional[int] = typer.Option(None, "--max-frames", help="Stop after this many processed frames."),
    duration: Optional[float] = typer.Option(None, "--duration", help="Stop after this many seconds."),
    score_threshold: float = typer.Option(0.3, "--score-threshold", help="Detectors: report boxes at least this confident."),
    line: Optional[str] = typer.Option(None, "--line", help="Detectors: count tracked boxes crossing the line x1,y1,x2,y2 (frame pixels)."),
    no_track: bool = typer.Option(False, "--no-track", help="Detectors: no tracking (no ids, no counts)."),
    track_threshold: float = typer.Option(0.05, "--track-threshold", help="Detectors: boxes down to this score keep existing tracks alive (ByteTrack's low-score association; new tracks and the records need --score-threshold)."),
    annotate: Optional[Path] = typer.Option(None, "--annotate", help="Write the frames with their results drawn (boxes, or a classifier's label) to this video (.mp4)."),
    metrics_port: Optional[int] = typer.Option(None, "--metrics-port", help="Serve the stream's figures to Prometheus on 127.0.0.1:PORT/metrics."),
    target_ms: Optional[float] = typer.Option(None, "--target-ms", help="Ladders and early-exit models: run each frame on the most accurate rung (exit setting) predicted to answer within this many ms of its capture."),
    reconnect_attempts: int = typer.Option(10, "--reconnect-attempts", help="Live sources: open and reopen attempts, waiting 0.25 s doubling up to 8 s between them, before giving up (10: about 48 s for a camera that is not up yet; Ctrl-C ends the wait)."),
    arch: Optional[str] = ArchOption,
    trust_model: bool = TrustModelOption,
    threads: Optional[int] = ThreadsOption,
    plugin: List[str] = PluginOption,
) -> None:
    """Run ARTIFACT over SOURCE: files frame by frame; live sources newest-frame-first, skipped frames counted."""
    from edgeopt.core.errors import ConfigError
    from edgeopt.stream import StreamConfig, run_stream

    parsed_line = None
    if line is not None:
        try:
            parsed_line = tuple(float(v) for v in line.split(","))
        except ValueError:
            parsed_line = ()
        if len(parsed_line) != 4:
            raise ConfigError(f"--line must be four numbers x1,y1,x2,y2 in frame pixels, not {line!r}")
    config = StreamConfig(realtime=realtime, fps_cap=fps_cap, max_frames=max_frames, duration=duration,
                          score_threshold=score_threshold, track=not no_track, track_threshold=track_threshold, line=parsed_line, annotate=annotate,
                          reconnect_attempts=reconnect_attempts, threads=threads, target_ms=target_ms)
    # Ctrl-C and a service manager's SIGTERM end the stream between two frames: every figure stays exact
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    metrics = None
    if metrics_port is not None:
        from edgeopt.stream.metrics import StreamMetrics

        metrics = StreamMetrics(metrics_port)
    sink = open(out, "w") if out is not None else sys.stdout
    try:
        stats = run_stream(source, artifact, config, on_record=lambda r: sink.write(json.dumps(r) + "\n"),
                           on_progress=metrics.update if metrics else None, stop=stop)
    finally:
        if out is not None:
            sink.close()
        if metrics is not None:
            metrics.close()
    figures = stats.summary()
    if summary is not None:
        summary.write_text(json.dumps(figures, indent=2) + "\n")
    line_out = " · ".join(f"{k} {v}" for k, v in figures.items() if k not in ("counts", "energy"))
    energy = figures["energy"]
    joules = (f"{energy['joules_per_frame']} J/frame ({energy['source']})" if energy["joules_per_frame"] is not None
              else f"energy {energy['source']}")
    sys.stderr.write(f"stream: {line_out}{' · counts ' + json.dumps(figures['counts']) if 'counts' in figures else ''}"
                     f" · {joules}\n")
    if stats.unreadable:
        sys.stderr.write(f"stream: {stats.unreadable} frame(s) of {source} could not be decoded (damaged or truncated); "
                         "they were reported, not replaced\n")
