"""A forecast template as the writers see it, and the check of each lead against it.

Both writers (`netcdf_write`, `geotiff_write`) need the same facts from a template: which
variables to write, the grid's dimensions, the grid mapping, the lead times as integer
nanoseconds. `layout(template)` finds them once and raises `ValueError` for a template that does
not fit (a bug in the caller, not bad input); `check_lead` does the same for each lead.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from stforecast.io.cf import FILL_VALUE, LEAD_COORDS
from stforecast.io.times import EPOCH, NS


@dataclass
class Layout:
    fields: list[str]
    ydim: str
    xdim: str
    ny: int
    nx: int
    n: int
    grid_mapping: str | None
    aux: list[str]  # other coordinates to write and list in `coordinates`
    valid_ns: np.ndarray  # int64 ns since the epoch, (n,)
    reference_ns: int
    period_ns: np.ndarray  # int64 ns, (n,)


def layout(template: Any) -> Layout:
    """The layout of `template` (an `xr.Dataset`; its data is never loaded)."""
    if "time" not in template.dims:
        raise ValueError("the forecast template has no `time` dimension (the lead times)")
    fields, ydim, xdim = _fields(template)
    grid_mapping = _grid_mapping(template, fields)
    n = int(template.sizes["time"])
    valid, reference_ns, period = _lead_times(template, n)
    return Layout(
        fields=fields,
        ydim=ydim,
        xdim=xdim,
        ny=int(template.sizes[ydim]),
        nx=int(template.sizes[xdim]),
        n=n,
        grid_mapping=grid_mapping,
        aux=_aux(template, ydim, xdim),
        valid_ns=valid,
        reference_ns=reference_ns,
        period_ns=period,
    )


def _fields(template: Any) -> tuple[list[str], str, str]:
    """The `(time, y, x)` variables to write, and the names of y and x."""
    referenced = {
        str(v.attrs["grid_mapping"])
        for v in template.data_vars.values()
        if "grid_mapping" in v.attrs
    }
    fields, dims = [], None
    for name, var in template.data_vars.items():
        if name in referenced:
            continue
        if var.ndim != 3 or var.dims[0] != "time":
            raise ValueError(
                f"template variable {name!r} has dims {var.dims}: expected (time, y, x), or a "
                "grid-mapping variable named by the others' grid_mapping attribute"
            )
        if dims is not None and var.dims != dims:
            raise ValueError(f"template variables have different dims: {dims} and {var.dims}")
        dims = var.dims
        fields.append(str(name))
    if not fields:
        raise ValueError("the forecast template has no (time, y, x) variable to write")
    ydim, xdim = str(dims[1]), str(dims[2])
    for dim in (ydim, xdim):
        if dim not in template.coords or template[dim].dims != (dim,):
            raise ValueError(f"the forecast template has no 1-D coordinate {dim!r}")
    return fields, ydim, xdim


def _grid_mapping(template: Any, fields: list[str]) -> str | None:
    mappings = {template[f].attrs.get("grid_mapping") for f in fields}
    if len(mappings) > 1:
        raise ValueError(f"template variables have different grid mappings: {mappings}")
    grid_mapping = mappings.pop()
    if grid_mapping is None:
        return None
    grid_mapping = str(grid_mapping)
    if grid_mapping not in template.data_vars or template[grid_mapping].ndim != 0:
        raise ValueError(f"grid_mapping {grid_mapping!r} is not a scalar variable of the template")
    return grid_mapping


def _lead_times(template: Any, n: int) -> tuple[np.ndarray, int, np.ndarray]:
    """Valid times, reference time and lead times as int64 ns, checked against each other."""
    valid = _datetimes(template["time"].values, "time")
    if "forecast_reference_time" not in template.coords:
        raise ValueError("the forecast template has no forecast_reference_time coordinate")
    reference = _datetimes(template["forecast_reference_time"].values, "forecast_reference_time")
    if reference.shape != ():
        raise ValueError("forecast_reference_time must be a scalar coordinate")
    reference_ns = int(reference)
    if "forecast_period" not in template.coords:
        return valid, reference_ns, valid - reference_ns
    period = _periods(template["forecast_period"])
    if period.shape != (n,):
        raise ValueError(f"forecast_period must be 1-D along time, got {period.shape}")
    if not np.array_equal(period, valid - reference_ns):
        raise ValueError("forecast_period differs from time - forecast_reference_time")
    return valid, reference_ns, period


def _aux(template: Any, ydim: str, xdim: str) -> list[str]:
    """Other numeric coordinates along time, y and x (e.g. 2-D `lat`, `lon`)."""
    aux = []
    order = ("time", ydim, xdim)
    for name, coord in template.coords.items():
        if name in order or name in LEAD_COORDS:
            continue
        if (
            coord.dims != tuple(d for d in order if d in coord.dims)
            or coord.dtype.kind not in "iuf"
        ):
            raise ValueError(
                f"cannot write coordinate {name!r} (dims {coord.dims}, {coord.dtype}): only "
                "numeric coordinates along time, y and x are written; drop it from the template"
            )
        aux.append(str(name))
    return aux


def _datetimes(values: np.ndarray, name: str) -> np.ndarray:
    values = np.asarray(values)
    if values.dtype.kind != "M":
        raise ValueError(f"{name} must hold datetime64 values, got {values.dtype}")
    values = values.astype("datetime64[ns]")
    if np.isnat(values).any():
        raise ValueError(f"{name} has missing (NaT) values")
    return (values - EPOCH).astype(np.int64)


def _periods(coord: Any) -> np.ndarray:
    values = np.asarray(coord.values)
    if values.dtype.kind == "m":
        values = values.astype("timedelta64[ns]")
        if np.isnat(values).any():
            raise ValueError("forecast_period has missing (NaT) values")
        return values.astype(np.int64)
    if values.dtype.kind in "iuf" and coord.attrs.get("units") in ("s", "seconds"):
        return np.round(values.astype(np.float64) * NS).astype(np.int64)
    raise ValueError(f"forecast_period must be timedelta64 or seconds, got {values.dtype}")


def check_lead(lead: Any, lay: Layout, k: int) -> dict[str, np.ndarray]:
    """Lead `k`'s arrays as float32 with NaN replaced by the fill value."""
    if not isinstance(lead, Mapping):
        raise ValueError(f"lead {k}: expected a dict {{variable: array}}, got {type(lead)}")
    keys = set(lead)
    if keys != set(lay.fields):
        missing = sorted(set(lay.fields) - keys)
        extra = sorted(map(str, keys - set(lay.fields)))
        raise ValueError(
            f"lead {k}: variables differ from the template (missing {missing}, extra {extra})"
        )
    out = {}
    for name in lay.fields:
        values = np.asarray(lead[name], dtype=np.float32)
        if values.shape != (lay.ny, lay.nx):
            raise ValueError(
                f"lead {k}: {name} has shape {values.shape}, expected {(lay.ny, lay.nx)}"
            )
        out[name] = np.where(np.isnan(values), FILL_VALUE, values)
    return out
