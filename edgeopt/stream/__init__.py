"""``edgeopt stream``: a video file, camera or RTSP/HTTP stream through an artifact, torch-free.

``sources`` reads frames (OpenCV) with an explicit drop policy and reconnects; ``pipeline``
runs the artifact, tracks and counts (trackers' ByteTrack, supervision's LineZone) and keeps
received / processed / skipped figures; ``metrics`` serves them to Prometheus.
"""

from edgeopt.stream.pipeline import StreamConfig, StreamStats, run_stream

__all__ = ["StreamConfig", "StreamStats", "run_stream"]
