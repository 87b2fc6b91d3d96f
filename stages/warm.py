"""Warm starts: `make study` keeps one process with the heavy libraries imported, and each stage forks from it.

A stage process spends seconds importing PyTorch, MLflow, pandas and scikit-learn before it does any work, and a
study runs some fifty of them. `python -m stages.study` therefore starts `python -m stages.warm SOCKET` beside DVC
and names the socket in `$STUDY_WARM_SOCKET`; each `python -m stages ...` that DVC starts then hands its
command to that server (`forward`, the first thing `stages/__main__.py` does) and waits for it, instead of doing
the imports itself.

What runs is the same as without the server:
- The server imports only third-party libraries. The study's own modules (`pipeline`, `stages`, `benchmarks`) are
  imported afresh in every worker, so an edit to them always takes effect and is what DVC hashed.
- The worker gets the stage process's stdin, stdout and stderr (passed over the socket), working directory,
  `sys.argv`, `sys.path`, environment and start time (for the stage's `profile.json`). It runs `python -m stages`
  as `__main__`, then the interpreter's exit steps (non-daemon threads joined, `atexit`).
- Signals the stage process gets (Ctrl-C, DVC stopping it) are passed on to the worker. The stage process exits
  with the worker's status.
- The random generators a fresh process would start with are set again in each worker.

A stage started while the server is still importing waits for it. Anything off and the stage runs in its own
process, as it would with no server:
- no server (or one that stopped);
- another interpreter;
- a different value of a variable the native libraries read when loaded (`OMP_NUM_THREADS` and the like);
- a stdin, stdout or stderr that is closed;
- CUDA initialised in the server by an import (a forked process cannot use it).

`STUDY_WARM=0 make study` turns the server off. Not a pipeline stage (and not imported by one, except
`forward`, which runs before any of the study's code).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import sys
import time

SOCKET_ENV = "STUDY_WARM_SOCKET"
PROJECT = ("pipeline", "stages", "benchmarks", "tests")  # imported afresh in each worker, never served warm
# read by native libraries (OpenMP, MKL, oneDNN, the allocator, PyTorch, CUDA) when they are loaded, or by the
# interpreter at start-up: a worker forked from a server started under other values would not behave like a fresh
# process, so such a stage runs on its own
LOAD_TIME = ("OMP_", "MKL_", "KMP_", "GOMP_", "OPENBLAS_", "DNNL_", "ONEDNN_", "MALLOC_", "LD_", "PYTORCH_", "TORCH_",
             "CUDA_", "NCCL_", "PYTHON")
# third-party modules the stages import inside functions (those at the top of the study's modules come with them)
PRELOAD = ("mlflow", "mlflow.pytorch", "sklearn.decomposition", "sklearn.linear_model", "sklearn.manifold",
           "sklearn.model_selection", "sklearn.preprocessing", "sklearn.svm", "scipy.linalg", "scipy.stats",
           "torchvision", "torch.utils.flop_counter")


def _load_time_env(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith(LOAD_TIME)}


def _process_age() -> float:
    from pipeline.clock import since_start

    return since_start()


def _send(sock: socket.socket, data: bytes) -> None:
    sock.sendall(struct.pack("!I", len(data)) + data)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise ConnectionError("the other end closed the connection")
        out += chunk
    return out


def _recv(sock: socket.socket) -> bytes:
    (n,) = struct.unpack("!I", _recv_exact(sock, 4))
    return _recv_exact(sock, n)


def forward() -> None:
    """Hand this `python -m stages ...` to the warm server named in $STUDY_WARM_SOCKET and exit with its status;
    return (so the command runs here) when there is no server or it cannot take this one."""
    path = os.environ.get(SOCKET_ENV)
    if not path:
        return
    try:
        for fd in (0, 1, 2):
            os.fstat(fd)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(path)
    except OSError:
        return
    umask = os.umask(0)
    os.umask(umask)
    header = {"argv": sys.argv, "cwd": os.getcwd(), "path": sys.path, "env": dict(os.environ), "umask": umask,
              "executable": sys.executable, "started": time.time() - _process_age()}
    try:
        socket.send_fds(sock, [b"F"], [0, 1, 2])
        _send(sock, json.dumps(header).encode())
        reply = _recv(sock).decode()
    except (OSError, ConnectionError):
        sock.close()
        return
    if not reply.startswith("ok "):  # the server cannot run this one: it runs here
        sock.close()
        return
    worker = int(reply.split()[1])

    def pass_on(signum, _frame):
        try:
            os.kill(worker, signum)
        except OSError:
            pass

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(signum, pass_on)
    try:
        code = int(_recv(sock).decode())
    except (OSError, ConnectionError, ValueError):
        print("error: the warm-start server stopped during the stage (rerun it; STUDY_WARM=0 runs stages cold)",
              file=sys.stderr)
        code = 1
    sys.stdout.flush()
    os._exit(128 - code if code < 0 else code)  # killed by a signal: the shell's 128 + its number


def _preload() -> None:
    """Import what the stages import: the study's command modules (for their imports) and the libraries they
    import lazily; then drop the study's own modules, which each worker imports afresh."""
    import importlib

    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:  # an optional library not installed: the stage imports it itself, or does without
            pass
    import pkgutil

    import pipeline

    for module in pkgutil.walk_packages(pipeline.__path__, "pipeline."):
        try:
            importlib.import_module(module.name)
        except ImportError:
            pass
    _drop_project_modules()


def _drop_project_modules() -> None:
    for name in [n for n in sys.modules if n.split(".")[0] in PROJECT]:
        del sys.modules[name]


def _fresh_random_state() -> None:
    """The generators a new process starts with: Python's and NumPy's from fresh entropy, PyTorch's at its fixed
    default seed (each process starts there)."""
    import random

    random.seed()
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()
    if "torch" in sys.modules:
        sys.modules["torch"].default_generator.set_state(sys.modules["torch"].Generator().get_state())


_IMPORTS_SET: dict[str, str] = {}  # environment variables the server's imports set


def _worker(header: dict, fds: list[int]) -> None:
    """Become the stage process: its fds, directory, environment and arguments; run `python -m stages`."""
    import atexit
    import runpy
    import threading
    import traceback

    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        if fd > 2:
            os.close(fd)
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGCHLD):
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.chdir(header["cwd"])
    os.umask(header["umask"])
    os.environ.clear()
    os.environ.update(header["env"])
    os.environ.pop(SOCKET_ENV, None)  # the worker runs the command itself
    for key, value in _IMPORTS_SET.items():  # what the libraries' imports put there, as they would in a fresh process
        os.environ.setdefault(key, value)
    sys.argv[:] = header["argv"]
    sys.path[:] = header["path"]
    for stream in (sys.stdout, sys.stderr):
        stream.reconfigure(line_buffering=stream is sys.stderr or stream.isatty())
    _fresh_random_state()
    import pipeline.clock

    pipeline.clock.started_at(header["started"])
    code: int = 0
    try:
        runpy.run_module("stages", run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        if exc.code is None:
            code = 0
        elif isinstance(exc.code, int):
            code = exc.code
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except KeyboardInterrupt:
        code = 128 + signal.SIGINT
    except BaseException:  # noqa: BLE001 - what the interpreter does with an uncaught exception
        traceback.print_exc()
        code = 1
    try:  # the interpreter's own exit steps, in its order: threads (their exit hooks, then a join), then atexit
        threading._shutdown()
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code & 0xFF)


def _note(log: str, header: dict, why: str | None) -> None:
    """One line per stage in the server's log: its command, and why it ran cold if it did."""
    with open(log, "a") as f:
        f.write(json.dumps({"argv": header.get("argv", [])[1:], "cold": why}) + "\n")


def _keeper(conn: socket.socket, server_env: dict[str, str], log: str) -> None:
    """One stage: check it can run warm, fork its worker, tell the client the worker's pid, wait for the worker
    (or kill it if the client goes away first), tell the client its status."""
    import select

    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the server's SIG_IGN would reap the worker before waitpid
    try:
        _, fds, _, _ = socket.recv_fds(conn, 1, 3)
        header = json.loads(_recv(conn))
        why = None
        if len(fds) != 3:
            why = "no stdin, stdout and stderr"
        elif header["executable"] != sys.executable:
            why = "another interpreter"
        elif _load_time_env(header["env"]) != _load_time_env(server_env):
            why = "other load-time settings"
        elif "torch" in sys.modules and sys.modules["torch"].cuda.is_initialized():
            why = "CUDA was initialised in the server"  # a forked child could not use it
        _note(log, header, why)
        if why:
            _send(conn, f"no {why}".encode())
            return
        pid = os.fork()
        if pid == 0:
            conn.close()
            _worker(header, fds)
        for fd in fds:
            os.close(fd)
        _send(conn, f"ok {pid}".encode())
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                _send(conn, str(os.waitstatus_to_exitcode(status)).encode())
                return
            readable, _, _ = select.select([conn], [], [], 0.2)
            if readable and not conn.recv(1):  # the stage process is gone (killed): so is its worker
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return
    except (OSError, ConnectionError, ValueError, KeyError):
        return
    finally:
        os._exit(0)


def serve(path: str) -> None:
    """Import the libraries, listen on `path`, fork a keeper per stage; stop when the process that started it
    has gone (or on SIGTERM)."""
    parent = os.getppid()
    server_env = dict(os.environ)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the stages (through their clients), not this
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    tmp = f"{path}.{os.getpid()}"
    listener.bind(tmp)
    listener.listen(16)
    # listening before the imports: a stage that DVC starts meanwhile waits in the backlog for them (rather than
    # importing the same libraries beside them on the same cores), and is taken as soon as they are done
    os.replace(tmp, path)
    try:
        _preload()
        global _IMPORTS_SET
        _IMPORTS_SET = {k: v for k, v in os.environ.items() if server_env.get(k) != v}
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # keepers are reaped by the kernel
        open(f"{path}.ready", "w").close()
        listener.settimeout(2.0)
        while os.getppid() == parent:
            try:
                conn, _ = listener.accept()
            except socket.timeout:
                continue
            conn.settimeout(None)
            if os.fork() == 0:
                listener.close()
                _keeper(conn, server_env, f"{path}.log")
            conn.close()
    finally:
        listener.close()
        try:
            os.unlink(path)
        except OSError:
            pass


class Server:
    """`with Server() as env:` a warm server for the block's stages; `env` is the environment to run them in
    (the socket named in it), or without the socket where `STUDY_WARM=0`."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.env = dict(os.environ if env is None else env)
        self.proc = None
        self.dir = None
        self.log = None

    def __enter__(self) -> dict[str, str]:
        import subprocess
        import tempfile

        self.env.pop(SOCKET_ENV, None)
        if self.env.get("STUDY_WARM", "1") == "0":
            return self.env
        self.dir = tempfile.mkdtemp(prefix="study-warm-")
        sock = os.path.join(self.dir, "socket")
        # its own process group, so Ctrl-C at the terminal reaches each stage once, through its client; the same
        # session, so the kernel's scheduler (autogroups are per session) shares the CPU with its workers as it
        # would with stages started directly
        self.proc = subprocess.Popen([sys.executable, "-m", "stages.warm", sock], env=self.env,
                                     stdin=subprocess.DEVNULL, process_group=0)
        self.log = f"{sock}.log"
        deadline = time.monotonic() + 30
        while not os.path.exists(sock) and self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)  # listening takes a fraction of a second; the imports go on while the block runs
        return {**self.env, SOCKET_ENV: sock}

    def ready(self, timeout: float = 300.0) -> bool:
        """Wait until the server takes stages (its imports done); False if it stopped or the time ran out."""
        if self.proc is None or self.log is None:
            return False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            if os.path.exists(self.log[: -len(".log")] + ".ready"):
                return True
            time.sleep(0.1)
        return False

    def stages(self) -> list[dict]:
        """The stages the server has taken so far: {"argv": the command's arguments, "cold": why it ran on its
        own, or None}."""
        try:
            with open(self.log) as f:
                return [json.loads(line) for line in f if line.strip()]
        except (OSError, TypeError, ValueError):
            return []

    def __exit__(self, *exc) -> None:
        import shutil
        import subprocess

        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m stages.warm SOCKET")
    serve(sys.argv[1])
