"""A forecast of a model of `data.spacing`, written back on the input's own grid.

The model forecasts at its spacing (say 2 km); the input came on its own grid (0.5 km BOM, 250 m
FMI, KNMI's 1 km pixels). Each lead is interpolated bilinearly from the model's cell centres
onto the input's cell centres (separable, NaN-aware; edge cells held), cells outside the model
grid's extent (the far rows and columns that did not fill a whole model cell) and cells where
the newest input frame had no value are missing (NaN). The file then has the input's
coordinates, CRS and geotransform; `model_spacing_metres` and a `comment` say what was done.
Models without a spacing are left as they are: their forecast is on the model's grid.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import xarray as xr

from stforecast.data.archives import for_input
from stforecast.data.resample import grid_frames
from stforecast.data.spacing import interpolation, onto
from stforecast.forecasting.plan import Plan, materialise, plan
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
    return out


def on_input_grid(p: Plan, native: xr.DataArray | None) -> Plan:
    """`p` with its template and leads on the grid of `native` (see the module docstring)."""
    if native is None:
        return p
    t = p.template
    wy, out_y = interpolation(t["y"].values.astype(np.float64), native["y"].values)
    wx, out_x = interpolation(t["x"].values.astype(np.float64), native["x"].values)
    newest = np.asarray(native.values, np.float32).reshape(-1, *native.shape[-2:])
    missing = ~np.isfinite(newest).all(axis=0)
    template = _template_on(t, native)

    def leads() -> Iterator[dict[str, np.ndarray]]:
        for lead in p.leads:
            out = {}
            for name, field in lead.items():
                fine = onto(field, wy, wx, out_y, out_x)
                fine[missing] = np.nan
                out[name] = fine
            yield out

    info = {
        **p.info,
        "grid": [int(native.sizes["y"]), int(native.sizes["x"])],
        "model_grid": p.info.get("grid"),
    }
    return Plan(template, leads(), p.inputs, p.timings, info)


def _template_on(t: xr.Dataset, native: xr.DataArray) -> xr.Dataset:
    """The forecast template with the input's grid in place of the model's."""
    ny, nx = native.sizes["y"], native.sizes["x"]
    data_vars = {}
    for name, var in t.data_vars.items():
        if var.dims[-2:] == ("y", "x"):
            zeros = np.broadcast_to(np.float32(0), (var.shape[0], ny, nx))
            data_vars[name] = (var.dims, zeros, var.attrs)
        else:
            data_vars[name] = var
    coords: dict[str, Any] = {k: v for k, v in t.coords.items() if k not in ("y", "x")}
    ys, xs = native["y"].values.astype(np.float64), native["x"].values.astype(np.float64)
    coords["y"] = ("y", ys, t["y"].attrs)
    coords["x"] = ("x", xs, t["x"].attrs)
    attrs = dict(t.attrs)
    transform = native.attrs.get("transform")
    attrs["geotransform"] = [float(v) for v in transform] if transform else geotransform(ys, xs)
    attrs["model_spacing_metres"] = native.attrs["model_spacing_metres"]
    note = (
        "forecast at the model's grid spacing, interpolated bilinearly onto the input's grid; "
        "missing outside the model grid and where the newest input had no value"
    )
    attrs["comment"] = f"{attrs['comment']}; {note}" if attrs.get("comment") else note
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def forecast(
    frames: xr.DataArray, model: Any, *, device: str = "auto", **options: Any
) -> xr.Dataset:
    """`stforecast.forecast`: the forecast in memory, on the input's own grid (`plan.plan`'s
    options: `steps`, `hours`, `options`)."""
    run = as_run(model, device)
    return materialise(on_input_grid(plan(frames, run, **options), native_grid(frames, run)))
