"""Errors the engine raises for bad input, each carrying the exit code the CLI reports, and the
one mapping of any failure to (exit code, one line).

The CLI prints `error: <message>` on one line and exits with `exit_code`; Python users catch the
classes. Messages name the file, field or variable at fault.

    try:
        ds = stforecast.forecast(frames, "runs/radar", hours=2)
    except stforecast.errors.ModelMismatch as err:   # exit 4 on the command line
        print(err)

Each class also has a short name without `Error` (`ModelMismatch`, `LockHeld`, ...): the same
class, so either name catches it.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator

__all__ = [
    "Cancelled",
    "CancelledError",
    "ConfigError",
    "FileSystemError",
    "InputError",
    "LockHeld",
    "LockHeldError",
    "MissingVariable",
    "MissingVariableError",
    "ModelMismatch",
    "ModelMismatchError",
    "StforecastError",
    "Stopped",
    "StoppedError",
    "TimeLimit",
    "TimeLimitError",
    "environment_error",
    "exit_status",
    "is_bug",
    "is_environmental",
    "os_reason",
    "write_failure",
    "writing",
]


class StforecastError(Exception):
    """Base class: a failure the user can act on (not a bug)."""

    exit_code = 1


class ConfigError(StforecastError, ValueError):
    """Invalid option, recipe field, transform or model name (exit 2)."""

    exit_code = 2


class InputError(StforecastError):
    """Input data missing, unreadable or inconsistent: paths, files, variables, grids, times (3)."""

    exit_code = 3


class MissingVariableError(InputError):
    """A requested variable is in none of the sources (exit 3)."""


class FileSystemError(InputError):
    """The file system refused: a read-only or full disk, no permission, a symbolic link loop,
    a name too long (exit 3, as for input data: the machine's problem, not a bug). Raised by
    `environment_error` and `writing`; the message names the path and the OS's reason."""


class ModelMismatchError(StforecastError):
    """The input does not fit the model card: grid, CRS, units, variable or time step (exit 4)."""

    exit_code = 4


class LockHeldError(StforecastError):
    """Another forecast for the same output is running (exit 5)."""

    exit_code = 5


class CancelledError(StforecastError):
    """The job was cancelled (its `cancel` hook was set: a server's client went away, the
    command line got a signal) before its output was written (exit 130, as for Ctrl-C)."""

    exit_code = 130


class StoppedError(CancelledError):
    """Training stopped when its caller asked (`train(stop=...)`; the CLI: SIGINT or SIGTERM)
    after a whole step, with a checkpoint to resume from (exit 130)."""


class TimeLimitError(StforecastError):
    """The job ran past its wall-clock limit (the forecast server's `job_timeout`) before its
    output was written (exit 124, as `timeout(1)` exits): one client cannot hold the server."""

    exit_code = 124


# Short public names: the same classes (`except ModelMismatch` catches a ModelMismatchError).
ModelMismatch = ModelMismatchError
LockHeld = LockHeldError
MissingVariable = MissingVariableError
Cancelled = CancelledError
Stopped = StoppedError
TimeLimit = TimeLimitError


def exit_status(err: BaseException) -> tuple[int, str]:
    """How a failure is reported, the same way by the CLI and by the forecast server: its exit
    code and one line. `StforecastError` carries its code; any other ValueError is an invalid
    argument (2); an OSError of the machine (`is_environmental`) is 3; Ctrl-C is 130; anything
    else is a bug (1, `internal error: ...`), whose traceback the caller shows or logs (see
    `is_bug`)."""
    if isinstance(err, StforecastError):
        return err.exit_code, str(err)
    if is_environmental(err):
        return FileSystemError.exit_code, str(environment_error(err))
    if isinstance(err, KeyboardInterrupt):
        return 130, "interrupted"
    if isinstance(err, ValueError):
        return 2, str(err)
    return 1, f"internal error: {type(err).__name__}: {err}"


def is_bug(err: BaseException) -> bool:
    """Whether `err` is not a failure the user can act on: its traceback matters."""
    if is_environmental(err):
        return False
    return not isinstance(err, (StforecastError, ValueError, KeyboardInterrupt))


# OSErrors of the storage itself: never the code's fault, whichever library raised them (zarr and
# HDF5 do not always say which file).
_STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EFBIG})
# OSErrors about a path: the environment's when the OS names the path; without a path their
# origin is unknown (a socket, a signal, a library's internals) and they stay bugs.
_PATH_ERRNOS = frozenset(
    {errno.EACCES, errno.EPERM, errno.ELOOP, errno.ENAMETOOLONG, errno.EISDIR, errno.ENOTDIR}
)


def is_environmental(err: BaseException) -> bool:
    """Whether `err` is an OSError of the machine rather than of the code: a full or read-only
    disk, an I/O error, or a path the OS refused (permission, link loop, name too long, a file
    where a directory should be) that the OSError names. A missing file (ENOENT) is not: a wrong
    path the code made up would hide behind it; the write sites report theirs (`writing`)."""
    if not isinstance(err, OSError):
        return False
    return err.errno in _STORAGE_ERRNOS or (err.errno in _PATH_ERRNOS and bool(err.filename))


def os_reason(err: OSError) -> str:
    """The OS's reason in words (`strerror`), e.g. 'Read-only file system'; ELOOP says that it is
    a symbolic link loop, which 'Too many levels of symbolic links' does not make obvious."""
    if err.errno == errno.ELOOP:
        return "a symbolic link loop, or too many levels of symbolic links"
    return err.strerror or " ".join(str(err).split()) or type(err).__name__


def environment_error(
    err: OSError, path: str | os.PathLike[str] | None = None, doing: str = ""
) -> FileSystemError:
    """`err` as one line: `path` (default: the file the OS named), what could not be done, and
    the OS's reason, e.g. `out/fc.nc: cannot write the forecast (No space left on device)`."""
    if path is not None:
        where = _name(path)
    elif err.filename is not None:
        where = _name(err.filename)
        if err.filename2 is not None:  # a rename or a link: both names
            where += f" -> {_name(err.filename2)}"
    else:
        where = ""
    reason = os_reason(err)
    text = f"cannot {doing} ({reason})" if doing else reason
    return FileSystemError(f"{where}: {text}" if where else text)


def _name(path: object) -> str:
    return os.fsdecode(path) if isinstance(path, (str, bytes, os.PathLike)) else str(path)


def write_failure(
    err: BaseException, path: str | os.PathLike[str], doing: str = "write"
) -> InputError:
    """A failed write of `path` as one line. An OSError is the file system's
    (`environment_error`). Libraries may hide the OS's reason (HDF5's `NetCDF: HDF error`, or
    even `Permission denied` from netCDF4 on a full disk), so a file system left with almost no
    space is named too."""
    full = isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT)
    if not full and _full(path):
        reason = os_reason(err) if isinstance(err, OSError) else _text(err)
        return FileSystemError(f"{_name(path)}: cannot {doing} ({reason}; the file system is full)")
    if isinstance(err, OSError):
        return environment_error(err, path, doing)
    return InputError(f"{_name(path)}: cannot {doing} ({_text(err)})")


def _text(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def _full(path: str | os.PathLike[str]) -> bool:
    """Whether the file system `path` is written to has under 1 MiB left (for this user)."""
    try:
        fs = os.statvfs(os.path.dirname(os.path.abspath(path)))
    except OSError:
        return False
    free = fs.f_bfree if os.geteuid() == 0 else fs.f_bavail  # root may use the reserved blocks
    return free * fs.f_frsize < 1 << 20


@contextlib.contextmanager
def writing(path: str | os.PathLike[str], doing: str = "write") -> Iterator[None]:
    """Report an OSError raised in the block as a `FileSystemError` naming `path`, the output
    the user chose: for blocks that only write it, where a library's error may name a temporary
    file or no file at all."""
    try:
        yield
    except OSError as err:
        raise environment_error(err, path, doing) from err
