"""Line counting through a score dip: a vehicle whose detector score falls under the report threshold for a
few frames right at the line (the highway detector does this, benchmarks/traffic.py) keeps its ByteTrack
track through the low-score association, so it is counted once."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("trackers", reason="the stream extra (trackers, supervision) is not installed")

from edgeopt.stream.pipeline import Counter  # noqa: E402


def _pass_down(counter: Counter, dip_score: float | None) -> dict[str, int]:
    """One 40x40 box moving 5 px a frame down across y = 160; at the line its score is ``dip_score`` for five
    frames (None: it is not detected at all there)."""
    counts = {}
    for frame in range(40):
        top = 60 + 5 * frame
        score = dip_score if 150 <= top + 20 <= 170 else 0.9  # the centre within 10 px of the line
        boxes = np.asarray([[100.0, top, 140.0, top + 40]], np.float32) if score is not None else np.zeros((0, 4), np.float32)
        scores = np.asarray([score] if score is not None else [], np.float32)
        _, counts = counter.update(boxes, scores, np.zeros(len(scores), np.int64))
    return counts


def test_a_box_whose_score_dips_at_the_line_is_counted_once_in_the_direction_it_moves():
    counter = Counter((300.0, 160.0, 40.0, 160.0), score_threshold=0.3)
    counter.start(25.0)
    assert _pass_down(counter, dip_score=0.15) == {"in": 1, "out": 0}


def test_a_box_that_vanishes_at_the_line_and_comes_back_is_not_counted_twice():
    counter = Counter((300.0, 160.0, 40.0, 160.0), score_threshold=0.3)
    counter.start(25.0)
    assert sum(_pass_down(counter, dip_score=None).values()) <= 1
