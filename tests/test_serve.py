"""`stforecast serve` and `stforecast forecast --socket`: the server's forecasts are the in-process
ones, failures keep their exit codes, the client falls back when it must, models reload when their
files change, a client that hangs up cancels its job, a job past its time limit stops, requests
that are not JSON are refused in one log line, and the socket is private."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from forecast_files import forecast_file
from typer.testing import CliRunner

from stforecast.cli.app import app
from stforecast.errors import CancelledError, ConfigError, LockHeldError, TimeLimitError
from stforecast.forecasting import client, protocol, service
from stforecast.io.lock import output_lock

from runs import make_run


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("plain"))


@pytest.fixture(scope="module")
def longer(tmp_path_factory):
    """The same setting trained for longer: other weights, same card layout."""
    return make_run(tmp_path_factory.mktemp("longer"), steps=12)


@pytest.fixture(scope="module")
def unbounded(tmp_path_factory, plain):
    """The plain run with `[forecast] max_hours` raised: jobs of thousands of leads."""
    run = tmp_path_factory.mktemp("unbounded") / "run"
    shutil.copytree(plain["run"], run)
    recipe = run / "recipe.toml"
    text = re.sub(r"(?m)^max_hours = .*\n", "", recipe.read_text())
    recipe.write_text(text.replace("[forecast]\n", "[forecast]\nmax_hours = 1000000.0\n"))
    return run


@pytest.fixture
def sock_dir():
    """Unix socket paths are limited to about 100 bytes: a short directory, not tmp_path."""
    path = Path(tempfile.mkdtemp(prefix="stf", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


class Running:
    """A server in a thread of this process, with its log."""

    def __init__(self, path: Path, models: list[Path], **options: object) -> None:
        self.path = path
        self.events: list[dict] = []
        ready = threading.Event()
        self.error: list[BaseException] = []

        def target() -> None:
            try:
                service.serve(path, models=models, device="cpu", log=self.events.append,
                              ready=ready.set, **options)  # fmt: skip
            except BaseException as err:  # reported by the test
                self.error.append(err)
                ready.set()

        self.thread = threading.Thread(target=target, daemon=True)
        self.thread.start()
        assert ready.wait(60) and not self.error, self.error

    def stop(self) -> None:
        service.stop_server(self.path)
        self.thread.join(30)
        assert not self.thread.is_alive()

    def jobs(self) -> list[dict]:
        return [e for e in self.events if "exit_code" in e]


@pytest.fixture
def server(sock_dir, plain):
    running = Running(sock_dir / "s.sock", [plain["run"]])
    yield running
    running.stop()


def cli(*args: str, env: dict | None = None):
    return CliRunner().invoke(app, list(args), env=env)


def forecast_args(plain, *extra: str) -> list[str]:
    return ["forecast", str(plain["archive"]), "--model", str(plain["run"]), *extra]


# ------------------------------------------------------------------------------ same results


def test_server_forecast_is_the_in_process_forecast(server, plain, tmp_path):
    here, there = tmp_path / "here", tmp_path / "there"
    here.mkdir(), there.mkdir()
    local = cli(*forecast_args(plain, "--hours", "1", "--out", f"{here}/", "--quiet"))
    assert local.exit_code == 0, local.output
    remote = cli(*forecast_args(plain, "--hours", "1", "--out", f"{there}/", "--log-json",
                                "--socket", str(server.path)))  # fmt: skip
    assert remote.exit_code == 0, remote.output
    (a,), (b,) = list(here.iterdir()), list(there.iterdir())
    assert a.name == b.name
    da, db = xr.load_dataset(a), xr.load_dataset(b)
    np.testing.assert_array_equal(da["rainrate"].values, db["rainrate"].values)
    assert da.attrs.keys() == db.attrs.keys()
    events = [json.loads(line) for line in remote.stdout.splitlines()]
    assert [e["stage"] for e in events] == ["start-up", "load model", "read", "written"]
    summary = events[-1]
    assert summary["server"] == str(server.path) and summary["output_file"] == str(b)
    assert summary["timings_s"]["load_model"] < 0.1  # preloaded: nothing to import or load
    assert server.jobs()[-1]["exit_code"] == 0


def test_relative_paths_are_the_callers(server, plain, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copy(plain["archive"], tmp_path / "in.nc")
    res = cli("forecast", "in.nc", "--steps", "2", "--model", str(plain["run"]),
              "--out", "f.nc", "--socket", str(server.path))  # fmt: skip
    assert res.exit_code == 0, res.output
    assert (tmp_path / "f.nc").is_file() and res.stdout.strip() == str(tmp_path / "f.nc")


# ------------------------------------------------------------------------------ failures


@pytest.mark.parametrize(
    ("source", "extra", "code"),
    [
        ("nope.nc", [], 3),  # missing input
        ("archive", ["--max-age", "soon"], 2),  # usage, found by the engine (--format is a choice)
        ("archive", ["--hours", "0.05"], 2),  # not a whole number of steps
        ("units", [], 4),  # input does not fit the model
    ],
)
def test_failures_keep_their_exit_codes_and_write_nothing(
    server, plain, tmp_path, source, extra, code
):
    if source == "archive":
        path = plain["archive"]
    elif source == "units":
        ds = xr.load_dataset(plain["archive"]).isel(time=slice(-6, None))
        ds["rainrate"].attrs["units"] = "K"
        path = tmp_path / "units.nc"
        ds.to_netcdf(path)
    else:
        path = tmp_path / source
    previous = forecast_file(tmp_path / "f.nc")
    before = previous.read_bytes()
    steps = [] if "--hours" in extra else ["--steps", "2"]
    res = cli("forecast", str(path), "--model", str(plain["run"]), "--out", str(previous),
              "--socket", str(server.path), *steps, *extra)  # fmt: skip
    assert res.exit_code == code, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "warning" not in res.stderr
    assert previous.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "units.nc") == ["f.nc"]
    assert server.jobs()[-1]["exit_code"] == code


def test_the_server_replaces_only_a_forecast(server, plain, tmp_path):
    """Issue 13 through the server: it runs the same checks before any work."""
    notes = tmp_path / "notes"
    notes.write_text("not a forecast")
    fifo = tmp_path / "fifo.nc"
    os.mkfifo(fifo)
    before = {p.name: (os.lstat(p).st_mtime_ns, os.lstat(p).st_mode) for p in tmp_path.iterdir()}
    for out in (notes, fifo):
        res = cli(*forecast_args(plain, "--steps", "2", "--out", str(out),
                                 "--socket", str(server.path)))  # fmt: skip
        assert res.exit_code == 2, res.output
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and "not replaced" in lines[0] and "warning" not in res.stderr
        assert server.jobs()[-1]["exit_code"] == 2
    assert notes.read_text() == "not a forecast" and stat.S_ISFIFO(os.lstat(fifo).st_mode)
    after = {p.name: (os.lstat(p).st_mtime_ns, os.lstat(p).st_mode) for p in tmp_path.iterdir()}
    assert after == before


def test_lock_held_exits_5_through_the_server(server, plain, tmp_path):
    out = tmp_path / "f.nc"
    with output_lock(out):  # another open file description: flock conflicts in-process too
        res = cli(*forecast_args(plain, "--steps", "2", "--out", str(out),
                                 "--socket", str(server.path)))  # fmt: skip
    assert res.exit_code == 5 and "lock" in res.stderr
    assert not out.exists()


def test_client_hanging_up_cancels_the_job(server, plain, unbounded, tmp_path):
    out = tmp_path / "long.nc"
    job = client.job_for([str(plain["archive"])], unbounded, out, steps=20000, device="cpu")
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(str(server.path))
    conn.sendall((json.dumps({"version": protocol.PROTOCOL, "stforecast": client.__version__,
                              "job": job}) + "\n").encode())  # fmt: skip
    assert json.loads(conn.makefile().readline())["event"]["stage"] == "load model"
    conn.close()  # as `timeout` killing the client would
    deadline = time.monotonic() + 60
    while not server.jobs() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.jobs()[-1]["exit_code"] == 130, server.jobs()
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no output, temp or lock left


def test_a_set_cancel_stops_before_writing(plain, tmp_path):
    cancel = threading.Event()
    cancel.set()
    job = client.job_for([str(plain["archive"])], plain["run"], tmp_path / "f.nc", steps=3)
    code, error, summary = service.run_job(job, service.ModelCache(), lambda e: None, cancel)
    assert code == CancelledError.exit_code == 130 and "cancelled" in error and summary is None
    assert list(tmp_path.iterdir()) == []


def test_malformed_jobs_are_refused_one_by_one(server):
    for bad in ({"job": {"sources": "x.nc"}}, {"job": {**_job(), "extra": 1}}, {"nojob": 1}):
        bad = {"version": protocol.PROTOCOL, "stforecast": client.__version__, **bad}
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(str(server.path))
        conn.sendall((json.dumps(bad) + "\n").encode())
        reply = json.loads(conn.makefile().readline())
        conn.close()
        assert reply["result"]["exit_code"] == 2, reply
    assert [j["exit_code"] for j in server.jobs()] == [2, 2, 2]  # and the server still serves


def _job() -> dict:
    return client.job_for(["a.nc"], "run", "out.nc")


@pytest.mark.parametrize(
    "payload",
    [b"hello\n", b"\xff\xfe\n", b"42\n", b"[1]\n", b"null\n", b"[" * 100000 + b"\n"],
)
def test_a_request_that_is_not_json_is_refused_in_one_line(server, plain, tmp_path, capsys,
                                                           payload):  # fmt: skip
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(str(server.path))
    conn.sendall(payload)
    reply = json.loads(conn.makefile().readline())
    conn.close()
    assert reply["refused"].startswith("unreadable request: "), reply
    (refused,) = [e for e in server.events if "refused" in e]
    assert refused == {"job": None, "refused": reply["refused"]}
    assert "\n" not in refused["refused"]
    res = cli(*forecast_args(plain, "--steps", "2", "--out", str(tmp_path / "f.nc"),
                             "--socket", str(server.path)))  # fmt: skip
    assert res.exit_code == 0 and "on the server" in res.stderr  # and it still serves
    assert "Traceback" not in capsys.readouterr().err


# ------------------------------------------------------------------------------ bounds and age


def test_a_job_past_its_time_limit_stops_and_the_server_goes_on(sock_dir, plain, unbounded,
                                                                tmp_path):  # fmt: skip
    running = Running(sock_dir / "s.sock", [unbounded], job_timeout=0.5)
    try:
        previous = forecast_file(tmp_path / "f.nc")
        before = previous.read_bytes()
        started = time.monotonic()
        res = cli("forecast", str(plain["archive"]), "--model", str(unbounded), "--steps",
                  "20000", "--out", str(previous), "--socket", str(running.path))  # fmt: skip
        assert res.exit_code == 124, res.output
        assert time.monotonic() - started < 30  # 20000 leads take minutes here
        (line,) = res.stderr.strip().splitlines()
        assert line == (
            "error: the job ran longer than the server allows (job_timeout 0.5 s) and was "
            "stopped; nothing was written (`stforecast serve --job-timeout` sets the limit)"
        )
        assert previous.read_bytes() == before
        assert sorted(p.name for p in tmp_path.iterdir()) == ["f.nc"]  # no .lock, no .tmp
        res = cli("forecast", str(plain["archive"]), "--model", str(unbounded), "--steps", "2",
                  "--out", str(tmp_path / "g.nc"), "--socket", str(running.path))  # fmt: skip
        assert res.exit_code == 0, res.output
        assert [j["exit_code"] for j in running.jobs()] == [124, 0]
    finally:
        running.stop()


def test_time_limit_of_run_job(plain, unbounded, tmp_path):
    job = client.job_for([str(plain["archive"])], unbounded, tmp_path / "f.nc", steps=20000)
    code, error, summary = service.run_job(job, service.ModelCache(), lambda e: None,
                                           time_limit=0.2)  # fmt: skip
    assert code == TimeLimitError.exit_code == 124 and "(job_timeout 0.2 s)" in error
    assert summary is None and list(tmp_path.iterdir()) == []
    job = client.job_for([str(plain["archive"])], unbounded, tmp_path / "f.nc", steps=2)
    code, error, summary = service.run_job(job, service.ModelCache(), lambda e: None,
                                           time_limit=60)  # fmt: skip
    assert code == 0 and (tmp_path / "f.nc").is_file()


def test_serve_job_timeout_must_be_positive(sock_dir):
    res = cli("serve", "--socket", str(sock_dir / "s.sock"), "--job-timeout", "-1")
    assert res.exit_code == 2 and not (sock_dir / "s.sock").exists()
    with pytest.raises(ConfigError, match="job_timeout"):
        service.serve(sock_dir / "s.sock", job_timeout=0)


def test_too_many_leads_are_refused_by_the_server_at_once(server, plain, tmp_path):
    res = cli(*forecast_args(plain, "--steps", "10000000", "--out", str(tmp_path / "f.nc"),
                             "--socket", str(server.path)))  # fmt: skip
    assert res.exit_code == 2, res.output
    (line,) = res.stderr.strip().splitlines()
    assert "max_hours = 24 h" in line and "recipe.toml" in line
    assert server.jobs()[-1]["exit_code"] == 2 and list(tmp_path.iterdir()) == []


def test_the_input_age_through_the_server(server, plain, tmp_path):
    previous = forecast_file(tmp_path / "f.nc")
    before = previous.read_bytes()
    res = cli(*forecast_args(plain, "--steps", "2", "--out", str(previous), "--max-age", "PT1H",
                             "--socket", str(server.path)))  # fmt: skip
    assert res.exit_code == 3, res.output
    (line,) = res.stderr.strip().splitlines()
    assert "more than max_input_age PT1H" in line and previous.read_bytes() == before
    res = cli(*forecast_args(plain, "--steps", "2", "--out", str(previous), "--log-json",
                             "--reference-time", "2024-01-01T12:20Z",
                             "--socket", str(server.path)))  # fmt: skip
    assert res.exit_code == 0, res.output
    assert res.stderr.startswith("warning: the newest input frame (2024-01-01T11:50:00Z) is PT30M")
    read = next(json.loads(x) for x in res.stdout.splitlines() if '"read"' in x)
    assert read["stale"] is True and read["input_age_seconds"] == 1800.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.nc"]


# ------------------------------------------------------------------------------ fallback


def test_no_server_falls_back_in_process(plain, sock_dir, tmp_path):
    out = tmp_path / "f.nc"
    env = {"STFORECAST_SOCKET": str(sock_dir / "none.sock")}
    res = cli(*forecast_args(plain, "--steps", "2", "--out", str(out)), env=env)
    assert res.exit_code == 0, res.output
    assert res.stderr.startswith("warning: no server listens on") and out.is_file()
    res = cli(*forecast_args(plain, "--steps", "2", "--out", str(out), "--log-json"), env=env)
    events = [json.loads(line) for line in res.stdout.splitlines()]
    assert events[1]["stage"] == "server" and "no server" in events[1]["fallback"]
    assert events[-1]["stage"] == "written" and "server" not in events[-1]


def test_another_version_is_refused(server):
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(str(server.path))
    old = {"version": protocol.PROTOCOL, "stforecast": "0.0.0-old", "job": _job()}
    conn.sendall((json.dumps(old) + "\n").encode())
    reply = json.loads(conn.makefile().readline())
    conn.close()
    assert "restart the server" in reply["refused"] and not server.jobs()


def test_a_refused_job_runs_in_process(plain, sock_dir, tmp_path):
    """A server that refuses (here: a stand-in that always does) leaves the job to the client."""
    path = sock_dir / "old.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen()

    def refuse() -> None:
        conn, _ = listener.accept()
        conn.makefile().readline()
        conn.sendall(b'{"refused": "the server runs version 0.0.0; restart the server"}\n')
        conn.close()

    threading.Thread(target=refuse, daemon=True).start()
    try:
        res = cli(*forecast_args(plain, "--steps", "2", "--out", str(tmp_path / "f.nc"),
                                 "--socket", str(path)))  # fmt: skip
    finally:
        listener.close()
    assert res.exit_code == 0, res.output
    assert "refused the job" in res.stderr and "forecasting in-process" in res.stderr
    assert (tmp_path / "f.nc").is_file()


def test_a_server_of_another_user_is_not_used(server, monkeypatch):
    monkeypatch.setattr(protocol, "peer_uid", lambda sock: 4242)
    with pytest.raises(client.ServerUnavailable, match="another user"):
        client.submit(server.path, _job(), lambda e: None)


# ------------------------------------------------------------------------------ the model


def test_a_replaced_model_is_reloaded(sock_dir, plain, longer, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(plain["run"], run)
    running = Running(sock_dir / "s.sock", [run])
    try:

        def remote(name: str) -> np.ndarray:
            res = cli("forecast", str(plain["archive"]), "--steps", "3", "--model", str(run),
                      "--out", str(tmp_path / name), "--socket", str(running.path))  # fmt: skip
            assert res.exit_code == 0, res.output
            return xr.load_dataset(tmp_path / name)["rainrate"].values

        before = remote("a.nc")
        for name in ("model.json", "model.safetensors", "checkpoints/best.safetensors",
                     "recipe.toml"):  # fmt: skip
            shutil.copy(longer["run"] / name, run / name)  # retrained in place
        after = remote("b.nc")
    finally:
        running.stop()
    local = cli("forecast", str(plain["archive"]), "--steps", "3", "--model", str(longer["run"]),
                "--out", str(tmp_path / "c.nc"))  # fmt: skip
    assert local.exit_code == 0
    np.testing.assert_array_equal(after, xr.load_dataset(tmp_path / "c.nc")["rainrate"].values)
    assert not np.array_equal(before, after)


def test_model_cache_keeps_the_most_recent(plain, longer):
    cache = service.ModelCache(size=1)
    a = cache.get(plain["run"], "cpu")
    assert cache.get(plain["run"], "cpu") is a
    cache.get(longer["run"], "cpu")
    assert cache.get(plain["run"], "cpu") is not a  # evicted, loaded again


# ------------------------------------------------------------------------------ the socket


def test_socket_is_private_and_single(server, sock_dir):
    assert stat.S_IMODE(os.stat(server.path).st_mode) == 0o600
    with pytest.raises(LockHeldError, match="another server listens"):
        service._claim(server.path)


def test_claim_replaces_stale_sockets_only(sock_dir):
    stale = sock_dir / "stale.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(stale))
    dead.close()  # bound, never listening: what a killed server leaves
    service._claim(stale)
    assert not stale.exists()
    data = sock_dir / "data.sock"
    data.write_text("not a socket")
    with pytest.raises(ConfigError, match="not a socket"):
        service._claim(data)
    assert data.read_text() == "not a socket"
    with pytest.raises(ConfigError, match="does not exist"):
        service._claim(sock_dir / "no" / "s.sock")


def test_serve_command_runs_jobs_and_stops_on_sigterm(plain, sock_dir, tmp_path):
    path = sock_dir / "s.sock"
    cmd = [sys.executable, "-c", "from stforecast.cli.app import main; main()"]
    proc = subprocess.Popen([*cmd, "serve", "--socket", str(path), "-m", str(plain["run"]),
                             "--device", "cpu"], stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        first = json.loads(proc.stderr.readline())
        assert first["event"] == "listening" and first["pid"] == proc.pid
        second = subprocess.run([*cmd, "serve", "--socket", str(path)], capture_output=True,
                                text=True, timeout=120)  # fmt: skip
        assert second.returncode == 5 and second.stderr.startswith("error: another server")
        res = cli(*forecast_args(plain, "--steps", "2", "--out", str(tmp_path / "f.nc"),
                                 "--socket", str(path)))  # fmt: skip
        assert res.exit_code == 0 and "on the server" in res.stderr
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        log = [json.loads(line) for line in proc.stderr.read().splitlines()]
        assert log[0]["exit_code"] == 0 and log[-1]["event"] == "stopped"
        assert not path.exists()
    finally:
        proc.kill()
        proc.wait()


def test_serve_needs_a_socket():
    res = cli("serve", env={"STFORECAST_SOCKET": ""})
    assert res.exit_code == 2 and "STFORECAST_SOCKET" in res.stderr


def test_stopping_finishes_the_job_in_progress_and_hands_back_the_queue(
    sock_dir, plain, unbounded, tmp_path
):
    running = Running(sock_dir / "s.sock", [unbounded])
    first = client.job_for([str(plain["archive"])], unbounded, tmp_path / "a.nc", steps=1500)
    second = client.job_for([str(plain["archive"])], plain["run"], tmp_path / "b.nc", steps=2)
    results: dict[str, object] = {}
    started = threading.Event()

    def submit(name: str, job: dict) -> None:
        def on_event(event: dict) -> None:
            if event.get("stage") == "read":
                started.set()

        try:
            results[name] = client.submit(running.path, job, on_event)
        except client.ServerUnavailable as why:
            results[name] = why

    a = threading.Thread(target=submit, args=("a", first))
    a.start()
    assert started.wait(60)  # the first job runs
    b = threading.Thread(target=submit, args=("b", second))
    b.start()
    time.sleep(0.5)  # the second is queued behind it
    running.stop()
    a.join(60), b.join(60)
    assert results["a"]["exit_code"] == 0 and (tmp_path / "a.nc").is_file()
    assert isinstance(results["b"], client.ServerUnavailable), results["b"]
    assert "stopp" in str(results["b"]) and not (tmp_path / "b.nc").exists()
