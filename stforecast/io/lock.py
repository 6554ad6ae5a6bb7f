"""One writer per output file: an advisory lock next to the output.

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
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from stforecast.errors import LockHeldError, writing
from stforecast.io.atomic import host

__all__ = ["lock_path", "output_lock"]

# How often to start over when the lock file was replaced between open() and flock() (each retry
# means another process released the lock in that instant; a handful is already unlikely).
_RETRIES = 50


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
    with writing(path, "write the forecast"):  # read-only, full, /proc: exit 3 naming the output
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
        os.pwrite(fd, f"{os.getpid()} {host()}\n".encode(), 0)


def _owner(lockfile: Path) -> str:
    """`pid N` (plus `on host H` when not this host) from a lock file, for messages."""
    try:
        words = lockfile.read_text(errors="replace").split()
    except OSError:
        words = []
    if not words or not words[0].isdigit():
        return "another process"  # it has just taken the lock and not yet written its pid
    owner = f"pid {words[0]}"
    if len(words) > 1 and words[1] != host():
        owner += f" on host {words[1]}"
    return owner
