"""Atomic files: a temporary name beside the target, fsync, rename, fsync the directory.

The one atomic writer of the package (forecasts, reports, quick-looks, checkpoints, model cards,
manifests and synthetic data all go through it).

`atomic_path(path)` yields a temporary name in the target directory,
`.<name>.<host>.<pid>.<random>.tmp`; after the block, the file is fsynced, renamed onto `path`
with `os.replace` and the directory is fsynced. If the block raises anything (KeyboardInterrupt
included) the temporary file is removed and the previous file at `path` is left untouched.
Temporary files of processes that died without cleaning up (SIGKILL) are removed by
`remove_stale_temps`, which only touches names carrying this host's name and a pid that is no
longer alive.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "atomic_path",
    "atomic_write_bytes",
    "fsync_dir",
    "fsync_file",
    "host",
    "remove_stale_temps",
    "temp_prefix",
]


def host() -> str:
    """This machine's name, reduced to characters that are safe in a file name (no dots)."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", socket.gethostname().split(".")[0])
    return name[:32] or "host"


def temp_prefix(path: str | os.PathLike[str], pid: int | None = None) -> str:
    """Start of the temporary names of `path` written by process `pid` (default: this one)."""
    path = Path(path)
    return f".{path.name}.{host()}.{os.getpid() if pid is None else pid}."


def fsync_file(path: str | os.PathLike[str]) -> None:
    """Flush a closed file's data and metadata to the disk."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make a rename or a new file in directory `path` durable (no-op where directories cannot be
    fsynced, as on some network file systems)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as err:
        if err.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success move the closed file there atomically.

    The block must write and close the temporary file. Then it is fsynced, given the usual
    permissions (0666 minus the umask), renamed onto `path` and the directory fsynced. On any
    exception, KeyboardInterrupt and SystemExit included, the temporary file is removed and the
    exception goes on; `path` is untouched. Missing parent folders are made. `suffix` ends the
    temporary name, for writers that choose their format by it (a killed run's files are swept
    by `remove_stale_temps` only with the default `.tmp`).
    """
    path = Path(path)
    with _naming(path):
        _make_parent(path.parent)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path), suffix=suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with _naming(path):
            fsync_file(tmp)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600
            os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    with _naming(path):
        fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write `data` to `path` atomically (see `atomic_path`); an OSError names `path`."""
    with atomic_path(path) as tmp, _naming(Path(path)):
        tmp.write_bytes(data)
    return Path(path)


def _make_parent(directory: Path) -> None:
    """Make missing folders; a file in the way is ENOTDIR (mkdir says 'File exists')."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except FileExistsError as err:
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), err.filename) from None


@contextlib.contextmanager
def _naming(path: Path) -> Iterator[None]:
    """Have an OSError of our own steps name `path` when the OS named no file (a write on a full
    disk) or only the temporary one: the message, and `errors.exit_status`, then say which
    output failed. It stays an OSError of the same errno (callers and tests catch those)."""
    try:
        yield
    except OSError as err:
        name = err.filename
        temporary = isinstance(name, (str, bytes, os.PathLike)) and Path(
            os.fsdecode(name)
        ).name.startswith(temp_prefix(path))
        if err.errno is None or (name is not None and not temporary):
            raise  # no errno to keep, or it names a file already (a parent directory, say)
        raise OSError(err.errno, err.strerror, os.fspath(path)) from err


def remove_stale_temps(path: str | os.PathLike[str]) -> list[Path]:
    """Remove temporary files in `path`'s directory left by dead processes of this host;
    returns them.

    Only names made by `atomic_path` (for any output: forecasts named by reference time change
    name every run), with this host's name and the pid of a process that no longer exists, are
    removed: a run on another host sharing the directory, or a live run of this host, is never
    disturbed.
    """
    path = Path(path)
    pattern = re.compile(r"\..+\." + re.escape(f"{host()}.") + r"(\d+)\.[A-Za-z0-9_]+\.tmp")
    removed = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if match is None or _alive(int(match.group(1))):
            continue
        with contextlib.suppress(OSError):
            os.unlink(entry.path)
            removed.append(Path(entry.path))
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except OverflowError:
        return False
    return True
