"""The machine refusing, through the CLI (issue 13): a read-only or full output directory, a
symbolic link loop, a foreign pickle as checkpoint. Each is exit 3 with one `error:` line that
names the path and the OS's reason; nothing new is left behind and nothing there is changed.

Root writes through permission bits, so a read-only directory is a tmpfs remounted read-only
(else one made immutable with `chattr +i`; for other users `chmod 0555`), and a full disk is a
64 KiB tmpfs; a test skips, saying why, where the machine allows none of these.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from forecast_files import forecast_file
from typer.testing import CliRunner

from stforecast.cli.app import app
from stforecast.errors import FileSystemError, exit_status, is_bug

from runs import make_run


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("environment"), steps=2)


def cli(*args: str):
    return CliRunner().invoke(app, list(args))


def one_error(res) -> str:
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "internal error" not in lines[0], lines[0]
    return lines[0]


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every entry under `root`, hidden ones included, with a file's bytes."""
    return {
        str(p.relative_to(root)): p.read_bytes() if p.is_file() and not p.is_symlink() else None
        for p in sorted(root.rglob("*"))
    }


def _run(*command: str) -> bool:
    return subprocess.run(command, capture_output=True).returncode == 0


def _unmount(where: Path) -> None:
    if not _run("umount", str(where)):
        _run("umount", "-l", str(where))


@contextlib.contextmanager
def read_only(root: Path, fill: Callable[[Path], None] = lambda d: None) -> Iterator[tuple]:
    """A directory filled by `fill`, then made unwritable for this user; yields it and the
    reason the OS gives."""
    where = root / "ro"
    where.mkdir()
    if os.geteuid() != 0:
        fill(where)
        where.chmod(0o555)
        try:
            yield where, "Permission denied"
        finally:
            where.chmod(0o755)
        return
    if _run("mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(where)):
        try:
            fill(where)
            if not _run("mount", "-o", "remount,ro", str(where)):
                pytest.skip("cannot remount a tmpfs read-only")
            yield where, "Read-only file system"
        finally:
            _unmount(where)
        return
    fill(where)
    if not _run("chattr", "+i", str(where)):
        pytest.skip("root writes anywhere, and neither mount nor chattr works here")
    try:
        yield where, "Operation not permitted"
    finally:
        _run("chattr", "-i", str(where))


@contextlib.contextmanager
def full_disk(root: Path, leave: int = 0) -> Iterator[Path]:
    """A 64 KiB file system with `leave` bytes free (about) for the test to run out of."""
    where = root / "full"
    where.mkdir()
    if os.geteuid() != 0 or not _run("mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(where)):
        pytest.skip("a full disk needs a small tmpfs, which only root can mount here")
    try:
        if leave:
            free = shutil.disk_usage(where).free
            (where / "filler").write_bytes(b"\0" * max(free - leave, 0))
        yield where
    finally:
        _unmount(where)


def forecast_args(base, out: Path | str, *extra: str) -> list[str]:
    return ["forecast", str(base["archive"]), "--model", str(base["run"]), "--out", str(out),
            "--device", "cpu", "--quiet", *extra]  # fmt: skip


# ------------------------------------------------------------------------------ read-only


@pytest.mark.parametrize("target", ["directory", "earlier forecast"])
def test_forecast_into_a_read_only_directory(base, tmp_path, target):
    def fill(d: Path) -> None:
        forecast_file(d / "f.nc")
        (d / "notes.txt").write_text("kept\n")

    with read_only(tmp_path, fill) as (ro, reason):
        before = snapshot(ro)
        out = f"{ro}/" if target == "directory" else ro / "f.nc"
        res = cli(*forecast_args(base, out, "--steps", "1"))
        assert res.exit_code == 3, res.output
        line = one_error(res)
        assert str(ro) in line and reason in line
        assert snapshot(ro) == before


def test_prepare_into_a_read_only_directory(base, tmp_path):
    with read_only(tmp_path, lambda d: shutil.copytree(base["store"], d / "s")) as (ro, reason):
        before = snapshot(ro)
        for out, extra in ((ro / "s", ["--overwrite"]), (ro / "new", [])):
            res = cli("prepare", str(base["archive"]), "--out", str(out), "--quiet",
                      "--input-frames", "4", "--output-frames", "3", *extra)  # fmt: skip
            assert res.exit_code == 3, res.output
            line = one_error(res)
            assert f"{out}: cannot write the store ({reason})" in line
            assert snapshot(ro) == before


def _outputs(base, ro: Path) -> dict[str, list[str]]:
    return {
        "train": ["train", str(base["run"] / "recipe.toml"), "--out", str(ro / "run"), "--quiet"],
        "evaluate": ["evaluate", "--model", str(base["run"]), "--out", str(ro / "ev"), "--quiet"],
        "export": ["export", "--model", str(base["run"]), "--out", str(ro / "m.onnx")],
        "plot": ["plot", str(ro / "f.nc"), "--out", str(ro / "p.png")],
        "synthetic": ["synthetic", "rain-cells", "--out", str(ro / "x.nc"), "--frames", "2"],
    }


@pytest.mark.parametrize("command", ["train", "evaluate", "export", "plot", "synthetic"])
def test_other_outputs_into_a_read_only_directory(base, tmp_path, command):
    if command == "export":
        pytest.importorskip("onnx")
    with read_only(tmp_path, lambda d: forecast_file(d / "f.nc")) as (ro, reason):
        before = snapshot(ro)
        res = cli(*_outputs(base, ro)[command])
        assert res.exit_code == 3, res.output
        line = one_error(res)
        assert str(ro) in line and reason in line
        assert snapshot(ro) == before


# ------------------------------------------------------------------------------ full disk


def test_prepare_on_a_full_disk_leaves_nothing(base, tmp_path):
    with full_disk(tmp_path) as full:
        res = cli("prepare", str(base["archive"]), "--out", str(full / "s"), "--quiet",
                  "--input-frames", "4", "--output-frames", "3")  # fmt: skip
        assert res.exit_code == 3, res.output
        assert f"{full / 's'}: cannot write the store (No space left on device)" in one_error(res)
        assert snapshot(full) == {}  # no store, no .s.tmp


@pytest.mark.parametrize("command", ["forecast", "evaluate", "export", "plot", "synthetic"])
def test_other_outputs_on_a_full_disk_leave_nothing(base, tmp_path, command):
    if command == "export":
        pytest.importorskip("onnx")
    forecast_file(tmp_path / "f.nc")
    with full_disk(tmp_path, leave=4096) as full:
        before = snapshot(full)
        args = {
            "forecast": forecast_args(base, f"{full}/", "--steps", "3"),
            "evaluate": ["evaluate", "--model", str(base["run"]), "--out", f"{full}/ev", "--quiet"],
            "export": ["export", "--model", str(base["run"]), "--out", str(full / "m.onnx")],
            "plot": ["plot", str(tmp_path / "f.nc"), "--out", str(full / "p.gif")],
            "synthetic": ["synthetic", "rain-cells", "--out", f"{full}/x.nc"],
        }[command]
        res = cli(*args)
        assert res.exit_code == 3, res.output
        line = one_error(res)
        assert str(full) in line
        assert "No space left on device" in line or "the file system is full" in line
        assert snapshot(full) == before


# ------------------------------------------------------------------------------ link loops


def test_a_symbolic_link_loop_is_named_as_one(base, tmp_path):
    loop = tmp_path / "loop"
    loop.mkdir()
    os.symlink("b", loop / "a")
    os.symlink("a", loop / "b")
    folder = tmp_path / "folder"
    folder.mkdir()
    os.symlink("x.nc", folder / "y.nc")
    os.symlink("y.nc", folder / "x.nc")
    out = tmp_path / "out"
    out.mkdir()
    before = snapshot(tmp_path)
    for args in (
        ["forecast", str(loop / "a"), "--model", str(base["run"]), "--out", f"{out}/"],
        ["prepare", str(loop / "a"), "--out", str(out / "s")],
        ["prepare", str(folder), "--out", str(out / "s")],
        ["plot", str(loop / "a"), "--out", str(out / "p.png")],
    ):
        res = cli(*args)
        assert res.exit_code == 3, res.output
        line = one_error(res)
        assert "symbolic link loop" in line and "no such file" not in line
        assert snapshot(tmp_path) == before


# ------------------------------------------------------------------------------ checkpoints


class _Marker:
    """Unpickling this would create the file: the proof that nothing was unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dumps"])
def test_a_pickled_checkpoint_is_one_line_and_never_unpickled(base, tmp_path, writer):
    import torch

    run = tmp_path / "run"
    shutil.copytree(base["run"], run)
    last = run / "checkpoints" / "last.pt"
    marker = tmp_path / "unpickled"
    if writer == "torch.save":
        torch.save({"format": "stforecast-checkpoint", "version": 1, "x": _Marker(marker)}, last)
    else:
        last.write_bytes(pickle.dumps(_Marker(marker)))
    before = snapshot(run)
    train = ["train", str(run / "recipe.toml"), "--out", str(run), "--resume", "--quiet"]
    res = subprocess.run(  # a process of its own: what reaches the terminal, warnings included
        [sys.executable, "-m", "stforecast", *train], capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 3, res.stderr
    line = one_error(res)
    assert f"{last}: not a readable stforecast checkpoint" in line and "never unpickled" in line
    assert "\x1b" not in line and "Warning" not in res.stderr
    assert not marker.exists()
    assert snapshot(run) == before


# ------------------------------------------------------------------------------ hostile runs


@pytest.mark.parametrize(
    "edit",
    [
        lambda card: card["architecture"].update(kernel_size=5),
        lambda card: card["input"].__setitem__("time_step_seconds", "600s"),
    ],
    ids=["another-network", "bad-time-step"],
)
def test_export_of_a_hostile_run_says_what_forecast_says(base, tmp_path, edit):
    run = tmp_path / "run"
    shutil.copytree(base["run"], run)
    card = json.loads((run / "model.json").read_text())
    edit(card)
    (run / "model.json").write_text(json.dumps(card))
    out = tmp_path / "out"
    out.mkdir()
    forecast = cli("forecast", str(base["archive"]), "--model", str(run), "--out", f"{out}/",
                   "--steps", "1", "--device", "cpu", "--quiet")  # fmt: skip
    export = cli("export", "--model", str(run), "--out", str(out / "m.onnx"))
    assert forecast.exit_code == export.exit_code == 4, (forecast.output, export.output)
    assert one_error(forecast) == one_error(export)
    assert list(out.iterdir()) == []


# ------------------------------------------------------------------------------ /proc, server

needs_proc = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="no /proc here")


@needs_proc
@pytest.mark.parametrize("command", ["prepare", "export", "plot", "synthetic"])
def test_an_output_under_proc_is_an_environment_error(base, tmp_path, command):
    if command == "export":
        pytest.importorskip("onnx")
    forecast_file(tmp_path / "f.nc")
    args = {
        "prepare": ["prepare", str(base["archive"]), "--out", "/proc/stf-store", "--quiet"],
        "export": ["export", "--model", str(base["run"]), "--out", "/proc/stf.onnx"],
        "plot": ["plot", str(tmp_path / "f.nc"), "--out", "/proc/stf.png"],
        "synthetic": ["synthetic", "rain-cells", "--out", "/proc/stf.nc", "--frames", "2"],
    }[command]
    res = cli(*args)
    assert res.exit_code == 3, res.output
    assert "/proc/stf" in one_error(res)


@pytest.fixture
def server(base):
    from stforecast.forecasting import service

    path = Path(tempfile.mkdtemp(prefix="stf", dir="/tmp")) / "s.sock"  # short: socket paths
    ready, failed = threading.Event(), []

    def target() -> None:
        try:
            service.serve(path, models=[base["run"]], device="cpu", log=lambda e: None,
                          ready=ready.set)  # fmt: skip
        except BaseException as err:  # reported below
            failed.append(err)
            ready.set()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    assert ready.wait(60) and not failed, failed
    yield path
    service.stop_server(path)
    thread.join(30)
    shutil.rmtree(path.parent, ignore_errors=True)


def test_a_server_job_into_a_read_only_directory_is_exit_3(base, tmp_path, server):
    with read_only(tmp_path) as (ro, reason):
        res = cli(*forecast_args(base, f"{ro}/", "--steps", "1", "--socket", str(server)))
        assert res.exit_code == 3, res.output
        assert reason in one_error(res)
        assert snapshot(ro) == {}


@needs_proc
@pytest.mark.parametrize("where", ["in-process", "server"])
def test_a_forecast_into_proc_is_an_environment_error(base, server, where):
    extra = ["--socket", str(server)] if where == "server" else []
    res = cli(*forecast_args(base, "/proc/stf.nc", "--steps", "1", *extra))
    assert res.exit_code == 3, res.output
    assert "/proc/stf.nc" in one_error(res)


# ------------------------------------------------------------------------------ the mapping


@pytest.mark.parametrize(
    ("err", "code", "text"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), 3, "No space left on device"),
        (OSError(errno.EROFS, "Read-only file system", "out/x"), 3, "out/x: Read-only"),
        (OSError(errno.ELOOP, "Too many levels", "a"), 3, "a: a symbolic link loop"),
        (PermissionError(errno.EACCES, "Permission denied", "d/f"), 3, "d/f: Permission denied"),
        (PermissionError(errno.EACCES, "Permission denied"), 1, "internal error"),
        (FileNotFoundError(errno.ENOENT, "No such file or directory", "x"), 1, "internal error"),
        (OSError("no errno"), 1, "internal error"),
        (FileSystemError("out/x: cannot write (Read-only file system)"), 3, "cannot write"),
    ],
    ids=["enospc", "erofs", "eloop", "eacces-named", "eacces-anonymous", "enoent", "bare", "typed"],
)
def test_which_os_errors_are_the_machines(err, code, text):
    """Storage errors are the machine's whoever raised them; a refused path only when the OS
    named it (else the origin is unknown: a bug, with its traceback); a missing file never (a
    path the code made up would hide behind it): the write sites name theirs."""
    got, line = exit_status(err)
    assert got == code and text in line
    assert is_bug(err) == (code == 1)
