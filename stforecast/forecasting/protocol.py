"""What both ends of the forecast server's socket share: the wire format and whom to trust.

Protocol, one JSON object per line over a Unix stream socket:
    client -> server   {"version": V, "stforecast": "x.y.z",
                        "job": {"sources": [...], "model": ..., "out": ..., ...}}
    server -> client   {"event": {...}} per stage (what --log-json prints), then
                       {"result": {"exit_code": N, "error": "..." | null, "summary": {...} | null}}
                       or {"refused": "why"} (the client then runs the job itself)

Trust: the socket is created mode 0600; both ends check the peer's user with SO_PEERCRED (same
user or root) before anything else; requests are JSON (paths are data), never pickles.

Standard library only: the client (`forecast --socket`) must stay instant.
"""

from __future__ import annotations

import json
import os
import socket
import struct
from collections.abc import Callable, Iterator
from typing import Any

from stforecast.errors import ConfigError

PROTOCOL = 2  # 2: jobs carry max_input_age and now
MAX_LINE = 1 << 20  # a job names files; a megabyte of JSON is far beyond any real one
JOB_FIELDS = {
    "sources": list,
    "model": str,
    "out": str,
    "format": (str, type(None)),
    "steps": (int, type(None)),
    "hours": (int, float, type(None)),
    "device": str,
    "max_input_age": (int, float, str, type(None)),
    "now": (str, type(None)),
}

Event = Callable[[dict[str, Any]], None]


def peer_uid(sock: socket.socket) -> int | None:
    """The user on the other end of a Unix socket (Linux SO_PEERCRED), or None elsewhere."""
    if not hasattr(socket, "SO_PEERCRED"):
        return None
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


def trusted(sock: socket.socket) -> bool:
    """Whether the peer is this user or root (or the system cannot tell)."""
    uid = peer_uid(sock)
    return uid is None or uid in (os.getuid(), 0)


def send(sock: socket.socket, message: dict[str, Any]) -> None:
    """One message: a JSON object on one line."""
    sock.sendall((json.dumps(message, default=str) + "\n").encode())


def lines(sock: socket.socket) -> Iterator[dict[str, Any]]:
    """JSON objects, one per line, until the peer closes; anything else is a `ValueError` with
    a one-line reason (`parse`)."""
    buffer = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            if line.strip():
                yield parse(line)
        if len(buffer) > MAX_LINE:
            raise ValueError("a message longer than 1 MB")


def parse(line: bytes) -> dict[str, Any]:
    """One message: a JSON object. Not UTF-8, not JSON, nested too deep or not an object is a
    `ValueError` saying which in one line (the server logs it and goes on serving)."""
    try:
        message = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError("not UTF-8 text") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"not JSON ({err.msg} at character {err.pos})") from None
    except RecursionError:
        raise ValueError("JSON nested too deep") from None
    if not isinstance(message, dict):
        raise ValueError(f"a JSON {type(message).__name__}, not an object")
    return message


def check_job(message: Any) -> dict[str, Any]:
    """The job of a request, every field present and of its type (`ConfigError` otherwise)."""
    if not isinstance(message, dict) or not isinstance(message.get("job"), dict):
        raise ConfigError("the request has no job")
    job = message["job"]
    unknown = set(job) - set(JOB_FIELDS)
    if unknown:
        raise ConfigError(f"unknown job fields: {', '.join(sorted(unknown))}")
    for name, kind in JOB_FIELDS.items():
        if name not in job or not isinstance(job[name], kind) or isinstance(job[name], bool):
            raise ConfigError(f"job field {name!r} is missing or of the wrong type")
    if not all(isinstance(s, str) for s in job["sources"]):
        raise ConfigError("job field 'sources' must be a list of paths")
    return job
