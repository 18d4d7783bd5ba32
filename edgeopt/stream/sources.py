"""Where frames come from (OpenCV; a folder of images through ``edgeopt.images``), and the drop
policy that keeps a live source current. Every frame is uint8 RGB, as a decoded photo is.

- A **folder of images** is read in path order, each image decoded as ``predict`` decodes it;
  one that cannot be decoded is counted unreadable and skipped.
- A **file** is read frame by frame: nothing is dropped, the model sets the pace. A frame that
  cannot be decoded is counted (never replaced by an invented one); at the end, frames the
  container declares but that never decoded (a truncated file) are counted too.
- A **live source** — a camera index, an RTSP/HTTP URL, or a file with ``realtime=True``
  (played at its own frame rate, as a camera would deliver it) — is read by its own thread
  into a one-frame slot: the consumer always gets the newest frame, and every frame that was
  overwritten before the consumer took it is counted as skipped. A live source that fails is
  reopened with exponential backoff, counting reconnects, until ``reconnect_attempts``
  consecutive failures. A camera or server that is not up yet when the stream starts (cameras
  reboot and start late) is waited for with the same backoff: with the default 10 attempts the
  stream gives up after about 48 s of waiting (``give_up_seconds``; a host that does not answer
  adds up to the 5 s open timeout per attempt), and Ctrl-C or SIGTERM ends the wait at once.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeopt.core.errors import ConfigError, InputError

OPEN_TIMEOUT_MS = 5000
READ_TIMEOUT_MS = 5000
FIRST_BACKOFF_S = 0.25
MAX_BACKOFF_S = 8.0
log = logging.getLogger("edgeopt.stream")


def backoff_delays(attempts: int, max_backoff: float = MAX_BACKOFF_S) -> list[float]:
    """The waits before each of ``attempts`` reopen attempts: doubling from 0.25 s, capped at ``max_backoff``."""
    return [min(FIRST_BACKOFF_S * 2 ** k, max_backoff) for k in range(attempts)]


def give_up_seconds(attempts: int, max_backoff: float = MAX_BACKOFF_S) -> float:
    """How long a live source is waited for (not counting each attempt's own open timeout) before the stream stops."""
    return sum(backoff_delays(attempts, max_backoff))


@dataclass
class Frame:
    index: int  # position in the source (frames received so far, this one included, minus one)
    image: np.ndarray  # (H, W, 3) uint8 RGB
    captured: float  # time.perf_counter() when it was read
    file: str | None = None  # the image file it was decoded from (a folder source)


@dataclass
class SourceCounts:
    received: int = 0  # frames decoded from the source
    skipped: int = 0  # live: overwritten before the model took them
    unreadable: int = 0  # could not be decoded (damaged or truncated)
    reconnects: int = 0  # live: times the source was reopened


def open_capture(source: str):
    """A cv2.VideoCapture on ``source`` (a camera index or a path/URL), or one clear error."""
    import os

    import cv2

    # RTSP over TCP: a dropped server is seen at once (UDP waits out the read timeout) and no packet is lost
    os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp")
    target: int | str = int(source) if source.isdigit() else source
    if isinstance(target, str) and "://" not in target and not Path(target).is_file():
        raise ConfigError(f"video source {source!r} is neither a file, a camera index nor a URL")
    if isinstance(target, str) and "://" in target and target.split("://")[0].lower() not in STREAM_SCHEMES:
        raise ConfigError(f"video source {source!r}: {target.split('://')[0]!r} is not a stream protocol edgeopt reads "
                          f"({', '.join(STREAM_SCHEMES)})")
    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, OPEN_TIMEOUT_MS, cv2.CAP_PROP_READ_TIMEOUT_MSEC, READ_TIMEOUT_MS]
    capture = cv2.VideoCapture(target, cv2.CAP_ANY if isinstance(target, int) else cv2.CAP_FFMPEG, params)
    if not capture.isOpened():
        capture.release()
        raise InputError(f"cannot open video source {source!r}: not a video OpenCV can decode, or not reachable")
    return capture


STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "rtp", "srt")  # what FFmpeg reads


def is_live(source: str) -> bool:
    return source.isdigit() or "://" in source


def rgb(bgr: np.ndarray) -> np.ndarray:
    """An OpenCV frame (BGR, or gray) as uint8 RGB."""
    return np.ascontiguousarray(np.repeat(bgr[..., None], 3, axis=-1) if bgr.ndim == 2 else bgr[..., ::-1])


def open_source(source: str, realtime: bool = False, reconnect_attempts: int = 10,
                stop: threading.Event | None = None):
    """The frames of ``source``: a folder of images, a video file, a camera index or a stream URL. ``stop`` ends
    the wait for a live source that is not up yet (the source then gives no frames)."""
    if Path(source).is_dir():
        if realtime:
            raise ConfigError(f"{source} is a folder of images: it has no frame rate to play it at (drop --realtime)")
        return FolderSource(source)
    if realtime or is_live(source):
        return LiveSource(source, realtime_file=realtime and not is_live(source), reconnect_attempts=reconnect_attempts,
                          stop=stop)
    return FileSource(source)


class FolderSource:
    """Every image of a folder (``edgeopt.images.image_files``: recursive, sorted), decoded as ``predict`` does."""

    fps = 25.0  # a nominal rate, for tracking and an annotated video

    def __init__(self, source: str) -> None:
        from edgeopt.images import image_files

        self.files = image_files(source)
        if not self.files:
            raise ConfigError(f"{source} holds no JPEG, PNG, BMP or WebP images")
        self.counts = SourceCounts()

    def frames(self, stop: threading.Event | None = None):
        from edgeopt.images import decode_image

        for index, file in enumerate(self.files):
            if stop is not None and stop.is_set():
                return
            try:
                image = decode_image(file, channels=3)
            except InputError:
                self.counts.unreadable += 1
                continue
            self.counts.received += 1
            yield Frame(index, image, time.perf_counter(), str(file))

    def close(self) -> None:
        pass


class FileSource:
    """Every frame of a video file, in order."""

    def __init__(self, source: str, max_bad_in_a_row: int = 5) -> None:
        import cv2

        self.source = source
        self.capture = open_capture(source)
        self.fps = float(self.capture.get(cv2.CAP_PROP_FPS)) or 25.0
        self.declared = int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)  # 0 when the container does not say
        self.counts = SourceCounts()
        self.max_bad_in_a_row = max_bad_in_a_row

    def frames(self, stop: threading.Event | None = None):
        index, bad_in_a_row = 0, 0
        while stop is None or not stop.is_set():
            ok, image = self.capture.read()
            if ok and image is not None and image.size:
                bad_in_a_row = 0
                self.counts.received += 1
                yield Frame(index, rgb(image), time.perf_counter())
                index += 1
                continue
            if self.declared and index < self.declared and bad_in_a_row < self.max_bad_in_a_row:
                bad_in_a_row += 1  # a damaged frame: count it, try the next
                self.counts.unreadable += 1
                index += 1
                continue
            break
        else:
            self.capture.release()
            return  # stopped on request: the rest of the file is not "unreadable"
        if self.declared > index:  # declared by the container, never decoded: a truncated file
            self.counts.unreadable += self.declared - index
        self.capture.release()

    def close(self) -> None:
        self.capture.release()


class LiveSource:
    """The newest frame of a camera, a stream URL, or a file played in real time; see the module docstring."""

    def __init__(self, source: str, realtime_file: bool = False, reconnect_attempts: int = 10,
                 max_backoff: float = MAX_BACKOFF_S, stop: threading.Event | None = None) -> None:
        import cv2

        self.source = source
        self.realtime_file = realtime_file
        self.reconnect_attempts = reconnect_attempts
        self.max_backoff = max_backoff
        self.counts = SourceCounts()
        self._slot: Frame | None = None
        self._lock = threading.Condition()
        self._stopped = threading.Event()
        self.capture = open_capture(source) if realtime_file else self._first_open(stop or threading.Event())
        self._ended = self.capture is None  # stopped while waiting for the source: no frames
        self.fps = (float(self.capture.get(cv2.CAP_PROP_FPS)) or 25.0) if self.capture is not None else 25.0
        self._thread = threading.Thread(target=self._read, name="edgeopt-capture", daemon=True)
        if self.capture is not None:
            self._thread.start()

    def frames(self, stop: threading.Event | None = None):
        while stop is None or not stop.is_set():
            with self._lock:
                while self._slot is None and not self._ended and not (stop is not None and stop.is_set()):
                    self._lock.wait(0.2)
                if self._slot is None:
                    return
                frame, self._slot = self._slot, None
            yield frame

    def close(self) -> None:
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join(timeout=READ_TIMEOUT_MS / 1000 + 2)
        with self._lock:
            if self._slot is not None:  # received, never processed: skipped, so the counts add up
                self.counts.skipped += 1
                self._slot = None

    def _read(self) -> None:
        index, started = 0, time.perf_counter()
        try:
            while not self._stopped.is_set():
                ok, image = self.capture.read()
                if not ok or image is None:
                    if self.realtime_file or not self._reconnect():
                        break
                    continue
                if self.realtime_file:  # deliver at the file's own rate, as a camera would
                    delay = started + index / self.fps - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                self._offer(Frame(index, rgb(image), time.perf_counter()))
                index += 1
        finally:
            self.capture.release()
            with self._lock:
                self._ended = True
                self._lock.notify_all()

    def _offer(self, frame: Frame) -> None:
        with self._lock:
            self.counts.received += 1
            if self._slot is not None:
                self.counts.skipped += 1  # the model did not take the previous one in time
            self._slot = frame
            self._lock.notify_all()

    def _first_open(self, stop: threading.Event):
        """The camera or server, waited for with the reconnect backoff when it is not up yet (a path or a protocol
        that is not a source at all is refused at once); one clear error when it never comes; None when ``stop``
        is set while waiting."""
        delays = backoff_delays(self.reconnect_attempts, self.max_backoff)
        for attempt, delay in enumerate([*delays, None], 1):
            try:
                return open_capture(self.source)
            except InputError:
                if delay is None:
                    raise InputError(f"cannot open video source {self.source!r}: not reachable after {attempt} attempts "
                                     f"over {sum(delays):.0f} s; check that the camera or server is up and the address "
                                     "is right, or wait longer with --reconnect-attempts") from None
                log.warning("video source %s is not up yet; trying again in %.2f s (attempt %d of %d)", self.source,
                            delay, attempt + 1, len(delays) + 1)
                if stop.wait(delay):
                    return None
        raise AssertionError("unreachable")

    def _reconnect(self) -> bool:
        """Reopen the source with exponential backoff; False after ``reconnect_attempts`` failures in a row."""
        self.capture.release()
        for delay in backoff_delays(self.reconnect_attempts, self.max_backoff):
            if self._stopped.wait(delay):
                return False
            try:
                self.capture = open_capture(self.source)
            except (InputError, ConfigError):
                continue
            self.counts.reconnects += 1
            return True
        return False
