"""The client side of the forecast server: `stforecast forecast --socket PATH` hands its job to a
`stforecast serve` over a Unix socket, prints what the server reports and exits with its exit
code.

When no server listens (none started, or it died), or the server refuses the job (another
stforecast version, another user), the client says so and the caller runs the job in-process: a
cron forecast never depends on the server being up.

This module imports only the standard library, so the client stays instant.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

from stforecast import __version__
from stforecast.forecasting.protocol import PROTOCOL, Event, lines, send, trusted

__all__ = ["ServerUnavailable", "job_for", "submit"]


class ServerUnavailable(Exception):  # noqa: N818 (not an error: the job runs in-process)
    """The server cannot take this job; the message says why and the caller runs it itself."""


def submit(socket_path: str | Path, job: dict[str, Any], on_event: Event) -> dict[str, Any]:
    """Run `job` on the server at `socket_path`; `on_event` gets each stage's event as it comes.

    Returns the result `{"exit_code", "error", "summary"}`. Raises `ServerUnavailable` when no
    server listens there, it is not ours, it refuses the job or it stops before answering.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        try:
            sock.connect(os.fspath(socket_path))
        except (FileNotFoundError, ConnectionRefusedError) as err:
            raise ServerUnavailable(f"no server listens on {socket_path}") from err
        except OSError as err:
            raise ServerUnavailable(
                f"cannot reach the server on {socket_path}: {err.strerror}"
            ) from err
        if not trusted(sock):
            raise ServerUnavailable(f"the server on {socket_path} runs as another user; not used")
        try:
            send(sock, {"version": PROTOCOL, "stforecast": __version__, "job": job})
            for message in lines(sock):
                if "event" in message:
                    on_event(message["event"])
                elif "result" in message:
                    return message["result"]
                elif "refused" in message:
                    raise ServerUnavailable(
                        f"the server on {socket_path} refused the job: {message['refused']}"
                    )
        except (OSError, ValueError) as err:
            raise ServerUnavailable(
                f"the connection to the server on {socket_path} failed: {err}"
            ) from err
        raise ServerUnavailable(f"the server on {socket_path} stopped before finishing the job")
    finally:
        sock.close()


def job_for(
    sources: list[str],
    model: str | Path | None,
    out: str | Path,
    *,
    fmt_name: str | None = None,
    steps: int | None = None,
    hours: float | None = None,
    device: str = "auto",
    max_input_age: float | str | None = None,
    now: str | None = None,
) -> dict[str, Any]:
    """A job with every path made absolute here, where the user typed it (the server's working
    directory is not the caller's); globs stay globs and a trailing `/` on `out` is kept.
    `max_input_age` and `now` are those of `forecast_to_file` (`now` as ISO 8601 text)."""
    from stforecast import pretrained

    model = pretrained.resolve(model)  # a shipped model's name (None: the default): its path
    out_text = os.fspath(out)
    out_abs = os.path.abspath(out_text)
    if out_text.endswith(("/", os.sep)) and not out_abs.endswith(os.sep):
        out_abs += os.sep
    return {
        "sources": [os.path.abspath(os.fspath(s)) for s in sources],
        "model": os.path.abspath(os.fspath(model)),
        "out": out_abs,
        "format": fmt_name,
        "steps": steps,
        "hours": hours,
        "device": device,
        "max_input_age": max_input_age,
        "now": now,
    }
