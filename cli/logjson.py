"""`--log-json`: one JSON object per line on stdout, each stamped with when (UTC, ISO 8601 with
milliseconds), where (host) and which process (pid), so that lines from several cron jobs
collected into one log can be ordered and told apart."""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import sys
from collections.abc import Callable
from typing import Any

Emit = Callable[[dict[str, Any]], None]


def stamp(event: dict[str, Any], command: str) -> dict[str, Any]:
    """`event` with `time`, `host`, `pid` and `command` first; these four are never replaced by
    an event's own keys of the same name."""
    now = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    head = {"time": now, "host": socket.gethostname(), "pid": os.getpid(), "command": command}
    return head | {k: v for k, v in event.items() if k not in head}


_current: list[Emit] = []  # the running command's emitter, for `failed`


def emitter(enabled: bool, command: str) -> Emit:
    """Where a command's events go: stamped JSON lines on stdout when `enabled`, else nowhere.
    An enabled emitter is also the one `failed` reports a command's error line through."""

    def emit(event: dict[str, Any]) -> None:
        if enabled:
            sys.stdout.write(json.dumps(stamp(event, command), default=str) + "\n")
            sys.stdout.flush()

    if enabled:
        _current[:] = [emit]
    return emit


def failed(message: str, code: int) -> None:
    """The error event of a command logging JSON (its one `error:` line goes to stderr too)."""
    if _current:
        _current[0]({"stage": "error", "exit_code": code, "error": message})


def progress(emit: Emit, every_s: float = 1.0) -> Callable[[str, int, int], None]:
    """A `progress(stage, done, total)` callback for the engine that logs a stage's first and
    last event and at most one per `every_s` seconds between them (a store of 10,000 frames
    would otherwise log 10,000 lines)."""
    import time

    last: dict[str, float] = {}

    def report(stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        if stage in last and done < total and now - last[stage] < every_s:
            return
        last[stage] = now
        emit({"stage": stage, "done": done, "total": total})

    return report
