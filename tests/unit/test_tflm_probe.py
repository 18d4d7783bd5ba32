"""The protocol of the TFLM probe (edgeopt.backends._tflm_probe) with real child processes standing in for TFLM:
an answer is found past native noise, and a child that stays silent, dies of a signal or fails in Python is each
told apart, with nothing left running."""

from __future__ import annotations

import pytest

from edgeopt.backends import _tflm_probe

ANSWER = '{"runs": true, "x": 1}'


@pytest.mark.parametrize("child, expected", [
    # native noise and the answer in one write: the answer is read, not left in a buffer until a false timeout
    (f"import sys, time; sys.stdin.readline(); sys.stdout.write('noise\\n{ANSWER}\\n'); sys.stdout.flush(); "
     "time.sleep(30)", {"runs": True, "x": 1}),
    # noise without a newline before the child's own newline-led answer
    (f"import sys, time; sys.stdin.readline(); sys.stdout.write('noise'); sys.stdout.write('\\n{ANSWER}\\n'); "
     "sys.stdout.flush(); time.sleep(30)", {"runs": True, "x": 1}),
    ("import time; time.sleep(30)", {"runs": False, "timed_out": True, "crashed": False}),  # never answers
    ("import os; os.kill(os.getpid(), 11)", {"runs": False, "timed_out": False, "crashed": True}),  # TFLM segfaults
    ("import os; os.kill(os.getpid(), 24)", {"runs": False, "timed_out": True, "crashed": False}),  # its CPU limit
    ("raise SystemExit('tflite_micro is broken here')", {"runs": False, "crashed": False,
                                                           "error": "tflite_micro is broken here"}),
])
def test_the_probe_reads_its_answer_past_noise_and_tells_silence_crash_and_failure_apart(child, expected, monkeypatch,
                                                                                         tmp_path):
    monkeypatch.setattr(_tflm_probe, "CHILD", child)
    monkeypatch.setattr(_tflm_probe, "ANSWER_S", 2.0)
    with _tflm_probe.Probe(tmp_path / "model.tflite") as probe:
        answer = probe.ask(1024)
        assert {key: answer.get(key) for key in expected} == expected
    assert probe.child is None and probe.errors is None  # closed: nothing left running or open


def test_the_real_child_starts_from_any_folder_without_importing_what_lies_there(tmp_path, monkeypatch):
    pytest.importorskip("tflite_micro")
    (tmp_path / "numpy.py").write_text("raise SystemExit('a stranger numpy.py was imported')\n")
    (tmp_path / "model.tflite").write_bytes(b"\0\0\0\0TFL3" + bytes(64))
    monkeypatch.chdir(tmp_path)
    with _tflm_probe.Probe(tmp_path / "model.tflite") as probe:
        answer = probe.ask(4096)
    assert answer["runs"] is False and "error" not in answer  # it started (no stranger import) and TFLM refused
