"""The layout, grid and CRS of one variable of an in-memory `xarray.Dataset`, by the readers'
rules (`io.netcdf` for files): which dimensions are y, x and the frames, the cell centres, and
the CRS from the CF grid mapping, rioxarray, a `spatial_ref`/`crs` coordinate or an attribute.
"""

from __future__ import annotations

import os

import numpy as np
import xarray as xr
from pyproj.exceptions import CRSError

from stforecast.errors import InputError
from stforecast.io import crs as crs_mod
from stforecast.io import times as t
from stforecast.io.grid import PIXEL_SPACE, Grid, pixel_centres
from stforecast.io.netcdf import (
    LAT_UNITS,
    LON_UNITS,
    X_NAMES,
    X_STANDARD,
    Y_NAMES,
    Y_STANDARD,
    axis_attrs,
    placed_grid,
)

__all__ = ["axis_of", "layout", "source_file", "text_of", "variable_crs", "variable_grid",
           "where_of"]  # fmt: skip

MAPPING_NAMES = ("spatial_ref", "crs")  # rioxarray's grid-mapping coordinate, then CF's usual


def source_file(obj: xr.Dataset | xr.DataArray) -> str | None:
    """The file xarray read `obj` from (`encoding["source"]`), when it is still there."""
    source = obj.encoding.get("source")
    return str(source) if isinstance(source, str) and os.path.isfile(source) else None


def where_of(obj: xr.Dataset | xr.DataArray) -> str:
    """How messages name the object: its file, else `the Dataset` / `the DataArray`."""
    return source_file(obj) or f"the {type(obj).__name__}"


def text_of(value: object) -> str:
    return value if isinstance(value, str) else ""


def axis_of(ds: xr.Dataset, dim: str) -> str | None:
    """`x`, `y`, `t` or None: what a dimension is, by its coordinate's attributes, else by name."""
    coord = ds.variables.get(dim)  # not ds.coords.get: that makes up an index
    if coord is not None and coord.dims == (dim,):
        attrs = coord.attrs
        standard = str(attrs.get("standard_name", "")).lower()
        axis = str(attrs.get("axis", "")).upper()
        units = str(attrs.get("units", "")).lower().replace(" ", "")
        if standard in X_STANDARD or axis == "X" or units in LON_UNITS:
            return "x"
        if standard in Y_STANDARD or axis == "Y" or units in LAT_UNITS:
            return "y"
        if coord.dtype.kind == "M" or t.is_time_units(attrs.get("units")) or axis == "T":
            return "t"
    name = dim.lower()
    return "x" if name in X_NAMES else "y" if name in Y_NAMES else None


def layout(ds: xr.Dataset, name: str) -> tuple[str, str, str | None] | None:
    """(y dim, x dim, frame dim or None) of a variable, or None when it is not a stack of 2-D
    frames (no spatial pair, not numeric, or more than one other dimension longer than 1)."""
    var = ds.variables[name]
    dims = [str(d) for d in var.dims]
    if len(dims) < 2 or var.dtype.kind not in "iufb":
        return None
    ys = [d for d in dims if axis_of(ds, d) == "y"]
    xs = [d for d in dims if axis_of(ds, d) == "x"]
    if len(ys) == 1 and len(xs) == 1:
        ydim, xdim = ys[0], xs[0]
    elif not ys and not xs and axis_of(ds, dims[-1]) is None and axis_of(ds, dims[-2]) is None:
        ydim, xdim = dims[-2], dims[-1]  # CF order (..., Y, X) when nothing says otherwise
    else:
        return None
    rest = [d for d in dims if d not in (ydim, xdim)]
    long = [d for d in rest if ds.sizes[d] > 1]
    if len(long) > 1:
        return None
    if long:
        return ydim, xdim, long[0]
    return ydim, xdim, rest[0] if rest else None


def variable_grid(
    ds: xr.Dataset, obj: xr.Dataset | xr.DataArray, name: str, ydim: str, xdim: str, where: str
) -> Grid:
    wkt = variable_crs(ds, obj, name, where)
    return placed_grid(wkt, coordinate(ds, ydim, "y", where), coordinate(ds, xdim, "x", where))


def coordinate(ds: xr.Dataset, dim: str, axis: str, where: str) -> tuple[np.ndarray, dict]:
    coord = ds.variables.get(dim)  # not ds.coords.get: that makes up an index
    if coord is None or coord.dims != (dim,) or coord.dtype.kind not in "iuf":
        return pixel_centres(ds.sizes[dim]), {"long_name": f"{axis} {PIXEL_SPACE}"}
    values = np.array(coord.values, dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise InputError(f"{where}: coordinate {dim!r} has missing values")
    units = text_of(coord.attrs.get("units"))
    return values, axis_attrs(dim, axis, units, str(coord.attrs.get("standard_name", "")))


def variable_crs(ds: xr.Dataset, obj: xr.Dataset | xr.DataArray, name: str, where: str) -> str:
    """WKT2 of the variable's CRS (see the module docstring for the order), `""` for none."""
    var = ds[name]
    mapping = var.attrs.get("grid_mapping") or var.encoding.get("grid_mapping")
    gm_name = mapping.split()[0].rstrip(":") if isinstance(mapping, str) and mapping else None
    if gm_name and gm_name in ds.variables:
        return _mapping_wkt(ds.variables[gm_name].attrs, f"grid mapping {gm_name!r}", name, where)
    found = _rio_crs(obj)
    if found:
        return found
    for candidate in (*MAPPING_NAMES, *ds.coords):
        mapped = ds.variables.get(candidate)
        if mapped is not None and mapped.ndim == 0 and _describes_crs(mapped.attrs):
            return _mapping_wkt(mapped.attrs, f"grid mapping {candidate!r}", name, where)
    for kind, attrs in (("variable", var.attrs), ("global", ds.attrs)):
        loose = attrs.get("crs")
        if hasattr(loose, "to_wkt"):  # a pyproj or rasterio CRS object
            return _text_wkt(loose.to_wkt(), f"{kind} attribute 'crs'", name, where)
        try:
            found_loose = crs_mod.wkt_from_loose_attrs(attrs)
        except CRSError as err:
            raise InputError(
                f"{where}: {kind} CRS attribute of {name!r} is not a CRS pyproj understands "
                f"({' '.join(str(err).split())})"
            ) from err
        if found_loose:
            return found_loose[1]
    recovered = _mapping_from_file(obj, gm_name)
    if recovered is not None:
        return _mapping_wkt(recovered, f"grid mapping {gm_name!r}", name, where)
    if gm_name:
        raise InputError(
            f"{where}: {name!r} names the grid mapping {gm_name!r}, which it does not carry; "
            "pass the whole Dataset, or open it with xarray.open_dataset(..., "
            "decode_coords='all') so that the grid mapping travels as a coordinate"
        )
    return ""


def _mapping_from_file(obj: xr.Dataset | xr.DataArray, gm_name: str | None) -> dict | None:
    """The attributes of grid mapping `gm_name` in the file xarray read `obj` from: `ds["rain"]`
    of a CF file leaves its `crs` variable behind, the file still has it."""
    source = source_file(obj)
    if not gm_name or not source:
        return None
    try:
        with xr.open_dataset(source, decode_times=False, mask_and_scale=False) as f:
            found = f.variables.get(gm_name)
            return dict(found.attrs) if found is not None else None
    except Exception:  # not readable again (moved, rewritten, not NetCDF): not found
        return None


def _describes_crs(attrs: dict) -> bool:
    return "grid_mapping_name" in attrs or any(
        isinstance(attrs.get(k), str) for k in ("crs_wkt", "spatial_ref")
    )


def _mapping_wkt(attrs: dict, what: str, name: str, where: str) -> str:
    try:
        return crs_mod.wkt_from_cf(attrs)
    except (CRSError, KeyError, ValueError, TypeError) as err:
        raise InputError(
            f"{where}: {what} of {name!r} is not a CRS pyproj understands "
            f"({' '.join(str(err).split())})"
        ) from err


def _text_wkt(text: str, what: str, name: str, where: str) -> str:
    try:
        return crs_mod.wkt_from_text(text)
    except CRSError as err:
        raise InputError(
            f"{where}: {what} of {name!r} is not a CRS pyproj understands "
            f"({' '.join(str(err).split())})"
        ) from err


def _rio_crs(obj: xr.Dataset | xr.DataArray) -> str:
    """rioxarray's CRS (`obj.rio.crs`) when rioxarray is loaded and knows one, else `""`."""
    if getattr(type(obj), "rio", None) is None:  # the accessor exists once rioxarray is imported
        return ""
    try:
        found = obj.rio.crs
    except Exception:  # rioxarray's own failure to find one: look elsewhere
        return ""
    if found is None:
        return ""
    text = found.to_wkt() if hasattr(found, "to_wkt") else str(found)
    return _text_wkt(text, "rioxarray's CRS", str(getattr(obj, "name", "")) or "it", where_of(obj))
