"""A resident forecast server: the libraries and the model stay loaded between cron runs.

A cold `stforecast forecast` spends about two seconds importing torch, xarray and netCDF4 and
loading the weights before the first frame is read. `stforecast serve` pays that once; a
`stforecast forecast --socket PATH` then hands its job to the server (`forecasting.client`, over
the `forecasting.protocol`). The server runs exactly `forecasting.job.forecast_to_file` (same
checks, lock, atomic write, exit codes, provenance). Jobs run one at a time on the server's main
thread (see `Server`); a server job and an in-process run for the same output still meet at its
lock (exit 5).

A client that hangs up (killed by `timeout`) cancels its job between two lead times; nothing is
written, as when an in-process run is killed. A job still running after `job_timeout` seconds is
stopped the same way, with `TimeLimitError` (exit 124), so one client cannot hold the server.
A request that is not a JSON object is refused in one log line.

This module imports only the standard library at the top; the server imports the engine when it
starts.
"""

from __future__ import annotations

import contextlib
import errno
import os
import queue
import select
import signal
import socket
import socketserver
import stat
import sys
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stforecast import __version__
from stforecast.errors import (
    CancelledError,
    ConfigError,
    LockHeldError,
    TimeLimitError,
    exit_status,
    is_bug,
)
from stforecast.forecasting.protocol import PROTOCOL, Event, check_job, lines, send, trusted

JOB_TIMEOUT = 300.0  # seconds a job may run (`serve`'s default): minutes of leads on a CPU


class ModelCache:
    """Loaded runs by (directory, device), reloaded when the card, weights or recipe change on
    disk (a retrained or replaced model is picked up by the next job). Keeps the `size` most
    recently used."""

    def __init__(self, size: int = 4) -> None:
        self._size = size
        self._runs: OrderedDict[tuple[str, str], tuple[tuple, Any]] = OrderedDict()

    @staticmethod
    def _stamp(run_dir: Path) -> tuple:
        from stforecast.rundir.layout import BEST, CARD, CHECKPOINTS, RECIPE, WEIGHTS

        stamp = []
        # an exported `.onnx` file is its own card and weights: its own stamp
        names = ("",) if run_dir.is_file() else (CARD, WEIGHTS, f"{CHECKPOINTS}/{BEST}", RECIPE)
        for name in names:
            try:
                st = os.stat(run_dir / name if name else run_dir)
                stamp.append((name, st.st_mtime_ns, st.st_size, st.st_ino))
            except OSError:
                stamp.append((name, None))
        return tuple(stamp)

    def get(self, run_dir: str | Path, device: str = "auto") -> Any:
        from stforecast.rundir.load import load_run

        path = _resolved(run_dir)
        key = (str(path), device)
        stamp = self._stamp(path)
        hit = self._runs.get(key)
        if hit is not None and hit[0] == stamp:
            self._runs.move_to_end(key)
            return hit[1]
        run = load_run(path, device=device)
        self._runs[key] = (stamp, run)
        self._runs.move_to_end(key)
        while len(self._runs) > self._size:
            self._runs.popitem(last=False)
        return run


def _resolved(model: str | Path) -> Path:
    """The absolute directory of a run, or of a shipped model given by name."""
    from stforecast import pretrained

    return pretrained.resolve(model).resolve()


def _hung_up(sock: socket.socket, wake: int, cancel: threading.Event) -> None:
    """Watch a connection while its job waits and runs: the client sends nothing after its
    request, so readable means it hung up. Returns when `wake` (a pipe) becomes readable."""
    while True:
        try:
            readable, _, _ = select.select([sock, wake], [], [])
        except (OSError, ValueError):
            return
        if wake in readable:
            return
        try:
            data = sock.recv(65536)
        except OSError:
            data = b""
        if not data:
            cancel.set()
            return


@dataclass
class _Job:
    """A job handed from its connection's thread to the thread that runs jobs."""

    job: dict[str, Any]
    emit: Event
    cancel: threading.Event
    done: threading.Event = field(default_factory=threading.Event)
    result: tuple[int, str | None, dict[str, Any] | None] | None = None


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """Connections are read and answered on their own threads; the jobs themselves run one at a
    time on the thread that called `serve` (the main thread under the CLI): PyTorch's CPU
    kernels measured 30-40 % slower on other threads, and concurrent jobs would only share the
    same cores. A job waits for the one in progress."""

    daemon_threads = True

    def __init__(self, path: Path, log: Event, job_timeout: float | None = JOB_TIMEOUT) -> None:
        self.log = log
        self.job_timeout = job_timeout
        self.queue: queue.Queue[_Job] = queue.Queue()
        self.stopping = threading.Event()  # no new jobs
        self.closed = threading.Event()  # no job runs any more
        super().__init__(os.fspath(path), _Handler)


class _Handler(socketserver.BaseRequestHandler):
    server: Server

    def handle(self) -> None:
        sock: socket.socket = self.request
        if not trusted(sock):
            self._refuse("the server serves only its own user")
            return
        try:
            message = next(lines(sock), None)
        except OSError as err:
            self.server.log({"job": None, "refused": f"unreadable request: {err}"})
            return
        except ValueError as err:  # not a JSON object: one log line, and the peer is told
            self._refuse(f"unreadable request: {err}")
            return
        if message is None:
            return
        if message.get("version") != PROTOCOL or message.get("stforecast") != __version__:
            self._refuse(
                f"the server runs version {__version__} (protocol {PROTOCOL}), the client "
                f"{message.get('stforecast')} (protocol {message.get('version')}); "
                "restart the server"
            )
            return
        started = time.perf_counter()
        try:
            job = check_job(message)
        except ConfigError as err:
            self._answer(None, (err.exit_code, str(err), None), started)
            return
        if self.server.stopping.is_set():
            self._refuse("the server is stopping")
            return

        def emit(event: dict[str, Any]) -> None:
            with contextlib.suppress(OSError):
                send(sock, {"event": event})

        item = _Job(job, emit, threading.Event())
        wake_r, wake_w = os.pipe()
        watcher = threading.Thread(target=_hung_up, args=(sock, wake_r, item.cancel), daemon=True)
        watcher.start()
        try:
            self.server.queue.put(item)
            while not item.done.wait(0.2):
                if self.server.closed.is_set():  # stopped after this job was queued
                    break
        finally:
            os.write(wake_w, b"x")
            watcher.join()
            os.close(wake_r)
            os.close(wake_w)
        if item.result is None:  # never started: the server stopped first
            self._refuse("the server stopped before the job started")
            return
        self._answer(job, item.result, started)

    def _refuse(self, reason: str) -> None:
        self.server.log({"job": None, "refused": reason})
        with contextlib.suppress(OSError):
            send(self.request, {"refused": reason})

    def _answer(self, job: dict[str, Any] | None, result: tuple, started: float) -> None:
        code, error, summary = result
        self.server.log(
            {
                "job": job,
                "exit_code": code,
                "error": error,
                "output_file": (summary or {}).get("output_file"),
                "seconds": round(time.perf_counter() - started, 3),
            }
        )
        with contextlib.suppress(OSError):
            send(self.request, {"result": {"exit_code": code, "error": error, "summary": summary}})


def _work(server: Server, models: ModelCache) -> None:
    """Run queued jobs until the server stops; jobs still queued then are cancelled (their
    clients run them in-process)."""
    while True:
        try:
            item = server.queue.get(timeout=0.2)
        except queue.Empty:
            if server.stopping.is_set():
                return
            continue
        if server.stopping.is_set():
            item.cancel.set()
            item.done.set()  # result None: refused, the client falls back
            continue
        if item.cancel.is_set():  # its client left while it waited
            item.result = (CancelledError.exit_code, "cancelled before it started", None)
        else:
            item.result = run_job(item.job, models, item.emit, item.cancel, server.job_timeout)
        item.done.set()


def run_job(
    job: dict[str, Any],
    models: ModelCache,
    emit: Event,
    cancel: threading.Event | None = None,
    time_limit: float | None = None,
) -> tuple[int, str | None, dict[str, Any] | None]:
    """One forecast job: `(exit_code, error, summary)`, every failure mapped to its exit code
    as the CLI maps it in-process. After `time_limit` seconds the job is cancelled through the
    same hook as a client that hangs up (between two lead times, nothing written) and fails
    with `TimeLimitError`."""
    from stforecast.forecasting.job import forecast_to_file

    cancel = cancel if cancel is not None else threading.Event()
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        cancel.set()

    timer = None if time_limit is None else threading.Timer(time_limit, expire)
    if timer is not None:
        timer.daemon = True
        timer.start()
    try:
        t0 = time.perf_counter()
        run = models.get(job["model"], job["device"])
        loaded = time.perf_counter() - t0
        summary = forecast_to_file(
            job["sources"],
            run,
            job["out"],
            fmt_name=job["format"],
            steps=job["steps"],
            hours=job["hours"],
            device=job["device"],
            log=emit,
            cancel=cancel,
            max_input_age=job["max_input_age"],
            now=job["now"],
        )
        summary["timings_s"]["load_model"] += loaded
        return 0, None, summary
    except Exception as err:
        if isinstance(err, CancelledError) and expired.is_set():
            err = TimeLimitError(
                f"the job ran longer than the server allows (job_timeout {time_limit:g} s) and "
                "was stopped; nothing was written"
            )
        code, message = exit_status(err)
        if is_bug(err):  # the job fails with exit 1, the server keeps serving
            sys.stderr.write("".join(traceback.format_exception(err)))
            message += " (a bug; see the server's log)"
        return code, message, None
    finally:
        if timer is not None:
            timer.cancel()


def _claim(path: Path) -> None:
    """Make room for the socket: a stale socket file (no server behind it) is removed; a live
    server is `LockHeldError`; anything that is not a socket is never touched."""
    if not path.parent.is_dir():
        raise ConfigError(f"{path}: the directory {path.parent} does not exist")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ConfigError(f"{path}: exists and is not a socket; not replaced")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(os.fspath(path))
    except ConnectionRefusedError:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # a server that died without cleaning up
        return
    except OSError as err:
        raise ConfigError(f"{path}: {err.strerror}") from err
    finally:
        probe.close()
    raise LockHeldError(f"another server listens on {path}; stop it first (or use another path)")


def serve(
    socket_path: str | Path,
    *,
    models: list[str | Path] | None = None,
    device: str = "auto",
    log: Event | None = None,
    ready: Callable[[], None] | None = None,
    job_timeout: float | None = JOB_TIMEOUT,
) -> None:
    """Serve forecast jobs on `socket_path` until SIGTERM or SIGINT (main thread) or until
    `stop_server` is called; the job in progress finishes first. Jobs run on the calling thread.
    `models` are loaded before the socket opens, so a bad run fails at start (exit 3/4) rather
    than at the first job. A job running longer than `job_timeout` seconds (None: no limit) is
    stopped before anything is written (exit 124)."""
    if job_timeout is not None and not job_timeout > 0:
        raise ConfigError(f"job_timeout must be positive seconds, got {job_timeout}")
    import gc

    import stforecast.forecasting.job  # noqa: F401  (every library a job needs, loaded now)

    path = Path(socket_path)
    emit = log or (lambda event: None)
    cache = ModelCache()
    for run_dir in models or []:
        cache.get(run_dir, device)
    gc.collect()
    gc.freeze()  # the libraries' objects are permanent: later collections skip them

    _claim(path)
    old_umask = os.umask(0o177)  # the socket is created rw for its owner only
    try:
        server = Server(path, emit, job_timeout)
    except OSError as err:
        if err.errno == errno.EADDRINUSE:
            raise LockHeldError(f"another server listens on {path}") from err
        raise ConfigError(f"{path}: {err.strerror}") from err
    finally:
        os.umask(old_umask)
    inode = os.stat(path).st_ino
    _SERVERS[str(path)] = server
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, lambda signum, frame: server.stopping.set())
    listener = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2})
    listener.start()
    try:
        emit(
            {
                "event": "listening",
                "socket": str(path),
                "pid": os.getpid(),
                "models": [str(_resolved(m)) for m in models or []],
                "stforecast": __version__,
            }
        )
        if ready is not None:
            ready()
        _work(server, cache)
    finally:
        server.stopping.set()
        server.closed.set()
        server.shutdown()  # no new connections
        listener.join()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _SERVERS.pop(str(path), None)
        with contextlib.suppress(OSError):
            if os.stat(path).st_ino == inode:  # ours still, not a successor's
                os.unlink(path)
        server.server_close()
        emit({"event": "stopped", "socket": str(path)})


_SERVERS: dict[str, Server] = {}


def stop_server(socket_path: str | Path) -> None:
    """Stop a `serve` running in this process (from another thread), as SIGTERM does: the job
    in progress finishes, queued ones go back to their clients."""
    server = _SERVERS.get(str(Path(socket_path)))
    if server is not None:
        server.stopping.set()
