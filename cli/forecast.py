"""`stforecast forecast`: the newest frames + a trained run -> a forecast file, for cron.

Exit codes (docs/operations.md, shown by `--help`): 0 written, 1 internal error, 2 usage, 3 input
data, 4 input does not fit the model, 5 another forecast holds the output's lock, 124 a server
job past its timeout, 130/143 SIGINT/SIGTERM. Failures print one line on stderr (`--debug` adds
the traceback); `--log-json` prints one JSON object per stage on stdout, each stamped with time,
host and pid (`cli.logjson`). `--model` is a run directory, a shipped model's name (`radar`,
the default when none is named) or an exported `.onnx` file, which runs on onnxruntime without
importing PyTorch.
With `--socket` (or $STFORECAST_SOCKET) the job runs on a `stforecast serve` server, or here when
none listens; a server job past the server's `--job-timeout` exits 124. A newest input frame a
time step old or more (relative to `--reference-time`, else now) adds a `warning:` line to a
success; older than `--max-age` it is exit 3.
"""

from __future__ import annotations

import gc
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from stforecast.cli.errors import fail
from stforecast.cli.logjson import emitter
from stforecast.cli.signals import cancelled, check, deferred, outcome, sweep_own
from stforecast.devices import DEVICES

Format = Literal["netcdf", "geotiff", "cog"]  # stforecast.io.write.FORMATS, without its imports
Device = Literal[DEVICES]  # choices: completed by the shell, a wrong one is exit 2


def _process_age() -> float | None:
    """Seconds since this process started (Linux), so the log can report start-up time."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(uptime - start_ticks / os.sysconf("SC_CLK_TCK"), 0.0)
    except (OSError, ValueError, IndexError):
        return None


def forecast(
    sources: Annotated[
        list[str], typer.Argument(help="NetCDF/GeoTIFF files, directories or globs.")
    ],
    hours: Annotated[
        float | None,
        typer.Option(help="Lead time in hours (converted with the model's time step)."),
    ] = None,
    steps: Annotated[int | None, typer.Option(help="Lead times, instead of --hours.")] = None,
    model: Annotated[
        Path | None,
        typer.Option(
            "--model",
            "-m",
            envvar="STFORECAST_MODEL",
            help="Run directory (a trained model), a shipped model's name (default: `radar`, "
            "for precipitation), or the file `stforecast export --format onnx` writes (runs "
            "on onnxruntime, without PyTorch).",
        ),
    ] = None,
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Output file, or a directory for a name made from the forecast.",
            path_type=str,  # as typed: a trailing `/` says "a directory", which Path would drop
        ),
    ] = Path("."),
    format_: Annotated[
        Format | None,
        typer.Option(
            "--format",
            help="netcdf (CF-1.10), geotiff or cog (a Cloud-Optimized GeoTIFF); default: the "
            "recipe's.",
        ),
    ] = None,
    device: Annotated[
        Device,
        typer.Option(
            help="auto (CUDA, then MPS, then the CPU), cpu, cuda or mps (an ONNX model: cpu or "
            "cuda).",
        ),
    ] = "auto",
    log_json: Annotated[
        bool, typer.Option("--log-json", help="One JSON object per stage on stdout.")
    ] = False,
    quiet: Annotated[
        bool, typer.Option(help="Print nothing on success (no stale-input warning either).")
    ] = False,
    debug: Annotated[bool, typer.Option(help="Show the traceback of a failure.")] = False,
    socket_path: Annotated[
        Path | None,
        typer.Option(
            "--socket",
            envvar="STFORECAST_SOCKET",
            show_envvar=True,
            help="Run the job on the `stforecast serve` listening here (libraries and model "
            "already loaded); in-process, with a warning, when none does.",
        ),
    ] = None,
    max_age: Annotated[
        str | None,
        typer.Option(
            "--max-age",
            metavar="DURATION",
            help="Fail (exit 3, nothing written) when the newest input frame is older than this "
            "(ISO 8601 such as PT30M, or seconds), relative to --reference-time or now; "
            "replaces the recipe's forecast.max_input_age.",
        ),
    ] = None,
    recursive: Annotated[
        bool, typer.Option(help="Also read subdirectories (archives in YYYY/MM/DD folders).")
    ] = False,
    reference_time: Annotated[
        str | None,
        typer.Option(
            "--reference-time",
            metavar="TIME",
            help="The time this forecast is for (ISO 8601, UTC unless a zone is given, e.g. "
            "2026-12-01T12:00Z; default: now): frames after it are not used and the newest "
            "frame's age is measured from it.",
        ),
    ] = None,
) -> None:
    """Forecast from the newest frames of SOURCE with a trained run (default: the shipped radar
    nowcaster, for precipitation); atomic, locked, for cron.

    Example: stforecast forecast /data/radar/ --hours 4 --out nowcasts/

    Exit codes (docs/operations.md):

      0    the forecast is written;
      1    internal error (a bug; --debug shows the traceback);
      2    usage: a bad option, recipe or model file;
      3    input data: missing, unreadable, too few or too old frames;
      4    the input does not fit the model (grid, units, variable, time step);
      5    another forecast holds the output's lock;
      124  the server job ran past its time limit (--socket);
      130  interrupted (SIGINT), 143 terminated (SIGTERM): nothing written.
    """
    started = time.perf_counter()
    age = _process_age()
    # A short job: the cyclic collector would only walk the millions of objects that importing
    # torch and xarray creates (about 0.3 s here); refcounting still frees every tensor.
    gc.disable()

    emit = emitter(log_json, "forecast")
    if recursive:  # directories as `DIR/**`: the form that also travels to a server
        from stforecast.io.sources import recursive_patterns

        sources = recursive_patterns(sources)
    if age is not None:
        emit({"stage": "start-up", "duration_s": age})
    try:
        t_import = time.perf_counter()
        freshness = {"max_input_age": max_age, "now": reference_time}
        summary = None if socket_path is None else _on_server(
            socket_path, sources, model, out, format_, steps, hours, device, emit,
            quiet or log_json, debug, freshness)  # fmt: skip
        if summary is None:
            with deferred():  # a signal acts after the import (torch's C++ init aborts on one)
                from stforecast.forecasting.job import forecast_to_file
            emit({"stage": "import", "duration_s": time.perf_counter() - t_import})
            summary = forecast_to_file(sources, model, out, fmt_name=format_, steps=steps,
                                       hours=hours, device=device, log=emit, **freshness,
                                       cancel=cancelled)  # fmt: skip
        check()  # a signal whose exception was swallowed: never a success
    except BaseException as err:  # every failure: one line and its exit code
        sweep_own([Path(out) if _is_dir(out) else Path(out).parent])  # after a signal
        raise _failure(emit, err, debug) from None
    summary["timings_s"]["start_up"] = age
    summary["timings_s"]["import"] = time.perf_counter() - t_import - summary["timings_s"]["total"]
    summary["timings_s"]["process"] = (age or 0.0) + time.perf_counter() - started
    if not quiet:  # the forecast is written, from input older than one time step
        for warning in summary.get("warnings") or []:
            sys.stderr.write(f"warning: {warning}\n")
    if log_json:
        emit(summary)
    elif not quiet:
        _report(summary)


def _report(summary: dict[str, Any]) -> None:
    """The human log of a success: one line on stderr, the output file on stdout."""
    t = summary["timings_s"]
    where = " on the server" if summary.get("server") else ""
    sys.stderr.write(
        f"{summary['steps']} leads from {summary['reference_time']}{where} in "
        f"{t['process']:.2f} s (model {t['model']:.2f} s), peak {summary['peak_mb']:.0f} MB\n"
    )
    sys.stdout.write(summary["output_file"] + "\n")


def _on_server(socket_path, sources, model, out, format_, steps, hours, device, emit, quiet,
               debug, freshness) -> dict[str, Any] | None:  # fmt: skip
    """The job on the server: its summary; None when it must run here (the reason is logged)."""
    from stforecast.errors import TimeLimitError
    from stforecast.forecasting.client import ServerUnavailable, job_for, submit

    job = job_for(sources, model, out, fmt_name=format_, steps=steps, hours=hours, device=device,
                  **freshness)  # fmt: skip
    try:
        result = submit(socket_path, job, emit)
    except ServerUnavailable as why:
        emit({"stage": "server", "fallback": str(why)})
        if not quiet:
            sys.stderr.write(f"warning: {why}; forecasting in-process\n")
        return None
    if result["exit_code"] == TimeLimitError.exit_code:
        result["error"] += " (`stforecast serve --job-timeout` sets the limit)"
    if result["exit_code"] != 0:
        raise _error(emit, result["error"], result["exit_code"], debug, None)
    return {**result["summary"], "server": str(socket_path)}


def _is_dir(out: str | Path) -> bool:
    return os.fspath(out).endswith(("/", "\\")) or Path(out).is_dir()


def _failure(emit, err: BaseException, debug: bool) -> typer.Exit:
    from stforecast.errors import exit_status, is_bug

    if isinstance(err, (typer.Exit, SystemExit)):
        raise err
    code, message = exit_status(err)
    if is_bug(err):
        return _error(
            emit, f"{message} (a bug; rerun with --debug)", code, True if debug else None, err
        )
    return _error(emit, message, code, debug, err)


def _error(emit, message: str, code: int, debug: bool | None, err: BaseException | None):
    code, message = outcome() or (code, message)  # after SIGINT/SIGTERM: 130/143, whatever failed
    event: dict[str, Any] = {"stage": "error", "exit_code": code, "error": message}
    if err is not None and (debug or code == 1):
        event["traceback"] = "".join(traceback.format_exception(err))
    emit(event)
    if debug and err is not None:
        traceback.print_exception(err, file=sys.stderr)
    return fail(message, code)
