"""One writer per output file: an advisory lock next to the output, and atomic-write helpers.

`output_lock(path)` holds `fcntl.flock` on `<dir>/.<name>.lock` for the duration of a run, so two
scheduled runs for the same output never overlap (the second raises `LockHeldError`, exit 5). The
kernel releases a flock when its holder dies, however it dies (SIGKILL, OOM killer), so a lock file
left behind by a dead process is simply taken over: there is no pid guessing and no timeout. The pid
(and host) written into the file only serve the error message.

The lock file is removed on release. That is safe because removal happens *while the lock is held*
and every acquirer, after its `flock` succeeded, checks that the file it locked is still the one
under the lock name (same device and inode) and starts over when it is not: a process that opened
the old file just before it was unlinked cannot end up holding a lock nobody else can see. A lock
file that cannot be removed (read-only directory after a crash, say) is harmless: it is taken over.

`flock` works on local file systems; on NFS, Linux emulates it with POSIX byte-range locks, which
work across clients when the server supports locking (NFSv4, or NFSv3 with lockd).

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
import fcntl
import os
import re
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

from stforecast.errors import LockHeldError

__all__ = [
    "atomic_path",
    "fsync_dir",
    "fsync_file",
    "lock_path",
    "output_lock",
    "remove_stale_temps",
    "temp_prefix",
]

# How often to start over when the lock file was replaced between open() and flock() (each retry
# means another process released the lock in that instant; a handful is already unlikely).
_RETRIES = 50


def _host() -> str:
    """This machine's name, reduced to characters that are safe in a file name (no dots)."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", socket.gethostname().split(".")[0])
    return name[:32] or "host"


def lock_path(path: str | os.PathLike[str]) -> Path:
    """The lock file of an output: `<dir>/.<name>.lock`."""
    path = Path(path)
    return path.parent / f".{path.name}.lock"


@contextlib.contextmanager
def output_lock(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold the lock of output `path` for the block; yields the lock file's path.

    Raises `LockHeldError` (exit code 5) at once, without waiting, when another process (or
    another `output_lock` of this process) holds it. Missing parent folders are made. The lock is
    not re-entrant: `write_forecast` does not take it, the caller does, around the whole run.
    """
    path = Path(path)
    lockfile = lock_path(path)
    lockfile.parent.mkdir(parents=True, exist_ok=True)
    fd = _acquire(path, lockfile)
    try:
        _write_owner(fd)
        yield lockfile
    finally:
        # Unlink while still holding the lock (see the module docstring), then release.
        with contextlib.suppress(OSError):
            if _same_file(fd, lockfile):
                os.unlink(lockfile)
        os.close(fd)  # closing the last descriptor releases the flock


def _acquire(path: Path, lockfile: Path) -> int:
    for _ in range(_RETRIES):
        fd = os.open(lockfile, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise LockHeldError(
                f"another forecast is writing {path} (lock {lockfile} held by {_owner(lockfile)}); "
                "this run stopped without writing: let the other run finish, and schedule runs "
                "so that they do not overlap (a longer interval, or a timeout on each run)"
            ) from None
        if _same_file(fd, lockfile):
            return fd
        os.close(fd)  # the file we locked was removed by its previous holder: start over
    raise LockHeldError(f"could not lock {lockfile}: it keeps being replaced by other processes")


def _same_file(fd: int, lockfile: Path) -> bool:
    try:
        on_disk = os.stat(lockfile)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (on_disk.st_dev, on_disk.st_ino)


def _write_owner(fd: int) -> None:
    with contextlib.suppress(OSError):  # the pid is only for messages: never fail a run for it
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {_host()}\n".encode(), 0)


def _owner(lockfile: Path) -> str:
    """`pid N` (plus `on host H` when not this host) from a lock file, for messages."""
    try:
        words = lockfile.read_text(errors="replace").split()
    except OSError:
        words = []
    if not words or not words[0].isdigit():
        return "another process"  # it has just taken the lock and not yet written its pid
    owner = f"pid {words[0]}"
    if len(words) > 1 and words[1] != _host():
        owner += f" on host {words[1]}"
    return owner


# --------------------------------------------------------------------------------------------
# Atomic files
# --------------------------------------------------------------------------------------------


def temp_prefix(path: str | os.PathLike[str], pid: int | None = None) -> str:
    """Start of the temporary names of `path` written by process `pid` (default: this one)."""
    path = Path(path)
    return f".{path.name}.{_host()}.{os.getpid() if pid is None else pid}."


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
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path), suffix=suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        fsync_file(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write `data` to `path` atomically (see `atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def remove_stale_temps(path: str | os.PathLike[str]) -> list[Path]:
    """Remove temporary files in `path`'s directory left by dead processes of this host;
    returns them.

    Only names made by `atomic_path` (for any output: forecasts named by reference time change
    name every run), with this host's name and the pid of a process that no longer exists, are
    removed: a run on another host sharing the directory, or a live run of this host, is never
    disturbed.
    """
    path = Path(path)
    pattern = re.compile(r"\..+\." + re.escape(f"{_host()}.") + r"(\d+)\.[A-Za-z0-9_]+\.tmp")
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
