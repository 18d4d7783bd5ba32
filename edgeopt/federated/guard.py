"""A Flower program's keeper: when edgeopt dies, the program and everything it started die too.

Flower's SuperLink starts the ServerApp as its own child (a SuperNode, each round's ClientApp),
and the kernel's parent-death signal reaches a direct child only. Flower's children watch their
parent and interrupt themselves when it is gone, but in Flower 1.42 a ServerApp whose SuperLink
was killed then waits forever to upload its last log lines to it: a ``kill -9`` of ``edgeopt
federate server`` left a ServerApp process (with PyTorch loaded) behind. The SuperLink starts it
through a launcher in a session of its own, so not even a process-group kill reaches it. So every
Flower program edgeopt starts runs under this guard: the guard gets SIGTERM when its parent dies
(Linux), and on SIGTERM, SIGINT or SIGHUP it sends SIGTERM to every process descending from it
(psutil walks the tree, whatever session each is in), gives them ``GRACE`` seconds, SIGKILLs the
ones left and exits. When the program ends by itself, the guard ends with its exit code.

Run as ``python -m edgeopt.federated.guard PARENT_PID COMMAND...`` (``PARENT_PID`` closes
the race of a parent that died before the guard asked to be told).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys

GRACE = 5.0
ENDINGS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def main(argv: list[str]) -> int:
    if len(argv) < 2 or not argv[0].isdigit():
        print("usage: python -m edgeopt.federated.guard PARENT_PID COMMAND...", file=sys.stderr)
        return 2
    parent, command = int(argv[0]), argv[1:]
    program = subprocess.Popen(command)
    for sig in ENDINGS:
        signal.signal(sig, lambda signum, frame: _end_family(program))
    _signal_when_parent_dies(signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before the kernel could be asked to tell us
        _end_family(program)
    return program.wait()


def _signal_when_parent_dies(sig: int) -> None:
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, sig)  # PR_SET_PDEATHSIG


def _end_family(program: subprocess.Popen) -> None:
    """SIGTERM to every descendant (the program first), ``GRACE`` seconds, SIGKILL to those left; then exit."""
    import psutil

    for sig in ENDINGS:
        signal.signal(sig, signal.SIG_IGN)
    family = psutil.Process().children(recursive=True)  # read before any of them dies and orphans its own
    for member in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.terminate()
    _, left = psutil.wait_procs(family, timeout=GRACE)
    for member in left:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.kill()
    program.poll()
    os._exit(128 + signal.SIGTERM)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
