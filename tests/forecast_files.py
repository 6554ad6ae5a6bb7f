"""Forecast files for tests: the template the writers take, built as the engine builds it (lazy
data variables, lead coordinates, a `crs` grid-mapping variable from pyproj, ACDD attributes),
its leads, a materialised dataset written as a forecast, and a ready-made forecast file (what a
forecast is allowed to replace)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import pyproj
import xarray as xr

from stforecast.io.write import write_forecast

REFERENCE = np.datetime64("2024-05-01T12:00:00", "ns")
PROVENANCE = {"model_sha256": "ab" * 32, "recipe_hash": "cd" * 8, "inputs": [["a.nc", "ef" * 32]]}


def make_template(
    n: int = 6,
    ny: int = 40,
    nx: int = 50,
    *,
    latlon: bool = False,
    dims: tuple[str, str] = ("y", "x"),
    names: tuple[str, ...] = ("rainrate",),
    geotransform: bool = True,
    data=None,
) -> xr.Dataset:
    """A forecast-like template: `n` leads of 10 min, EPSG:3035 1 km cells (y descending) or an
    EPSG:4326 0.01° grid; lazy (dask zeros) data variables unless `data` is given."""
    period = (np.arange(1, n + 1) * np.timedelta64(10, "m")).astype("timedelta64[ns]")
    if latlon:
        crs, step = pyproj.CRS.from_epsg(4326), 0.01
        x = 5.0 + (np.arange(nx) + 0.5) * step
        y = 52.0 - (np.arange(ny) + 0.5) * step
        y_attrs = {"standard_name": "latitude", "units": "degrees_north", "axis": "Y"}
        x_attrs = {"standard_name": "longitude", "units": "degrees_east", "axis": "X"}
    else:
        crs, step = pyproj.CRS.from_epsg(3035), 1000.0
        x = 4_000_000.0 + (np.arange(nx) + 0.5) * step
        y = 3_000_000.0 - (np.arange(ny) + 0.5) * step
        y_attrs = {"standard_name": "projection_y_coordinate", "units": "m", "axis": "Y"}
        x_attrs = {"standard_name": "projection_x_coordinate", "units": "m", "axis": "X"}
    yd, xd = dims
    data_vars = {}
    for name in names:
        values = (
            da.zeros((n, ny, nx), dtype=np.float32, chunks=(1, ny, nx)) if data is None else data
        )
        data_vars[name] = (
            ("time", yd, xd),
            values,
            {
                "units": "mm h-1",
                "long_name": f"{name} (forecast)",
                "standard_name": "rainfall_rate",
                "grid_mapping": "crs",
            },
        )
    data_vars["crs"] = ((), np.int32(0), {**crs.to_cf(), "crs_wkt": crs.to_wkt()})
    attrs = {
        "Conventions": "CF-1.10, ACDD-1.3",
        "title": "stforecast nowcast of rain rate",
        "institution": "test institute",
        "source": "stforecast 0.0.test convlstm",
        "history": "2024-05-01T12:05:00Z stforecast forecast",
        "date_created": "2024-05-01T12:05:00Z",
        "time_coverage_start": "2024-05-01T12:10:00Z",
        "time_coverage_end": str(np.datetime_as_string(REFERENCE + period[-1], unit="s")) + "Z",
        "time_coverage_resolution": "PT10M",
        "summary": "test forecast",
        "provenance": json.dumps(PROVENANCE),
    }
    if geotransform:
        attrs["geotransform"] = [step, 0.0, x[0] - step / 2, 0.0, -step, y[0] + step / 2]
    return xr.Dataset(
        data_vars,
        coords={
            "time": ("time", REFERENCE + period, {"standard_name": "time", "axis": "T"}),
            "forecast_period": ("time", period, {"standard_name": "forecast_period"}),
            "forecast_reference_time": ((), REFERENCE),
            yd: (yd, y, y_attrs),
            xd: (xd, x, x_attrs),
        },
        attrs=attrs,
    )


def lead_values(k: int, ny: int = 40, nx: int = 50, offset: float = 0.0) -> np.ndarray:
    """Lead k: a ramp plus k, NaN in the north-west corner (no radar coverage)."""
    values = (np.arange(ny * nx, dtype=np.float32).reshape(ny, nx) / 100.0 + k + offset).copy()
    values[:5, :7] = np.nan
    return values


def make_leads(n: int = 6, names=("rainrate",), ny: int = 40, nx: int = 50, offset: float = 0.0):
    for k in range(n):
        yield {name: lead_values(k, ny, nx, offset) for name in names}


def write_dataset(ds: Any, path: str | os.PathLike[str], fmt: str = "netcdf") -> Path:
    """Write a materialised (or dask-backed) forecast Dataset: `write_forecast` of its leads."""
    from stforecast.io.layout import layout

    lay = layout(ds)

    def leads() -> Iterator[dict[str, np.ndarray]]:
        for k in range(lay.n):
            yield {name: np.asarray(ds[name].isel(time=k).values) for name in lay.fields}

    return write_forecast(path, ds, leads(), fmt)


def forecast_file(path: Path, fmt: str = "netcdf") -> Path:
    """A small stforecast forecast at `path`: something a new forecast may replace."""
    return write_forecast(path, make_template(n=2, ny=8, nx=10), make_leads(2, ny=8, nx=10), fmt)
