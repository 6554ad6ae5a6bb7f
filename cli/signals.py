"""SIGINT and SIGTERM for the command line: one line, clean-up, exit 130 or 143 (128 + signal).

Why this module: Python's default SIGTERM kills the process on the spot (the output's lock and
temporary file stay behind, nothing is said), and a KeyboardInterrupt raised while a C library
runs a Python callback (pyproj's logging hook, say) is swallowed there, so an interrupted run
could go on and exit 0. `install()` (called by `main()` only: a library's caller owns its
signals) makes each signal both

- *raise* `Interrupted` (a KeyboardInterrupt: clean-up code such as the atomic writer's runs)
  unless a command `deferred()` it (training stops at the end of a step instead; imports of
  torch finish first), and
- *recorded*: the engine's cancel and stop hooks (`cancelled`), the progress callbacks
  (`checked`) and `conclude` at the very end see it even when the exception was swallowed, so a
  run that received a signal never reports success, whatever happened afterwards.

A second signal exits at once (`os._exit`, no clean-up): the way out of a clean-up that hangs.
After a signal, `conclude` ends the process at once, once the command has cleaned up. Without
one, `conclude` decides the exit code, any later signal exits at once with its own code, and the
process ends through `os._exit` after the atexit handlers, so a signal that arrives while the
interpreter tears itself down (when Python code no longer runs) cannot be lost.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "Interrupted",
    "cancelled",
    "check",
    "checked",
    "conclude",
    "deferred",
    "install",
    "outcome",
    "received",
    "sweep_own",
]

HANDLED = (signal.SIGINT, signal.SIGTERM)
WORDS = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}


class Interrupted(KeyboardInterrupt):
    """A signal stopped the command: `signum` says which (SIGINT: 130, SIGTERM: 143)."""

    def __init__(self, signum: int) -> None:
        super().__init__(WORDS.get(signum, f"signal {signum}"))
        self.signum = signum


class _State:
    """This process's signals: module state, since a signal handler is process-wide."""

    installed = False
    received: int | None = None  # the first signal's number
    reported = False  # its line is on stderr
    deferring = 0  # > 0: record only, the command stops at its next safe point
    final: int | None = None  # the exit code, once `conclude` decided it


_state = _State()


def exit_code(signum: int) -> int:
    """The shell's convention: 128 + the signal number (SIGINT 130, SIGTERM 143)."""
    return 128 + signum


def install() -> None:
    """Handle SIGINT and SIGTERM in this process (from the main thread, at the start)."""
    for sig in HANDLED:
        signal.signal(sig, _handler)
    if not _state.installed:
        _state.installed = True
        atexit.register(_last)  # registered early, so it runs after the libraries' handlers
        previous = sys.unraisablehook

        def unraisable(info: Any) -> None:  # a swallowed Interrupted: recorded already
            if not isinstance(info.exc_value, Interrupted):
                previous(info)

        sys.unraisablehook = unraisable


def received() -> int | None:
    """The number of the first signal received, or None."""
    return _state.received


def cancelled() -> bool:
    """The engine's cancel/stop hook: whether a signal was received."""
    return _state.received is not None


def check() -> None:
    """Raise `Interrupted` if a signal was received (its exception may have been swallowed)."""
    if _state.received is not None:
        raise Interrupted(_state.received)


def checked(progress: Callable[..., None] | None = None) -> Callable[..., None]:
    """An engine progress callback that first `check`s, so the engine stops at its next report
    (and cleans up) when the exception of a signal was swallowed; then calls `progress`."""

    def report(*args: Any) -> None:
        check()
        if progress is not None:
            progress(*args)

    return report


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """In the block a first signal is only recorded, for code that an exception raised at any
    bytecode would break: a training step (the loop polls `cancelled` and stops after it, with a
    checkpoint), or importing torch (an exception in a Python callback of its C++ start-up
    aborts the process). A signal recorded by the end of a block that did not stop raises
    `Interrupted` there."""
    _state.deferring += 1
    try:
        yield
    finally:
        _state.deferring -= 1
    check()


def outcome() -> tuple[int, str] | None:
    """(exit code, message) of the signal received, for the caller to print as the one error
    line instead of whatever else failed; None without a signal."""
    if _state.received is None:
        return None
    _state.reported = True
    return exit_code(_state.received), WORDS.get(_state.received, "stopped by a signal")


def conclude(code: int) -> int:
    """The process's exit code: `code`, or the signal's when one was received (its line is
    printed if nobody did). From now on a signal exits at once with its own code.

    After a signal the process ends here, at once: what matters (temporary files, locks) was
    cleaned up while the exception unwound, and the interpreter's exit would wait for library
    threads that the interruption may have left stuck (a lock taken by the interrupted frame
    and never released)."""
    if _state.received is not None:
        code = exit_code(_state.received)
        if not _state.reported:
            _state.reported = True
            _say(f"error: {WORDS.get(_state.received, 'stopped by a signal')}")
        _state.final = code
        _flush()
        os._exit(code)
    _state.final = code
    return code


def sweep_own(directories: list[Path]) -> None:
    """After a signal: remove the temporary and lock files that this process left in
    `directories`. The writers clean up on any exception, but one raised just as such a file
    was made, before its clean-up was armed, leaves it (the next run would sweep it too)."""
    if _state.received is None:
        return
    from stforecast.io.atomic import host

    me = [str(os.getpid()), host()]
    for directory in directories:
        with contextlib.suppress(OSError):
            for tmp in directory.glob(f".*.{me[1]}.{me[0]}.*.tmp"):
                tmp.unlink(missing_ok=True)
            for lock in directory.glob(".*.lock"):  # ours while this process lives: not shared
                if lock.read_text(errors="replace").split()[:2] == me:
                    lock.unlink(missing_ok=True)


def _handler(signum: int, frame: Any) -> None:
    if _state.received is not None or _state.final is not None:
        _exit_now(signum)
    _state.received = signum
    if not _state.deferring:
        raise Interrupted(signum)


def _exit_now(signum: int) -> None:
    """A second signal, or one after the exit code was decided: exit now, without clean-up."""
    first = _state.received if _state.received is not None else signum
    if not _state.reported:
        _state.reported = True
        note = " (a second signal: stopped at once)" if _state.received is not None else ""
        _say(f"error: {WORDS.get(first, 'stopped by a signal')}{note}")
    _flush()
    os._exit(exit_code(first))


def _last() -> None:
    """The last atexit handler: end with the decided code now, so that a signal during the
    interpreter's teardown (no Python code runs there to see it) cannot turn into exit 0."""
    if _state.final is not None:
        _flush()
        os._exit(_state.final)


def _say(line: str) -> None:
    with contextlib.suppress(Exception):
        sys.stderr.write(line + "\n")


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
