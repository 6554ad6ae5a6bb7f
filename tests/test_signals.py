"""SIGINT and SIGTERM through the real command line (`python -m stforecast` subprocesses): one
line, exit 130 / 143, nothing partial or stale left, an earlier output unchanged; training stops
after a whole step with a checkpoint that resumes exactly; a signal whose KeyboardInterrupt a
library swallowed still fails the run. The helpers here serve `test_faults.py` too."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
import xarray as xr
from safetensors.torch import load_file

from runs import make_run

CLI = [sys.executable, "-m", "stforecast"]
LEADS = 144  # the run's max_hours (24 h of 10 min): a rollout long enough to be hit
WORDS = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}
COMMIT_SLACK_NS = 20_000_000  # file times come from the kernel's coarse clock


# ------------------------------------------------------------------------------ helpers
@dataclass
class Outcome:
    """A run and the signal sent to it."""

    rc: int
    stdout: str
    stderr: str
    sent_ns: int | None = None  # wall time the signal was sent (None: the run ended first)
    caught: bool = True  # the process handled SIGTERM itself then (the CLI's handlers were set)
    events: list[tuple[float, str]] = field(default_factory=list)  # stdout lines, seconds in

    def lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


def catches(pid: int, sig: int) -> bool:
    """Whether process `pid` has a handler for `sig` (Linux: /proc/PID/status, SigCgt)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    mask = next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(int(mask, 16) >> (sig - 1) & 1)


def exiting(pid: int) -> bool:
    """Whether process `pid` is in the kernel's exit already (it called _exit, and is still
    unmapping its memory): a signal it gets now does nothing, it ends with its own code."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return True
    return fields[0] in "ZXx" or bool(int(fields[6]) & 0x4)  # PF_EXITING


def signalled(
    args: list[str],
    sig: int | None,
    *,
    at: float | None = None,
    when: Callable[[list[tuple[float, str]], float], bool] | None = None,
    cwd: Path | None = None,
    timeout: float = 180,
) -> Outcome:
    """Run the CLI with `args`; send `sig` `at` seconds after the start, or as soon as
    `when(stdout lines so far, seconds since the start)` holds (polled), unless the run ended
    before."""
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd
    )
    events: list[tuple[float, str]] = []
    err: list[str] = []

    def read_out() -> None:
        for line in proc.stdout:
            events.append((time.monotonic() - t0, line))

    readers = [threading.Thread(target=read_out), threading.Thread(target=lambda: err.append(
        proc.stderr.read()))]  # fmt: skip
    for reader in readers:
        reader.start()
    sent, caught = None, True
    try:
        if sig is not None:
            while proc.poll() is None and time.monotonic() - t0 < timeout:
                if (at is not None and time.monotonic() - t0 >= at) or (
                    when is not None and when(list(events), time.monotonic() - t0)
                ):
                    break
                time.sleep(0.002)
            caught, ending = catches(proc.pid, signal.SIGTERM), exiting(proc.pid)
            sent = time.time_ns()
            proc.send_signal(sig)  # sent only if the process has not ended (it polls first)
            sent = None if ending or proc.returncode is not None else sent
        rc = proc.wait(timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for reader in readers:
            reader.join()
    out = "".join(line for _, line in events)
    return Outcome(rc, out, "".join(err), sent, caught, events)


def before_handlers(res: Outcome, sig: int) -> bool:
    """The signal came while Python started, before the CLI's handlers existed: the system's
    default action (killed by it), or CPython's own end when Ctrl-C lands while it imports its
    `site` module (a fatal error, exit 1). Nothing of stforecast had run then."""
    if res.caught:
        return False
    return res.rc == -sig or (
        sig == signal.SIGINT
        and res.rc == 1
        and "Fatal Python error: init_import_site" in res.stderr
    )


def assert_stopped(res: Outcome, sig: int, prefix: str | None = None) -> None:
    """The exit of a run that got `sig` (when it got it before it ended): 130/143 with one
    line; before the CLI set its handlers (Python starting), the system's default action."""
    if res.sent_ns is None:
        assert res.rc == 0, res.stderr[-2000:]
        return
    if sig == signal.SIGKILL:
        assert res.rc == -signal.SIGKILL, (res.rc, res.stderr[-2000:])
        return
    if before_handlers(res, sig):  # Python was starting: nothing was done
        return
    assert res.rc == 128 + sig, (res.rc, res.stderr[-3000:])
    expected = f"error: {WORDS[sig]}" if prefix is None else prefix
    assert len(res.lines()) == 1 and res.lines()[0].startswith(expected), res.stderr[-3000:]


def entries(directory: Path) -> set[str]:
    return set(os.listdir(directory)) if directory.is_dir() else set()


def stamp(path: Path) -> tuple[int, int, bytes] | None:
    """What says that a file changed: inode, size and bytes (None: absent)."""
    if not path.exists():
        return None
    st = path.stat()
    return st.st_ino, st.st_size, path.read_bytes()


def assert_forecast_kept(res: Outcome, target: Path, before, sig: int) -> None:
    """No partial output, no lock or temporary file left (unless SIGKILL: swept by the next
    run), and the earlier forecast unchanged unless the new one was committed before the
    signal was sent."""
    names = entries(target.parent)
    left = {n for n in names if n.endswith((".tmp", ".lock"))}
    if sig != signal.SIGKILL or res.sent_ns is None:
        assert not left, (names, res.stderr[-2000:])
    assert names - left <= {target.name}, names
    now = stamp(target)
    if now == before:
        return
    assert now is not None, "the earlier forecast was removed"
    if res.sent_ns is not None:  # replaced: only a commit before the signal may do that
        assert target.stat().st_ctime_ns <= res.sent_ns + COMMIT_SLACK_NS, res.stderr[-2000:]
    with xr.open_dataset(target) as ds:
        assert ds.sizes["time"] == LEADS  # whole


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "model.safetensors"))


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


TINY_RECIPE = """[data]
store = "{store}"
input_frames = 4
output_frames = 3

[model]
name = "convlstm"
patch_size = 2
hidden_channels = [8, 8]
kernel_size = 3

[train]
batch_size = 2
max_steps = {steps}
val_every = {val_every}
val_batches = 1
checkpoint_every = 1000
log_every = 1
device = "cpu"
deterministic = true
tensorboard = false
"""


def tiny_recipe(path: Path, store: Path, steps: int = 8, val_every: int = 3) -> Path:
    """A recipe that trains in a few seconds on the run's store, deterministically."""
    path.write_text(TINY_RECIPE.format(store=store, steps=steps, val_every=val_every))
    return path


def metrics_lines(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    try:
        return len(path.read_text().splitlines())
    except OSError:
        return 0


def forecast_args(world: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return ["forecast", str(world["archive"]), "-m", str(world["run"]), "--steps", str(LEADS),
            "--out", str(out), "--quiet", *extra]  # fmt: skip


def stage_at(events: list[tuple[float, str]], stage: str) -> float | None:
    """When (seconds in) the `--log-json` event of `stage` came, or None."""
    for t, line in events:
        if f'"stage": "{stage}"' in line:
            return t
    return None


# ------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    return make_run(tmp_path_factory.mktemp("signals"), steps=2)


@pytest.fixture(scope="module")
def first(world, tmp_path_factory) -> dict:
    """An uninterrupted forecast: its file (the earlier forecast the tests' runs find at their
    output) and its stages (seconds from the start), to aim signals at."""
    out = tmp_path_factory.mktemp("first") / "f.nc"
    res = signalled(forecast_args(world, out, "--log-json"), None)
    assert res.rc == 0, res.stderr
    stages = {s: stage_at(res.events, s) for s in ("start-up", "load model", "read", "written")}
    assert None not in stages.values(), res.stdout
    return {"file": out, "stages": stages}


@pytest.fixture
def earlier(first, tmp_path) -> tuple[Path, tuple]:
    """The earlier forecast at the output path, as a scheduled run finds it."""
    target = tmp_path / "out" / "f.nc"
    target.parent.mkdir()
    shutil.copyfile(first["file"], target)
    return target, stamp(target)


# ------------------------------------------------------------------------------ forecast
MOMENTS = {  # the event to wait for, and then how far into the rollout
    "start": ("start-up", None),  # its handlers are set: the CLI parses, torch loads
    "reading": ("load model", None),  # opening and reading the frames
    "rollout": ("read", 0.15),
    "end": ("read", 0.6),  # the last leads, before the file is committed
}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
@pytest.mark.parametrize("moment", list(MOMENTS))
def test_forecast_stops_cleanly(world, first, earlier, sig, moment):
    target, before = earlier
    stage, fraction = MOMENTS[moment]
    rollout = first["stages"]["written"] - first["stages"]["read"]
    for _ in range(4):  # the machine's load changes the timing: aim earlier when too late
        delay = 0.0 if fraction is None else fraction * rollout

        def due(events: list[tuple[float, str]], now: float, delay: float = delay) -> bool:
            t = stage_at(events, stage)
            return t is not None and now >= t + delay

        res = signalled(forecast_args(world, target, "--log-json"), sig, when=due)
        if res.sent_ns is not None and stamp(target) == before:
            break
        assert_forecast_kept(res, target, before, sig)  # late: a commit before the signal
        target.unlink()
        shutil.copyfile(first["file"], target)
        before = stamp(target)
        rollout /= 2
    assert res.sent_ns is not None and res.caught, "the forecast always ended first"
    assert_stopped(res, sig)
    assert_forecast_kept(res, target, before, sig)
    assert stamp(target) == before and stage_at(res.events, "written") is None
    assert f'"exit_code": {128 + sig}' in res.stdout  # --log-json's error event


SWALLOW = """
import dataclasses, os, signal, sys
import stforecast.forecasting.job as job

class Swallowed:
    # a Python callback run by C code: a KeyboardInterrupt raised in it is lost (pyproj's log)
    def __del__(self):
        os.kill(os.getpid(), signal.{sig})

where = sys.argv.pop(1)
if where == "reading":
    opened = job._open
    def _open(sources, run):
        frames = opened(sources, run)
        Swallowed()
        return frames
    job._open = _open
else:  # while the last lead is computed
    planned = job.plan
    def plan(*args, **kwargs):
        p = planned(*args, **kwargs)
        def leads(it=p.leads, n=kwargs["steps"]):
            for k, lead in enumerate(it):
                if k == n - 1:
                    Swallowed()
                yield lead
        return dataclasses.replace(p, leads=leads())
    job.plan = plan
sys.argv[0] = "stforecast"
from stforecast.cli.app import main
main()
"""


@pytest.mark.parametrize(
    "sig, where",
    [(signal.SIGINT, "reading"), (signal.SIGTERM, "last-lead")],
    ids=["INT-reading", "TERM-last-lead"],
)
def test_a_swallowed_signal_still_fails_the_run(world, earlier, sig, where):
    target, before = earlier
    code = SWALLOW.format(sig=signal.Signals(sig).name)
    res = subprocess.run([sys.executable, "-c", code, where, *forecast_args(world, target)],
                         capture_output=True, text=True, timeout=180)  # fmt: skip
    assert res.returncode == 128 + sig, res.stderr
    assert res.stderr.splitlines() == [f"error: {WORDS[sig]}"]  # nothing about the lost one
    assert stamp(target) == before
    assert entries(target.parent) == {target.name}


# ------------------------------------------------------------------------------ train
def test_train_sigterm_checkpoints_and_resumes_exactly(world, tmp_path):
    recipe = tiny_recipe(tmp_path / "tiny.toml", world["store"])
    ref, run = tmp_path / "ref", tmp_path / "run"
    done = signalled(["train", str(recipe), "--out", str(ref), "--quiet"], None)
    assert done.rc == 0, done.stderr
    res = signalled(["train", str(recipe), "--out", str(run), "--quiet"], signal.SIGTERM,
                    when=lambda *_: metrics_lines(run) >= 3)  # fmt: skip
    assert_stopped(res, signal.SIGTERM, "error: terminated: training stopped after step")
    assert "--resume" in res.stderr
    step = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["step"]
    assert 3 <= step < 8 and not (run / "model.safetensors").exists()
    assert not list(run.rglob("*.tmp"))
    again = signalled(["train", str(recipe), "--out", str(run), "--quiet", "--resume"], None)
    assert again.rc == 0, again.stderr
    assert_same_weights(weights(ref), weights(run))
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["event"] == "train"] == list(range(1, 9))


def test_train_sigint_checkpoints_too(world, tmp_path):
    recipe = tiny_recipe(tmp_path / "tiny.toml", world["store"])
    run = tmp_path / "run"
    res = signalled(["train", str(recipe), "--out", str(run), "--quiet"], signal.SIGINT,
                    when=lambda *_: metrics_lines(run) >= 2)  # fmt: skip
    assert_stopped(res, signal.SIGINT, "error: interrupted: training stopped after step")
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["step"] >= 2


# ------------------------------------------------------------------------------ engine hooks
def test_forecast_to_file_checks_cancel_last_before_the_commit(world, tmp_path):
    """The command line's cancel hook is a callable; the last check comes after the last lead,
    before the file is committed: nothing is written."""
    from stforecast.errors import CancelledError
    from stforecast.forecasting.job import forecast_to_file

    calls = []

    def cancel() -> bool:  # after reading, after each of the 2 leads, then before the commit
        calls.append(1)
        return len(calls) > 3

    target = tmp_path / "f.nc"
    with pytest.raises(CancelledError, match="nothing was written"):
        forecast_to_file([str(world["archive"])], world["run"], target, steps=2, device="cpu",
                         cancel=cancel)  # fmt: skip
    assert len(calls) == 4 and entries(tmp_path) == set()


def test_train_stop_hook_checkpoints_a_whole_step(world, tmp_path):
    from stforecast.config import load_recipe
    from stforecast.errors import StoppedError
    from stforecast.training import train
    from stforecast.training.datasets import build_datasets

    recipe = load_recipe(tiny_recipe(tmp_path / "tiny.toml", world["store"]), [])
    data = build_datasets(recipe, cache_dir=tmp_path / "cache")
    polls = []

    def stop() -> bool:
        polls.append(1)
        return len(polls) > 3  # before steps 1, 2 and 3: go on; then stop

    with pytest.raises(StoppedError, match="after step 3 of 8"):
        train(recipe, tmp_path / "run", data=data, stop=stop)
    assert torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)["step"] == 3
    assert not (tmp_path / "run" / "model.safetensors").exists()
    assert train(recipe, tmp_path / "run", data=data, resume=True)["resumed_from"] == 3


# ------------------------------------------------------------------------------ prepare
def test_prepare_stops_cleanly(tmp_path):
    from stforecast.data.synthetic import write_rain_cells

    archive = write_rain_cells(tmp_path / "rain.nc", frames=600, size=64, seed=3)
    store = tmp_path / "out" / "store"
    store.parent.mkdir()
    args = ["prepare", str(archive), "--out", str(store), "--input-frames", "4",
            "--output-frames", "3", "--quiet"]  # fmt: skip
    res = signalled(args, signal.SIGTERM, when=lambda *_: (store.parent / ".store.tmp").exists())
    assert res.sent_ns is not None and res.caught
    assert_stopped(res, signal.SIGTERM)
    assert entries(store.parent) == set()  # no store, no .store.tmp
