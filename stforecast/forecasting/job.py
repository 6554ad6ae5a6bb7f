"""The `stforecast forecast` job: read, check, run, and write one forecast file, for cron.

The output is checked before any work: a forecast replaces nothing but an earlier forecast
(`stforecast.io.target`). The file is written under the output's lock (a second run for the same
output exits 5) through a temporary name and a rename, so readers never see a partial file and a
failed or killed run leaves the previous one in place. The forecast server runs this same
function for its jobs.
"""

from __future__ import annotations

import json
import os
import resource
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from pydantic import ValidationError

from stforecast.config import ForecastConfig
from stforecast.errors import (
    CancelledError,
    ConfigError,
    InputError,
    MissingVariableError,
    ModelMismatchError,
)
from stforecast.forecasting.inputs import as_time
from stforecast.forecasting.plan import Plan, plan
from stforecast.forecasting.regrid import native_grid, on_input_grid
from stforecast.io.times import iso_duration
from stforecast.rundir.load import Run, load_run

Log = Callable[[dict[str, Any]], None]
Cancel = threading.Event | Callable[[], bool]  # set (or returning True): stop, write nothing

__all__ = ["forecast_to_file", "output_name"]

# The suffixes an output file may have for each format; none means the format given.
_SUFFIXES = {"netcdf": (".nc", ""), "geotiff": (".tif", ".tiff", ""), "cog": (".tif", ".tiff", "")}


def output_name(template: xr.Dataset, fmt_name: str) -> str:
    """Deterministic: variable, model, reference time and horizon, e.g.
    `rainrate_cms_lstm_20201031T1200Z_PT4H.nc`. Same inputs and model, same name."""
    from stforecast.io.write import SUFFIX

    var = next(n for n in template.data_vars if n != "crs")
    model = json.loads(template.attrs["provenance"])["model"]["architecture"]
    when = template["forecast_reference_time"].values.astype("datetime64[s]").item()
    ref = when.strftime("%Y%m%dT%H%M%SZ" if when.second else "%Y%m%dT%H%MZ")
    horizon = iso_duration(int(template["forecast_period"].values[-1] / np.timedelta64(1, "s")))
    return f"{var}_{model}_{ref}_{horizon}{SUFFIX[fmt_name]}"


def forecast_to_file(
    sources: list[str],
    model: str | Path | Run | None,
    out: str | Path,
    *,
    fmt_name: str | None = None,
    steps: int | None = None,
    hours: float | None = None,
    device: str = "auto",
    log: Log | None = None,
    cancel: Cancel | None = None,
    max_input_age: float | str | None = None,
    now: Any = None,
) -> dict[str, Any]:
    """Read, check, run, and write atomically under a lock.

    `out` is a file, or a directory (existing, or ending in `/`) that gets `output_name`. What
    is at the output file may be replaced only if it is a stforecast forecast (a symbolic link
    to one is followed): anything else is a `ConfigError` before any work. `cancel` (a
    `threading.Event` that another thread sets, as the forecast server does when its client
    hangs up, or a callable returning True, as the command line's signal flag) is checked after
    reading, between lead times and once more just before the file is committed: once set, the
    job stops with `CancelledError` and nothing is written. `max_input_age` (seconds, ISO 8601)
    replaces the run's; `now` is the expected reference time (`plan.plan`). `model` None is
    the shipped default (`stforecast.pretrained`), which forecasts precipitation only.
    Returns a summary (output path, timings per stage, peak memory, inputs).
    """
    from stforecast.io.lock import output_lock
    from stforecast.io.target import replaceable
    from stforecast.io.write import FORMATS, write_forecast

    emit = log or (lambda event: None)
    t0 = time.perf_counter()
    directory = os.fspath(out).endswith(("/", "\\")) or Path(out).is_dir()
    out = Path(out)
    if not directory:
        replaceable(out)  # before any work: never load a model to then refuse the output
    run = model if isinstance(model, Run) else load_run(model, device=device)
    fmt_name = fmt_name or run.options.format
    if fmt_name not in FORMATS:
        raise ConfigError(f"the format must be one of {', '.join(FORMATS)}, got {fmt_name!r}")
    emit({"stage": "load model", "duration_s": time.perf_counter() - t0, "peak_mb": _peak_mb()})

    t1 = time.perf_counter()
    frames = _open(sources, run)
    t_open = time.perf_counter() - t1
    limit = _age_limit(run, max_input_age)
    the_plan = plan(frames, run, steps=steps, hours=hours, now=now, max_input_age=limit)
    reference = None if now is None else as_time(now)
    the_plan = on_input_grid(the_plan, native_grid(frames, run, reference))  # data.spacing
    emit({"stage": "read", "duration_s": time.perf_counter() - t1, **_read(the_plan)})
    path = _output_file(out, directory, the_plan.template, fmt_name)
    _check(cancel)

    t2 = time.perf_counter()
    leads = the_plan.leads if cancel is None else _unless(cancel, the_plan.leads)
    with output_lock(path):
        path = write_forecast(path, the_plan.template, leads, fmt_name)
    timings = {
        "load_model": t1 - t0,
        "open": t_open,
        "read": the_plan.timings.get("read", 0.0),
        "prepare": the_plan.timings.get("prepare", 0.0),
        "model": the_plan.timings.get("model", 0.0),
    }
    timings["write"] = max(time.perf_counter() - t2 - timings["model"], 0.0)
    timings["total"] = time.perf_counter() - t0
    return {
        "stage": "written",
        "output_file": str(path),
        "format": fmt_name,
        "steps": the_plan.info["steps"],
        "reference_time": the_plan.info["reference_time"],
        "tiles": the_plan.info["tiles"],
        "device": the_plan.info["device"],
        "timings_s": timings,
        "peak_mb": _peak_mb(),
        "input_files": the_plan.inputs,
        **{k: the_plan.info[k] for k in _AGE},
    }


_AGE = ("input_age_seconds", "stale", "warnings")  # how old the newest input frame is


def _read(the_plan: Plan) -> dict[str, Any]:
    """What the `read` stage logs: peak memory, inputs, reference time, the newest input's age."""
    return {
        "peak_mb": _peak_mb(),
        "input_files": the_plan.inputs,
        "reference_time": the_plan.info["reference_time"],
        **{k: the_plan.info[k] for k in _AGE},
    }


def _age_limit(run: Run, max_input_age: float | str | None) -> float | None:
    """The oldest the newest input frame may be, in seconds: `max_input_age` (validated as in a
    recipe) when given, else the run's `[forecast] max_input_age`."""
    if max_input_age is None:
        return run.options.max_input_age
    try:
        return ForecastConfig(max_input_age=max_input_age).max_input_age
    except ValidationError as err:
        message = err.errors()[0]["msg"].removeprefix("Value error, ")
        raise ConfigError(f"max_input_age: {message}") from None


def _open(sources: list[str], run: Run) -> xr.DataArray:
    """The sources' frames of the model's variable (a missing one does not fit the model)."""
    from stforecast.io import open_frames

    variable = run.contract.selection
    try:
        return open_frames(
            sources, variable=variable, time_pattern=run.contract.processing.time_pattern
        )
    except MissingVariableError as err:
        raise ModelMismatchError(f"{err} (the model forecasts {variable!r})") from None


def _output_file(out: Path, directory: bool, template: xr.Dataset, fmt_name: str) -> Path:
    """The file to write: `out`, or the forecast's name in directory `out`; its suffix must fit
    the format, its directory must exist, and what is there must be a forecast."""
    from stforecast.io.target import replaceable
    from stforecast.io.write import SUFFIX

    variables = [n for n in template.data_vars if n != "crs"]
    if fmt_name in ("geotiff", "cog") and len(variables) > 1:
        raise ConfigError(
            f"a GeoTIFF holds one variable; this model forecasts {len(variables)} "
            f"({', '.join(variables)}): write NetCDF"
        )
    if directory:
        out = out / output_name(template, fmt_name)
    elif out.suffix.lower() not in _SUFFIXES[fmt_name]:
        raise ConfigError(f"{out}: a {fmt_name} file should end in {SUFFIX[fmt_name]}")
    if not out.parent.is_dir():
        raise InputError(f"{out}: the directory {out.parent} does not exist")
    return replaceable(out)


def _unless(cancel: Cancel, leads: Iterator[Any]) -> Iterator[Any]:
    """`leads`, checking `cancel` after each one and after the last: the writer asks for one
    more lead before it closes and commits the file, so a late cancel still writes nothing."""
    for lead in leads:
        _check(cancel)
        yield lead
    _check(cancel)


def _check(cancel: Cancel | None) -> None:
    if cancel is not None and (cancel.is_set() if hasattr(cancel, "is_set") else cancel()):
        raise CancelledError("the job was cancelled; nothing was written")


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
