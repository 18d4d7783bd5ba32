"""A zygote for the tests' ``python -m edgeopt`` runs (tests/helpers.py starts it; run as a script, never imported).

Every CLI run used to pay 4-13 CPU-seconds importing torch, torchvision, sympy and torch.export before doing
a fraction of a second of work: on a two-core machine most of the fast tier went there. This process imports
those third-party libraries once (nothing of edgeopt, nothing of the tests) and then forks one child per run.
The child is a process of its own, as ``python -m edgeopt`` would be: its own cwd, environment, argv,
sys.path (cwd first), stdin from /dev/null, stdout and stderr to files, edgeopt imported afresh (so nothing
granted or registered in one run is seen by another), its exit status the interpreter's (an uncaught
exception prints its traceback and exits 1, atexit handlers run). The tests that need a bare interpreter
(import weight, kill -9, signals to servers and streams) still start one (subprocess.Popen).

Usage: python tests/cli_zygote.py SOCKET. It prints "ready" once listening and exits when its stdin closes
(the pytest process that started it is gone)."""

import json
import os
import select
import signal
import socket
import sys

PRELOAD = ("numpy", "torch", "torchvision", "sympy", "torch.export", "torch._dynamo", "torch.onnx",
           "torch.onnx._internal.exporter._compat", "onnx", "onnxscript", "safetensors", "PIL.Image", "typer",
           "rich.console", "httpx", "sklearn.datasets")


def serve(path: str):
    """Forks a waiter per request; returns the request in the grandchild that must run it (None: stdin closed)."""
    for name in PRELOAD:
        try:
            __import__(name)
        except Exception:  # a missing optional library: the child imports (or fails on) it itself
            pass
    base_path = sys.path[1:]  # sys.path[0] is this script's folder; a child puts its cwd there, as -m does
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(64)
    print("ready", flush=True)
    while True:
        readable, _, _ = select.select([server, sys.stdin], [], [], 0.5)
        reap()
        if sys.stdin in readable and not sys.stdin.buffer.read1(1):
            return None
        if server not in readable:
            continue
        conn, _ = server.accept()
        if os.fork() != 0:
            conn.close()
            continue
        # the waiter: runs the command in a grandchild, reports its pid then its exit status
        server.close()
        with conn.makefile("rb") as reader:
            request = json.loads(reader.readline())
        pid = os.fork()
        if pid == 0:
            conn.close()
            request["base_path"] = base_path
            return request
        try:
            conn.sendall(f"{pid}\n".encode())
            _, status, usage = os.wait4(pid, 0)
            if os.environ.get("ZYGOTE_CPU_LOG"):
                with open(os.environ["ZYGOTE_CPU_LOG"], "a") as log:
                    log.write(f"{usage.ru_utime + usage.ru_stime:7.2f} {' '.join(request['args'])[:140]}\n")
            conn.sendall(f"{os.waitstatus_to_exitcode(status)}\n".encode())
            conn.close()
        finally:  # a client gone after a timeout is nothing to report
            os._exit(0)


def reap() -> None:
    """Collect finished waiters (so that their CPU time, and their run's, is counted as this process's children)."""
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass


def become(request: dict) -> None:
    """Turn this forked grandchild into ``python -m edgeopt ARGS`` run in ``cwd`` with ``env``."""
    import runpy
    import types

    os.chdir(request["cwd"])
    for fd, (path, flags) in enumerate([(os.devnull, os.O_RDONLY),
                                        (request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
                                        (request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)]):
        opened = os.open(path, flags, 0o644)
        os.dup2(opened, fd)
        os.close(opened)
    os.environ.clear()
    os.environ.update(request["env"])
    sys.path[:] = [os.getcwd(), *request["base_path"]]
    if "numpy" in sys.modules:  # a fresh process seeds numpy's global generator from the OS
        sys.modules["numpy"].random.seed()
    sys.argv = ["-m", *request["args"]]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        runpy._run_module_as_main("edgeopt", alter_argv=True)
        code = 0
    except SystemExit as stop:  # as the interpreter reads it
        code = stop.code if isinstance(stop.code, int) else 0 if stop.code is None else 1
        if not isinstance(stop.code, (int, type(None))):
            print(stop.code, file=sys.stderr)
    except KeyboardInterrupt:
        exit_like_the_interpreter(None)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    except BaseException:
        sys.excepthook(*sys.exc_info())
        code = 1
    exit_like_the_interpreter(code)


def exit_like_the_interpreter(code: int | None) -> None:
    """What Py_FinalizeEx does that a program can see (wait for non-daemon threads, run atexit handlers,
    flush stdio) without its teardown of every module: 1.5 s with torch.export loaded, and nothing to observe."""
    import atexit
    import threading

    threading._shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    if code is not None:
        os._exit(code & 0xFF)


if __name__ == "__main__":
    job = serve(sys.argv[1])
    if job is None:  # done: wait for any run still going, then leave without tearing torch down
        try:
            while True:
                os.wait()
        except ChildProcessError:
            os._exit(0)
    become(job)
