"""Errors the engine raises for bad input, each carrying the exit code the CLI reports, and the
one mapping of any failure to (exit code, one line).

The CLI prints `error: <message>` on one line and exits with `exit_code`; Python users catch the
classes. Messages name the file, field or variable at fault.
"""

from __future__ import annotations


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


class ModelMismatchError(StforecastError):
    """The input does not fit the model card: grid, CRS, units, variable or time step (exit 4)."""

    exit_code = 4


class LockHeldError(StforecastError):
    """Another forecast for the same output is running (exit 5)."""

    exit_code = 5


class CancelledError(StforecastError):
    """The job was cancelled (its client went away) before its output was written (exit 130,
    as for Ctrl-C)."""

    exit_code = 130


def exit_status(err: BaseException) -> tuple[int, str]:
    """How a failure is reported, the same way by the CLI and by the forecast server: its exit
    code and one line. `StforecastError` carries its code; any other ValueError is an invalid
    argument (2); Ctrl-C is 130; anything else is a bug (1, `internal error: ...`), whose
    traceback the caller shows or logs (see `is_bug`)."""
    if isinstance(err, StforecastError):
        return err.exit_code, str(err)
    if isinstance(err, KeyboardInterrupt):
        return 130, "interrupted"
    if isinstance(err, ValueError):
        return 2, str(err)
    return 1, f"internal error: {type(err).__name__}: {err}"


def is_bug(err: BaseException) -> bool:
    """Whether `err` is not a failure the user can act on: its traceback matters."""
    return not isinstance(err, (StforecastError, ValueError, KeyboardInterrupt))
