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
    """Print `error: message` on stderr and return the Exit to raise. After SIGINT/SIGTERM the
    signal is the failure that counts (whatever it caused): its line and 130/143 instead."""
    from stforecast.cli.signals import outcome

    code, message = outcome() or (code, message)
    return _exit(message, code)


def _exit(message: str, code: int) -> typer.Exit:
    from stforecast.cli.logjson import failed

    sys.stderr.write(f"error: {message}\n")
    failed(message, code)
    return typer.Exit(code)


@contextmanager
def engine_errors() -> Iterator[None]:
    """Report the engine's errors as one line and their exit code, never a traceback
    (`stforecast.errors.exit_status`); a bug goes on with its traceback. A signal received in
    the block is the failure, even when its exception was swallowed and the block went on: a
    signalled command never ends as a success."""
    from stforecast.cli.signals import check, outcome, received
    from stforecast.errors import StoppedError, exit_status, is_bug

    try:
        yield
        check()
    except BaseException as err:
        if isinstance(err, (typer.Exit, SystemExit)) or (is_bug(err) and received() is None):
            raise  # reported already, or a bug (its traceback)
        code, line = exit_status(err)
        signalled = outcome()
        if signalled is not None:  # training says what it kept and how to go on
            code, word = signalled
            line = f"{word}: {err}" if isinstance(err, StoppedError) else word
        raise _exit(line, code) from None
