"""Time steps: durations as recipes write them, and archives brought to a coarser model step.

An archive whose step divides the model's is resampled in time, on the source units (before any
conversion): an **accumulation** (a depth per step: `mm`, `kg m-2`, ...) is **summed** over the
source frames inside each model step, ending at the model frame's time (`mm per 5 min` becomes
`mm per 10 min`); anything else (rates, reflectivity, temperature: instantaneous values) is
**subsampled**, the model frame being the source frame at its time. Model frames sit every
model step counted back from the newest source frame, so a forecast starts from the newest data;
a model frame whose source frames are not all there is left out (a gap).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import numpy as np
import xarray as xr

from stforecast.data import units
from stforecast.errors import ConfigError, InputError

__all__ = ["check_divides", "resampling", "step_seconds", "to_time_step"]

_UNITS = {"s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600, "hour": 3600, "d": 86400}
_TEXT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|min|m|h|hour|d)?\s*$", re.IGNORECASE)


def step_seconds(value: Any) -> Any:
    """A recipe's time step as whole seconds: a number, `"600s"`, `"10min"`, `"1h"` or ISO 8601
    (`"PT10M"`); anything else is returned unchanged for the schema to refuse."""
    if isinstance(value, dt.timedelta):
        return _whole(value.total_seconds(), value)
    if not isinstance(value, str):
        return value
    match = _TEXT.match(value)
    if match:
        return _whole(float(match[1]) * _UNITS[(match[2] or "s").lower()], value)
    from pydantic import TypeAdapter, ValidationError

    try:
        seconds = TypeAdapter(dt.timedelta).validate_python(value.strip()).total_seconds()
    except ValidationError:
        raise ValueError(f"{value!r} is not a duration such as 600, '10min' or 'PT10M'") from None
    return _whole(seconds, value)


def _whole(seconds: float, given: Any) -> int:
    if seconds != int(seconds):
        raise ValueError(f"time step {given!r} is not a whole number of seconds")
    return int(seconds)


def resampling(source_units: str) -> str:
    """How frames in `source_units` are brought to a coarser step: `sum` or `subsample`."""
    return "sum" if units.quantity(source_units) == "accumulation" else "subsample"


def to_time_step(da: xr.DataArray, step: int, source_units: str | None = None) -> xr.DataArray:
    """`da` (lazy, `time` first) at the model step `step` seconds (see the module docstring).
    A source step equal to `step` returns `da`; one that does not divide it, or a coarser one,
    is an `InputError`. The result's `time_step` is `step`; `time_resampling` says what was
    done and `source_time_step` the archive's own step."""
    source = da.attrs.get("time_step")
    if not source or int(source) == step or da.sizes["time"] < 2:
        return da
    source = int(source)
    if source > step or step % source:
        raise InputError(
            f"the archive's time step ({source} s) is not a divisor of the model's ({step} s)"
        )
    k = step // source
    how = resampling(source_units if source_units is not None else da.attrs.get("units", ""))
    da = da.sortby("time")
    times = da["time"].values
    wanted = times[-1] - np.arange(0, (times[-1] - times[0]) // np.timedelta64(step, "s") + 1)[
        ::-1
    ] * np.timedelta64(step, "s")
    position = {t: i for i, t in enumerate(times)}
    parts = [[position.get(t - j * np.timedelta64(source, "s")) for j in range(k)] for t in wanted]
    if how == "subsample":
        parts = [p[:1] for p in parts]
    keep = [i for i, p in enumerate(parts) if all(q is not None for q in p)]
    if not keep:
        raise InputError(f"no whole {step} s step in the archive's {source} s frames")
    index = np.array([parts[i] for i in keep], dtype=np.int64)  # (n, k or 1), oldest first
    out = da.isel(time=index[:, 0])
    if how == "sum":
        total = out.variable.data
        for j in range(1, index.shape[1]):
            total = total + da.isel(time=index[:, j]).variable.data
        out = out.copy(data=total)
    out = out.assign_coords(time=wanted[keep])
    if "source" in da.coords and how == "sum":
        names = da["source"].values
        joined = [";".join(str(names[q]) for q in p) for p in index]
        out = out.assign_coords(source=("time", joined))
    out.attrs = {**da.attrs, "time_step": step, "source_time_step": source, "time_resampling": how}
    return out


def check_divides(step: int, archive_steps: dict[str, int]) -> None:
    """Every archive's step must divide the model's (`ConfigError` naming the first that
    does not)."""
    for name, source in archive_steps.items():
        if source > step or step % source:
            raise ConfigError(
                f"archive {name}: its time step ({source} s) does not divide data.time_step "
                f"({step} s)"
            )
