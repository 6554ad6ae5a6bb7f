"""The last observation beside a forecast: the input frame at the forecast's reference time,
read again from the files it came from (the forecast's `provenance` names them) or from files
the caller gives, on the forecast's grid and in its units.

    frame = last_observation(ds, ds["precipitation"])              # from the provenance
    frame = last_observation(ds, da, "../shared/data/radar-bom-66-20201031")

An observation that is asked for but cannot be shown (no frame at or before the reference time,
another grid, units that do not convert) is an `InputError`; the provenance's files that are no
longer there give no observation, silently (`stforecast plot` says so).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from stforecast.errors import InputError

__all__ = ["AUTO", "Observation", "last_observation", "provenance_inputs"]

AUTO = "auto"


@dataclass(frozen=True)
class Observation:
    """One observed frame `(y, x)` in the forecast's units, and its valid time."""

    values: np.ndarray
    time: np.datetime64


def provenance_inputs(ds: Any, at: np.datetime64 | None) -> list[str]:
    """The input files of a forecast (its `provenance`) that hold the frame valid at `at`
    (all of them when `at` is None or no file says its valid times), where they still exist;
    relative paths are taken from the forecast file's directory (`ds.encoding["source"]`),
    then from the current one."""
    attrs = getattr(ds, "attrs", {}) or {}
    try:
        inputs = json.loads(attrs.get("provenance") or "{}").get("inputs") or []
    except (ValueError, AttributeError):
        return []
    when = None if at is None else str(np.datetime_as_string(at, unit="s")) + "Z"
    paths = [str(i.get("path")) for i in inputs if isinstance(i, dict) and i.get("path")]
    matching = [
        str(i["path"])
        for i in inputs
        if isinstance(i, dict) and i.get("path") and when in (i.get("valid_times") or [])
    ]
    chosen = matching or paths
    # The writers make these paths relative to the forecast file: resolve them against it
    # (`open_forecast` and xarray keep the file's path in `encoding["source"]`).
    source = (getattr(ds, "encoding", {}) or {}).get("source")
    here = Path(source).parent if source else None
    found = []
    for p in dict.fromkeys(chosen):
        candidates = [Path(p)] if Path(p).is_absolute() or here is None else [here / p, Path(p)]
        found += next(([str(c)] for c in candidates if c.is_file()), [])
    return found


def _pick(frames: xr.DataArray, at: np.datetime64 | None) -> xr.DataArray:
    times = frames["time"].values
    if at is None:
        return frames.isel(time=-1)
    before = np.flatnonzero(times <= at)
    if before.size == 0:
        raise InputError(
            f"no observed frame at or before the forecast's reference time "
            f"{np.datetime_as_string(at, unit='m')}Z"
        )
    return frames.isel(time=int(before[-1]))


def _on_grid(frame: xr.DataArray, like: xr.DataArray) -> np.ndarray:
    """`frame`'s values on `like`'s grid (the same cells, rows in either order)."""
    ydim, xdim = like.dims[-2], like.dims[-1]
    values = np.asarray(frame.values, dtype=np.float32)
    if values.shape == like.shape[-2:] and (ydim not in like.coords or "y" not in frame.coords):
        return values
    if ydim in like.coords and xdim in like.coords and "y" in frame.coords:
        fy, fx = np.asarray(frame["y"].values, float), np.asarray(frame["x"].values, float)
        ly, lx = np.asarray(like[ydim].values, float), np.asarray(like[xdim].values, float)
        tol_x = abs(float(lx[1] - lx[0])) / 2 if lx.size > 1 else 0.5
        tol_y = abs(float(ly[1] - ly[0])) / 2 if ly.size > 1 else 0.5
        try:
            cols = _indices(fx, lx, tol_x)
            rows = _indices(fy, ly, tol_y)
        except KeyError:
            pass
        else:
            return values[np.ix_(rows, cols)]
    raise InputError(
        f"the observation's grid ({values.shape[0]} x {values.shape[1]}) is not the forecast's "
        f"({like.shape[-2]} x {like.shape[-1]}): give the files the forecast was made from"
    )


def _indices(source: np.ndarray, target: np.ndarray, tolerance: float) -> np.ndarray:
    """For each target coordinate, the index of the source cell centred within `tolerance`."""
    order = np.argsort(source)
    pos = np.clip(np.searchsorted(source[order], target), 1, source.size - 1)
    below, above = order[pos - 1], order[pos]
    nearest = np.where(
        np.abs(source[below] - target) <= np.abs(source[above] - target), below, above
    )
    if not np.all(np.abs(source[nearest] - target) <= tolerance + 1e-9 * (1 + np.abs(target))):
        raise KeyError("grid")
    return nearest


def _step_seconds(frames: xr.DataArray, like: xr.DataArray) -> float | None:
    for times in (frames["time"].values, like[like.dims[0]].values if like.ndim == 3 else []):
        times = np.asarray(times)
        if times.size >= 2 and np.issubdtype(times.dtype, np.datetime64):
            return float((times[1] - times[0]) / np.timedelta64(1, "s"))
    step = frames.attrs.get("time_step")
    return float(step) if isinstance(step, int | float) else None


def last_observation(
    ds: Any,
    da: xr.DataArray,
    source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = AUTO,
    *,
    at: np.datetime64 | None = None,
) -> Observation | None:
    """The observed frame at (or newest before) the reference time `at`, on `da`'s grid and in
    its units. `source`: `"auto"` (the forecast's input files, from its provenance; None when
    they are gone), files/directories/globs, or None (no observation)."""
    from stforecast.data import units as units_mod
    from stforecast.io import open_frames

    if source is None:
        return None
    auto = isinstance(source, str) and source == AUTO
    sources = provenance_inputs(ds, at) if auto else source
    if not sources:
        return None
    name = str(da.name) if da.name is not None else None
    try:
        frames = open_frames(sources, variable=name)
    except InputError:
        if not auto or name is None:
            raise
        frames = open_frames(sources)
    frame = _pick(frames, at)
    values = _on_grid(frame, da)
    have, want = str(frames.attrs.get("units", "")), str(da.attrs.get("units", ""))
    if have and want and not units_mod.equivalent(have, want):
        step = _step_seconds(frames, da)
        values = np.asarray(units_mod.convert(values, have, want, step_seconds=step), np.float32)
    return Observation(values, np.datetime64(frame["time"].values, "ns"))
