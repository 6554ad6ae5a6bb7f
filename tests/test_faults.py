"""Fault injection through the real command line: SIGINT, SIGTERM and SIGKILL at moments spread
uniformly over the measured duration of `forecast`, `prepare`, `train`, `evaluate` and a server
job (`forecast --socket`), and a full disk.

Invariants: a run that got SIGINT/SIGTERM before it ended never exits 0 but 130/143 with one
error line (the system's default action only while Python starts, before the CLI's handlers
exist: nothing has been written then); SIGKILL is -9. No partial output under a final name; an
earlier output unchanged unless the new one was committed before the signal was sent; no lock or
temporary file left after SIGINT/SIGTERM; after SIGKILL the next run sweeps what the killed one
left and succeeds. A server whose client is killed cancels the job and keeps serving.

The default run takes 3 moments per command (SIGINT, SIGTERM, SIGKILL in turn). `-m faults` takes
30 moments per signal and command (SIGKILL: 10, its outcome owes nothing to our handlers; set
STFORECAST_FAULT_MOMENTS to change both), one trained run for all, one process at a time.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import torch
import xarray as xr
from test_signals import (
    CLI,
    COMMIT_SLACK_NS,
    LEADS,
    WORDS,
    Outcome,
    assert_forecast_kept,
    assert_same_weights,
    before_handlers,
    entries,
    forecast_args,
    signalled,
    stage_at,
    stamp,
    tiny_recipe,
    weights,
)

from runs import make_run

INT, TERM, KILL = signal.SIGINT, signal.SIGTERM, signal.SIGKILL
MOMENTS = int(os.environ.get("STFORECAST_FAULT_MOMENTS", "30"))
KILL_MOMENTS = max(1, MOMENTS // 3)


def spread(duration: float, n: int) -> list[float]:
    """`n` moments spread uniformly over `duration` seconds (the middle of n equal slices)."""
    return [(i + 0.5) * duration / n for i in range(n)]


def timed(args: list[str]) -> tuple[Outcome, float]:
    t0 = time.monotonic()
    res = signalled(args, None)
    assert res.rc == 0, res.stderr[-3000:]
    return res, time.monotonic() - t0


def assert_exit(res: Outcome, sig: int, known: set[str] = frozenset()) -> None:
    """The exit of a run sent `sig` (if it had not ended): 130/143 with one error line and
    nothing but the warnings an uninterrupted run prints (`known`), or -9."""
    where = f"(rc {res.rc}) {res.stderr[-3000:]}"
    if res.sent_ns is None:
        assert res.rc == 0, where
    elif sig == KILL:
        assert res.rc == -KILL, where
    elif before_handlers(res, sig):
        pass  # Python was starting, before the CLI's handlers: nothing was done
    else:
        assert res.rc == 128 + sig, where
        lines = res.lines()
        assert lines and lines[-1].startswith(f"error: {WORDS[sig]}"), where
        assert set(lines[:-1]) <= known, where


def changed_since(path: Path, res: Outcome) -> None:
    """`path` was replaced: only by a commit before the signal was sent."""
    if res.sent_ns is not None:
        assert path.stat().st_ctime_ns <= res.sent_ns + COMMIT_SLACK_NS, res.stderr[-2000:]


# ------------------------------------------------------------------------------ the world
@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """One trained run, and an uninterrupted run of each command: its outputs (what later runs
    find) and its duration (what the moments spread over)."""
    root = tmp_path_factory.mktemp("faults")
    w: dict = make_run(root / "world", steps=2)
    w["root"], w["recipe"] = root, tiny_recipe(root / "tiny.toml", w["store"])
    w["forecast"] = root / "forecast" / "f.nc"
    w["forecast"].parent.mkdir()
    _, w["t_forecast"] = timed(forecast_args(w, w["forecast"]))
    w["prepared"] = root / "prepared" / "store"
    res, w["t_prepare"] = timed(prepare_args(w, w["prepared"]))
    w["prepare_warnings"] = set(res.lines())
    w["trained"] = root / "trained"
    _, w["t_train"] = timed(["train", str(w["recipe"]), "--out", str(w["trained"]), "--quiet"])
    w["evaluated"] = root / "evaluated"
    res, w["t_evaluate"] = timed(evaluate_args(w, w["evaluated"]))
    w["evaluate_warnings"] = set(res.lines())
    return w


def prepare_args(w: dict, store: Path) -> list[str]:
    return ["prepare", str(w["archive"]), "--out", str(store), "--overwrite", "--input-frames",
            "4", "--output-frames", "3", "--transform", "log1p", "--quiet"]  # fmt: skip


def evaluate_args(w: dict, out: Path) -> list[str]:
    return ["evaluate", "--model", str(w["run"]), "--out", str(out), "--device", "cpu", "--quiet"]


# ------------------------------------------------------------------------------ commands
class Forecast:
    """`forecast` onto an earlier forecast at the same path."""

    def __init__(self, w: dict, tmp: Path) -> None:
        self.w, self.target = w, tmp / "out" / "f.nc"
        self.target.parent.mkdir(parents=True)
        self.duration = w["t_forecast"]

    def run(self, sig: int, at: float) -> None:
        if stamp(self.target) != stamp(self.w["forecast"]):
            shutil.copyfile(self.w["forecast"], self.target)
        before = stamp(self.target)
        res = signalled(forecast_args(self.w, self.target), sig, at=at)
        assert_exit(res, sig)
        assert_forecast_kept(res, self.target, before, sig)

    def recover(self) -> None:
        res = signalled(forecast_args(self.w, self.target), None)
        assert res.rc == 0, res.stderr
        assert entries(self.target.parent) == {"f.nc"}  # the killed runs' temps and lock: gone


class Prepare:
    """`prepare --overwrite` onto an existing store."""

    def __init__(self, w: dict, tmp: Path) -> None:
        self.w, self.store = w, tmp / "out" / "store"
        self.store.parent.mkdir(parents=True)
        shutil.copytree(w["prepared"], self.store)
        self.duration = w["t_prepare"]

    def state(self) -> tuple[int, bytes] | None:
        manifest = self.store / "manifest.json"
        return (self.store.stat().st_ino, manifest.read_bytes()) if manifest.exists() else None

    def run(self, sig: int, at: float) -> None:
        before = self.state()
        res = signalled(prepare_args(self.w, self.store), sig, at=at)
        assert_exit(res, sig, self.w["prepare_warnings"])
        names = entries(self.store.parent)
        if sig == KILL:
            assert names <= {"store", ".store.tmp", ".store.old"}, names
        else:
            assert names == {"store"}, names
        after = self.state()
        assert after is not None, names  # a whole store, old or new
        if after != before:
            changed_since(self.store, res)

    def recover(self) -> None:
        res = signalled(prepare_args(self.w, self.store), None)
        assert res.rc == 0, res.stderr
        assert entries(self.store.parent) == {"store"}
        json.loads((self.store / "manifest.json").read_text())


class Train:
    """`train` into a new run directory (SIGINT/SIGTERM); under SIGKILL one directory, resumed
    run after run, that must end with the uninterrupted run's weights."""

    def __init__(self, w: dict, tmp: Path, resume_every: int = 0) -> None:
        self.w, self.tmp, self.n, self.resume_every = w, tmp, 0, resume_every
        self.killed = tmp / "killed"
        self.duration = w["t_train"]

    def args(self, run: Path) -> list[str]:
        resume = ["--resume"] if run.exists() else []
        return ["train", str(self.w["recipe"]), "--out", str(run), "--quiet", *resume]

    def run(self, sig: int, at: float) -> None:
        self.n += 1
        run = self.killed if sig == KILL else self.tmp / f"run{self.n}"
        res = signalled(self.args(run), sig, at=at)
        assert_exit(res, sig)
        if sig == KILL or not run.exists():  # (no run directory: stopped before training)
            return
        last = run / "checkpoints" / "last.pt"
        assert last.exists(), res.stderr  # stopped after a whole step, checkpointed
        torch.load(last, weights_only=True)
        assert not list(run.rglob("*.tmp"))
        if self.resume_every and self.n % self.resume_every == 0:
            again = signalled(self.args(run), None)
            assert again.rc == 0, again.stderr
            assert_same_weights(weights(self.w["trained"]), weights(run))

    def recover(self) -> None:
        res = signalled(self.args(self.killed), None)
        assert res.rc == 0, res.stderr
        assert not list(self.killed.rglob("*.tmp"))
        assert_same_weights(weights(self.w["trained"]), weights(self.killed))


class Evaluate:
    """`evaluate` into a directory holding an earlier evaluation: each file stays whole."""

    def __init__(self, w: dict, tmp: Path) -> None:
        self.w, self.out = w, tmp / "evaluation"
        shutil.copytree(w["evaluated"], self.out)
        self.names = {p.relative_to(self.out) for p in self.out.rglob("*")}
        self.duration = w["t_evaluate"]

    def run(self, sig: int, at: float) -> None:
        res = signalled(evaluate_args(self.w, self.out), sig, at=at)
        assert_exit(res, sig, self.w["evaluate_warnings"])
        names = {p.relative_to(self.out) for p in self.out.rglob("*")}
        stale = {n for n in names if n.name.endswith(".tmp")}
        assert names - stale == self.names  # no file lost, none under another name
        if sig != KILL:
            assert not stale, stale
        json.loads((self.out / "metrics.json").read_text())  # whole, old or new

    def recover(self) -> None:
        res = signalled(evaluate_args(self.w, self.out), None)
        assert res.rc == 0, res.stderr
        assert {p.relative_to(self.out) for p in self.out.rglob("*")} == self.names


class Serve:
    """A `forecast --socket` client (onto an earlier forecast) of a server: the job of a client
    that is killed is cancelled or done, never half written, and the server serves the next."""

    def __init__(self, w: dict, tmp: Path, server: dict) -> None:
        self.w, self.server = w, server
        self.target = tmp / "out" / "f.nc"
        self.target.parent.mkdir(parents=True)
        self.probe = tmp / "probe"
        self.probe.mkdir()
        self.duration = server["t_client"]

    def run(self, sig: int, at: float) -> None:
        if stamp(self.target) != stamp(self.w["forecast"]):
            shutil.copyfile(self.w["forecast"], self.target)
        before, seen = stamp(self.target), len(server_log(self.server))
        res = signalled(client_args(self.w, self.target, self.server), sig, at=at)
        assert_exit(res, sig)
        self.next_job()  # the server takes the next job: the stopped client's is over by then
        jobs = [r for r in server_log(self.server)[seen:] if "exit_code" in r]
        ours = [r for r in jobs if r["job"] and r["job"]["out"] == str(self.target)]
        assert len(ours) <= 1 and all(r["exit_code"] in (0, 130) for r in ours), ours
        names = entries(self.target.parent)
        assert names == {"f.nc"}, names  # the server cleans up a cancelled job, lock included
        if stamp(self.target) != before:  # written by the server, whole
            assert ours and ours[0]["exit_code"] == 0, ours
            with xr.open_dataset(self.target) as ds:
                assert ds.sizes["time"] == LEADS

    def next_job(self) -> None:
        """A job submitted here (no process to start): the server runs it."""
        from stforecast.forecasting.client import job_for, submit

        job = job_for([str(self.w["archive"])], self.w["run"], self.probe / "p.nc", steps=1,
                      device="cpu")  # fmt: skip
        result = submit(self.server["socket"], job, lambda event: None)
        assert result["exit_code"] == 0, result

    def recover(self) -> None:
        args = client_args(self.w, self.probe / "p.nc", self.server)
        res = signalled([a for a in args if a != "--quiet"], None)
        assert res.rc == 0 and "on the server" in res.stderr, res.stderr


def client_args(w: dict, out: Path, server: dict) -> list[str]:
    return [*forecast_args(w, out), "--socket", str(server["socket"]), "--device", "cpu"]


def server_log(server: dict) -> list[dict]:
    text = server["log"].read_text()
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def server(world):
    """A `stforecast serve` with the run loaded, for the whole module."""
    where = Path(tempfile.mkdtemp(prefix="stf-"))  # short: a socket path has ~100 characters
    info = {"socket": where / "s.sock", "log": where / "server.log"}
    with info["log"].open("w") as log:
        proc = subprocess.Popen([*CLI, "serve", "--socket",
                                 str(info["socket"]), "-m", str(world["run"]), "--device", "cpu"],
                                stderr=log)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not any(r.get("event") == "listening" for r in server_log(info)):
            assert proc.poll() is None and time.monotonic() < deadline, info["log"].read_text()
            time.sleep(0.05)
        probe = where / "first.nc"
        _, info["t_client"] = timed(client_args(world, probe, info))
        yield info
        assert proc.poll() is None, "the server died"
    finally:
        proc.send_signal(TERM)
        try:
            proc.wait(60)
        finally:
            proc.kill()
            shutil.rmtree(where, ignore_errors=True)


COMMANDS = ["forecast", "prepare", "train", "evaluate", "serve"]


def command(name: str, w: dict, tmp: Path, request, slow: bool = False):
    if name == "serve":
        return Serve(w, tmp, request.getfixturevalue("server"))
    if name == "train":
        return Train(w, tmp, resume_every=6 if slow else 0)
    return {"forecast": Forecast, "prepare": Prepare, "evaluate": Evaluate}[name](w, tmp)


# ------------------------------------------------------------------------------ signals
@pytest.mark.parametrize("name", COMMANDS)
def test_signals_at_three_moments(name, world, tmp_path, request):
    cmd = command(name, world, tmp_path, request)
    for at, sig in zip(spread(cmd.duration, 3), (INT, TERM, KILL), strict=True):
        cmd.run(sig, at)
    cmd.recover()


@pytest.mark.faults
@pytest.mark.parametrize("sig", [INT, TERM, KILL], ids=["INT", "TERM", "KILL"])
@pytest.mark.parametrize("name", COMMANDS)
def test_signals_spread_over_the_run(name, sig, world, tmp_path, request):
    cmd = command(name, world, tmp_path, request, slow=True)
    for i, at in enumerate(spread(cmd.duration, KILL_MOMENTS if sig == KILL else MOMENTS)):
        try:
            cmd.run(sig, at)
        except AssertionError as err:
            raise AssertionError(f"moment {i} ({at:.2f} s of {cmd.duration:.2f} s)") from err
    if sig == KILL:
        cmd.recover()


@pytest.mark.parametrize("sig", [TERM, INT], ids=["TERM", "INT"])
def test_a_signalled_client_cancels_its_server_job(sig, world, server, tmp_path):
    """A client stopped while the server runs its job (after the job's `read` stage): the
    client exits 143/130 with one line, the server cancels the job (exit 130 in its log, nothing
    written) and serves the next one."""
    target, seen = tmp_path / "f.nc", len(server_log(server))
    res = signalled([*client_args(world, target, server), "--log-json"], sig,
                    when=lambda events, _: stage_at(events, "read") is not None)  # fmt: skip
    assert res.sent_ns is not None and stage_at(res.events, "written") is None
    assert_exit(res, sig)
    Serve(world, tmp_path / "next", server).recover()
    jobs = [r for r in server_log(server)[seen:] if r.get("job") and "exit_code" in r]
    assert [r["exit_code"] for r in jobs if r["job"]["out"] == str(target)] == [130], jobs
    assert entries(tmp_path) == {"next"}  # no forecast, no lock, no temporary file


# ------------------------------------------------------------------------------ full disk
@pytest.fixture
def small_disk(tmp_path):
    """A 64 KiB tmpfs, unmounted afterwards; skipped where mounting is not permitted."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs (a full disk) needs root and mount(8)")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_full_disk_forecast(world, small_disk):
    res = signalled(forecast_args(world, small_disk / "f.nc"), None)
    assert res.rc == 3 and len(res.lines()) == 1, res.stderr
    assert "full" in res.stderr or "space" in res.stderr, res.stderr
    assert entries(small_disk) == set()  # nothing partial, no temporary file, no lock


def test_full_disk_prepare(world, small_disk):
    res = signalled(prepare_args(world, small_disk / "store"), None)
    assert res.rc == 3 and len(res.lines()) == 1, res.stderr
    assert entries(small_disk) == set()
