"""A forecast of a model of `data.spacing`, written back on the input's own grid.

The model forecasts at its spacing (say 2 km); the input came on its own grid (0.5 km BOM, 250 m
FMI, KNMI's 1 km pixels). Each lead is interpolated bilinearly from the model's cell centres
onto the input's cell centres (separable, NaN-aware; edge cells held), cells outside the model
grid's extent (the far rows and columns that did not fill a whole model cell) and cells where
the newest input frame had no value are missing (NaN). The file then has the input's
coordinates, CRS and geotransform; `model_spacing_metres` and a `comment` say what was done.
A general model (one whose card `accepts` any precipitation: the shipped radar nowcaster)
answers in the input's own units: a rate, a depth per (forecast) time step or dBZ
(`data.units.convert`, the Z-R relation of its card). Models without a spacing are left as they
are: their forecast is on the model's grid.

`forecast` (the package's `stforecast.forecast`) is the whole path in memory: frames of any
kind (`inputs.as_frames`), the plan, the leads on the input's grid.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from stforecast.data import units
from stforecast.data.archives import for_input
from stforecast.data.reproject import apply, points_operator
from stforecast.data.resample import grid_frames
from stforecast.data.spacing import interpolation, onto
from stforecast.errors import ConfigError
from stforecast.forecasting.inputs import as_frames, as_time
from stforecast.forecasting.plan import Plan, materialise, plan
from stforecast.forecasting.template import answered
from stforecast.io import cf
from stforecast.io.grid import geotransform
from stforecast.rundir.load import Run, as_run

__all__ = ["forecast", "native_grid", "on_input_grid"]


def native_grid(frames: xr.DataArray, run: Run, reference: Any = None) -> xr.DataArray | None:
    """The newest input frame (at or before `reference`) on the input's own grid, units and
    crop done, for a model of `data.spacing`; None for other models."""
    contract = run.contract
    if not contract.processing.spacing:
        return None
    cfg, _ = for_input(frames, contract)
    frames = frames.sortby("time")
    if reference is not None:
        frames = frames.sel(time=frames["time"] <= np.datetime64(reference, "ns"))
    out = grid_frames(cfg, frames.isel(time=[-1]), run.step)
    out.attrs["model_spacing_metres"] = float(contract.processing.spacing)
    source = cfg.source_units or frames.attrs.get("units", "")
    if contract.accepts and not units.equivalent(source, contract.units):
        out.attrs["answer"] = {  # the input's units, from the model's (`on_input_grid`)
            "units": units.normalise(source),
            "from": contract.units,
            "step_seconds": run.step,
            "zr": tuple(contract.processing.zr),
        }
    return out


def on_input_grid(p: Plan, native: xr.DataArray | None) -> Plan:
    """`p` with its template and leads on the grid of `native` (see the module docstring)."""
    if native is None:
        return p
    t = p.template
    other = _other_crs(t, native)
    back = _back(t, native, other)
    newest = np.asarray(native.values, np.float32).reshape(-1, *native.shape[-2:])
    missing = ~np.isfinite(newest).all(axis=0)
    template = _template_on(t, native, other)
    answer = native.attrs.get("answer")

    def leads() -> Iterator[dict[str, np.ndarray]]:
        for lead in p.leads:
            out = {}
            for name, field in lead.items():
                fine = back(field)
                if answer is not None:
                    fine = _answer(fine, answer)
                fine[missing] = np.nan
                out[name] = fine
            yield out

    info = {
        **p.info,
        "grid": [int(native.sizes["y"]), int(native.sizes["x"])],
        "model_grid": p.info.get("grid"),
    }
    return Plan(template, leads(), p.inputs, p.timings, info)


def _other_crs(t: xr.Dataset, native: xr.DataArray) -> str:
    """`native`'s CRS (WKT) where it is not the model grid's (a lat-lon input, put on its local
    equal-area grid), else ''."""
    model_wkt = t[cf.GRID_MAPPING].attrs.get("crs_wkt", "") if cf.GRID_MAPPING in t else ""
    wkt = native.attrs.get("crs_wkt", "")
    return wkt if model_wkt and wkt and not _same_crs(model_wkt, wkt) else ""


def _back(t: xr.Dataset, native: xr.DataArray, other: str) -> Callable[[np.ndarray], np.ndarray]:
    """The interpolation of a lead from the model's grid onto `native`'s: separable where both
    have one CRS, else through the points of `native`'s cells on the model's CRS (a lat-lon
    input on its local equal-area grid, `data.reproject`)."""
    if other:
        ys, xs, model_wkt = t["y"].values, t["x"].values, t[cf.GRID_MAPPING].attrs["crs_wkt"]
        op, outside = points_operator(ys, xs, model_wkt, native["y"].values,
                                      native["x"].values, other)  # fmt: skip
        shape = outside.shape

        def reprojected(field: np.ndarray) -> np.ndarray:
            out = apply(field, op=op, shape=shape)
            out[..., outside] = np.nan
            return out

        return reprojected
    wy, out_y = interpolation(t["y"].values.astype(np.float64), native["y"].values)
    wx, out_x = interpolation(t["x"].values.astype(np.float64), native["x"].values)
    return lambda field: onto(field, wy, wx, out_y, out_x)


def _same_crs(a: str, b: str) -> bool:
    import pyproj

    return a == b or bool(pyproj.CRS.from_wkt(a).equals(pyproj.CRS.from_wkt(b)))


def _answer(field: np.ndarray, answer: dict[str, Any]) -> np.ndarray:
    """`field` from the model's units into the input's (`native_grid`'s `answer`)."""
    step, zr = answer["step_seconds"], answer["zr"]
    out = units.convert(field, answer["from"], answer["units"], step_seconds=step, zr=zr)
    return np.asarray(out, np.float32)


def _template_on(t: xr.Dataset, native: xr.DataArray, other: str) -> xr.Dataset:
    """The forecast template with the input's grid in place of the model's (and its CRS,
    `other`, where that is not the model grid's)."""
    ny, nx = native.sizes["y"], native.sizes["x"]
    data_vars = {}
    answer = native.attrs.get("answer")
    for name, var in t.data_vars.items():
        if var.dims[-2:] == ("y", "x"):
            zeros = np.broadcast_to(np.float32(0), (var.shape[0], ny, nx))
            attrs = dict(var.attrs) if answer is None else answered(var.attrs, answer["units"])
            data_vars[name] = (var.dims, zeros, attrs)
        elif name == cf.GRID_MAPPING and other:
            data_vars[name] = ((), np.int32(0), cf.grid_mapping_attrs(other))
        else:
            data_vars[name] = var
    on_grid = ("y", "x")  # coordinates of the model's grid, rebuilt on the input's
    coords: dict[str, Any] = {
        k: v for k, v in t.coords.items() if not set(v.dims) & set(on_grid) and k not in on_grid
    }
    ys, xs = native["y"].values.astype(np.float64), native["x"].values.astype(np.float64)
    kind = "lonlat" if other and cf.is_lonlat(other) else "projected"
    for axis, values in (("y", ys), ("x", xs)):
        given = dict(native[axis].attrs) if other else t[axis].attrs
        axis_attrs = cf.template_axis_attrs(kind, axis.upper(), given) if other else given
        coords[axis] = (axis, values, axis_attrs)
    if "lat" in t.coords and kind == "projected":  # `[forecast] latlon`: of the input's cells
        lat, lon = cf.latlon(other or t[cf.GRID_MAPPING].attrs["crs_wkt"], ys, xs)
        coords["lat"] = (on_grid, lat, t["lat"].attrs)
        coords["lon"] = (on_grid, lon, t["lon"].attrs)
    attrs = dict(t.attrs)
    transform = native.attrs.get("transform")
    attrs["geotransform"] = [float(v) for v in transform] if transform else geotransform(ys, xs)
    attrs["model_spacing_metres"] = native.attrs["model_spacing_metres"]
    how = "on a local equal-area projection, " if other else ""
    note = (
        f"forecast at the model's grid spacing {how}interpolated bilinearly onto the input's grid; "
        "missing outside the model grid and where the newest input had no value"
    )
    attrs["comment"] = f"{attrs['comment']}; {note}" if attrs.get("comment") else note
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def forecast(
    frames: Any,
    model: Any = None,
    *,
    hours: float | None = None,
    steps: int | None = None,
    variable: str | list[str] | None = None,
    device: str = "auto",
    **options: Any,
) -> xr.Dataset:
    """Forecast from the newest frames in memory: `stforecast.forecast(frames, "runs/x", hours=2)`.

    `frames`: what `stforecast.open_frames` returns, an `xarray.Dataset` or `xarray.DataArray`
    (the CRS from its CF `grid_mapping`, rioxarray's `.rio.crs` or a `spatial_ref`
    coordinate; times from its `time` coordinate), or paths as `stforecast forecast` takes
    them. From a Dataset or from files the model's variable is taken (`variable=` overrides).
    `model`: a run directory, what `stforecast.load_model` returns (`(network, card)`), or a
    `Run` (`stforecast.rundir.load.load_run`), or a shipped model's name; load it once to
    forecast many times. Without it, the shipped radar nowcaster (`stforecast.pretrained`),
    which takes precipitation only.
    `hours` (at the model's time step) or `steps` lead times, else the model's horizon;
    `device`: `auto`, `cpu`, `cuda`; further `options` as for
    `stforecast.forecasting.plan.plan` (`now`, `options`, `checksums`, `max_input_age`, `blend`).

    Returns an `xarray.Dataset` laid out as the forecast file `stforecast forecast` writes
    (CF-1.10 and ACDD-1.3), on the input's own grid: one `(time, y, x)` float32 variable per
    channel, named after the input's variable, in the model's physical units (NaN where
    the newest frame had no value); `time` the valid times, `forecast_period` the lead times,
    `forecast_reference_time` the newest input frame's time; `x`, `y` the input's cell
    centres with a `crs` grid-mapping variable (`crs_wkt`) when the input has a CRS; global
    attributes `title`, `summary`, `geotransform`, `provenance` (JSON: model, weights, inputs).
    `ds.to_netcdf(path)` writes it as it is (`stforecast forecast --out` also compresses, and
    writes atomically under a lock).

    Raises `stforecast.errors.InputError` (bad or too few frames), `ModelMismatch` (the input
    does not fit the model: variable, units, CRS, grid spacing, time step) and `ConfigError`
    (bad options), with the command line's messages.
    """
    run = _run(model, device)
    da = as_frames(frames, run, variable)
    now = options.get("now")
    reference = None if now is None else as_time(now)
    the_plan = plan(da, run, hours=hours, steps=steps, **options)
    return materialise(on_input_grid(the_plan, native_grid(da, run, reference)))


def _run(model: Any, device: str) -> Run:
    """`model` as a `Run` (`rundir.load.as_run`); anything else, a network without its card
    above all (it cannot be checked against the input), is a `ConfigError`."""
    if isinstance(model, os.PathLike):
        model = Path(model)
    if isinstance(model, (Run, str, Path)) or (isinstance(model, tuple) and len(model) == 2):
        return as_run(model, device)
    try:  # a kind of model `as_run` learnt since; its TypeError is the refusal of any other
        return as_run(model, device)
    except TypeError:
        raise ConfigError(
            "model must be a run directory, the (network, card) that stforecast.load_model "
            f"returns, or a Run; got {type(model).__name__} (a network alone has no model card)"
        ) from None
