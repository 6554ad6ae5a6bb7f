"""`stforecast serve`: a resident forecast server, so cron forecasts skip the cold start."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from stforecast.cli.errors import engine_errors, fail
from stforecast.forecasting.service import JOB_TIMEOUT  # standard library only: --help stays fast

SOCKET_ENV = "STFORECAST_SOCKET"


def serve(
    socket_path: Annotated[
        Path | None,
        typer.Option(
            "--socket",
            envvar=SOCKET_ENV,
            show_envvar=True,
            help="Unix socket to listen on (created mode 0600; its directory must exist).",
        ),
    ] = None,
    model: Annotated[
        list[Path] | None,
        typer.Option(
            "--model",
            "-m",
            help="Run directory to load now (repeatable); others load at their first job.",
        ),
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    job_timeout: Annotated[
        float,
        typer.Option(
            "--job-timeout",
            min=0,
            metavar="SECONDS",
            help="Stop a job still running after this long, writing nothing (its client exits "
            "124), so one client cannot hold the server; 0: no limit.",
        ),
    ] = JOB_TIMEOUT,
) -> None:
    """Keep the libraries and models loaded; run the jobs of `stforecast forecast --socket`.

    Jobs run one at a time exactly as in-process forecasts (checks, lock, atomic write, codes);
    one that runs past --job-timeout is stopped between two lead times.

    A model whose files change on disk is reloaded. One JSON line per job goes to stderr.

    SIGTERM or Ctrl-C stops after the job in progress; exit 5 if the socket is in use.

    Example: stforecast serve --socket /run/stforecast/forecast.sock -m runs/radar
    """
    if socket_path is None:
        raise fail(f"no socket: pass --socket PATH or set {SOCKET_ENV}")

    def log(event: dict[str, Any]) -> None:
        sys.stderr.write(json.dumps(event, default=str) + "\n")
        sys.stderr.flush()

    with engine_errors():
        from stforecast.forecasting.service import serve as run_server

        run_server(socket_path, models=list(model or []), device=device, log=log,
                   job_timeout=job_timeout or None)  # fmt: skip
