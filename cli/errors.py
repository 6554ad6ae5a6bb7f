"""How the command line reports failures: one line on stderr and a documented exit code."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

import typer

# Exit codes (docs/prepare.md): 2 for usage and configuration errors, as Typer/Click use it;
# the engine's errors carry their own (`StforecastError.exit_code`: 2 configuration, 3 input data).
EXIT_USAGE = 2


def fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    """Print `error: message` on stderr and return the Exit to raise."""
    sys.stderr.write(f"error: {message}\n")
    return typer.Exit(code)


@contextmanager
def engine_errors() -> Iterator[None]:
    """Report the engine's errors as one line and their exit code, never a traceback
    (`stforecast.errors.exit_status`); a bug goes on with its traceback."""
    from stforecast.errors import exit_status, is_bug

    try:
        yield
    except BaseException as err:
        if is_bug(err):
            raise
        code, line = exit_status(err)
        raise fail(line, code) from None
