"""A stream's figures for Prometheus: frames received / processed / skipped / unreadable, reconnects,
rates, capture-to-result latency and (a ladder) frames per rung, served by prometheus-client on a loopback port."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge, Histogram, ProcessCollector, start_http_server

from edgeopt.stream.pipeline import StreamStats


class StreamMetrics:
    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self.frames = Gauge("edgeopt_stream_frames", "Frames so far, by what became of them.", ["state"],
                            registry=self.registry)
        self.fps = Gauge("edgeopt_stream_fps", "Frames per second since the start, by state.", ["state"],
                         registry=self.registry)
        self.rung_frames = Gauge("edgeopt_stream_rung_frames", "A ladder's processed frames, by rung.", ["rung"],
                                 registry=self.registry)
        self.reconnects = Gauge("edgeopt_stream_reconnects", "Times the source was reopened.", registry=self.registry)
        self.latency = Histogram("edgeopt_stream_latency_seconds", "Capture to result, per processed frame.",
                                 buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2),
                                 registry=self.registry)
        self._seen = 0
        self.server, self.thread = start_http_server(port, addr=host, registry=self.registry)

    def update(self, stats: StreamStats) -> None:
        for state in ("received", "processed", "skipped", "unreadable"):
            value = getattr(stats, state)
            self.frames.labels(state).set(value)
            self.fps.labels(state).set(value / max(stats.seconds, 1e-9))
        self.reconnects.set(stats.reconnects)
        for rung, frames in stats.rungs.items():
            self.rung_frames.labels(rung).set(frames)
        for latency in stats.latencies_ms[self._seen:]:
            self.latency.observe(latency / 1000)
        self._seen = len(stats.latencies_ms)

    def close(self) -> None:
        self.server.shutdown()
