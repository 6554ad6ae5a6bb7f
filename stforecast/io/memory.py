"""In-memory inputs: an `xarray.Dataset` or `xarray.DataArray` as the frames `open_frames` gives.

A notebook often holds its frames already (`xr.open_dataset`, `rioxarray.open_rasterio`, a
synthetic field). `from_xarray` turns such an object into the same `(time, y, x)` (or
`(time, channel, y, x)`) float32 DataArray with the same attributes (`units`, `crs_wkt`,
`transform`, `time_step`, `sources`, `source_variable`, ...) that `assemble.open_frames` returns
for files, choosing the variable and finding the grid, CRS and times by the same rules:

- the variable: `variable=`, else the only data variable with (y, x) dimensions (grid mappings,
  bounds and auxiliary coordinates are never picked);
- the CRS: the CF `grid_mapping` the variable names (in its attributes or encoding), rioxarray's
  `.rio.crs` when rioxarray is loaded, a `spatial_ref` or `crs` coordinate, a `crs_wkt`/proj
  attribute; longitude/latitude axes without any of those are WGS 84;
- the times: the frame dimension's coordinate (datetime64, cftime, or numbers with CF units), a
  `time` coordinate along it (rioxarray's `band`), a scalar `time` coordinate or a time
  attribute for a single frame.

`open_frames` is the public entry point: xarray objects (or a list of them) here, paths to
`assemble.open_frames`. Errors are `InputError`s (`MissingVariableError` for a variable that is
not there) with the CLI's wording; they name the file the object came from when xarray knows it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr

from stforecast.errors import InputError, MissingVariableError
from stforecast.io import times as t
from stforecast.io.frames import requested
from stforecast.io.grid import Grid
from stforecast.io.packing import Packing
from stforecast.io.xarray_grid import layout, source_file, text_of, variable_grid, where_of

__all__ = ["from_xarray", "is_xarray", "open_frames"]

PACKING_KEYS = ("scale_factor", "add_offset", "_FillValue", "missing_value", "valid_range",
                "valid_min", "valid_max")  # fmt: skip


def is_xarray(obj: object) -> bool:
    """Whether `obj` is an xarray Dataset or DataArray."""
    return isinstance(obj, (xr.Dataset, xr.DataArray))


def open_frames(
    sources: Any,
    *,
    variable: str | Sequence[str] | None = None,
    time_pattern: str | None = None,
    recursive: bool = False,
) -> xr.DataArray:
    """Frames as a lazy `(time, y, x)` float32 DataArray (`(time, channel, y, x)` when `variable`
    is a list of names), from files or from xarray objects.

    `sources`: a path, a directory or a glob, or a list of them (see `assemble.open_frames`:
    NetCDF, GeoTIFF, ODIM HDF5, GRIB, one file or one per frame; `time_pattern` and `recursive`
    apply there), or an `xarray.Dataset` / `xarray.DataArray` in memory, or a list of those
    (one or more frames each, on one grid). `variable=None` takes the only data variable with
    (y, x) dimensions. Attributes: `units`, `long_name`, `standard_name`, `crs_wkt`,
    `transform`, `time_step`, `sources`, `source_variable`. Raises `InputError` on bad input.
    """
    if is_xarray(sources):
        return from_xarray(sources, variable=variable)
    if isinstance(sources, (list, tuple)) and sources and any(is_xarray(s) for s in sources):
        if not all(is_xarray(s) for s in sources):
            raise InputError("give either paths or xarray objects as the sources, not both")
        return _from_many(list(sources), variable)
    from stforecast.io.assemble import open_frames as open_files

    return open_files(sources, variable=variable, time_pattern=time_pattern, recursive=recursive)


def from_xarray(
    obj: xr.Dataset | xr.DataArray, *, variable: str | Sequence[str] | None = None
) -> xr.DataArray:
    """An xarray object's frames as `open_frames` returns them (see the module docstring).

    A DataArray that `open_frames` made is returned as it is."""
    names, channels = requested(variable)
    if isinstance(obj, xr.DataArray) and _is_frames(obj):
        have = obj.attrs["source_variable"]
        have = have if isinstance(have, list) else [have]
        if names is not None and names != have:
            raise MissingVariableError(
                f"{where_of(obj)}: no variable {_missing(names)}; available: {', '.join(have)}"
            )
        return obj
    where = where_of(obj)
    ds, names = _as_dataset(obj, names, where)
    stacks = [_stack(ds, obj, name, where) for name in names]
    grid, times = stacks[0][1], stacks[0][2]
    for (_, other, other_times, _), name in zip(stacks[1:], names[1:], strict=True):
        diff = grid.difference(other)
        if diff:
            raise InputError(f"{where}: {name!r} is not on the grid of {names[0]!r}: {diff}")
        if other_times.shape != times.shape or not np.array_equal(other_times, times):
            raise InputError(f"{where}: variable {name!r} has other times than {names[0]!r}")
    data = [s[0] for s in stacks]
    if channels:
        values = xr.concat(data, dim="channel").transpose("time", "channel", "y", "x")
    else:
        values = data[0]
    source = source_file(obj)
    coords: dict[str, tuple] = {
        "time": ("time", times),
        "y": ("y", grid.y, dict(grid.y_attrs)),
        "x": ("x", grid.x, dict(grid.x_attrs)),
    }
    if source:  # the file the object was read from: the forecast's provenance names it
        coords["source"] = ("time", np.array([source] * times.size, dtype=object))
    if channels:
        coords["channel"] = ("channel", np.array(names, dtype=str))
    attrs = _attrs([s[3] for s in stacks], names, channels, grid, times)
    attrs["sources"] = [source] if source else []
    return xr.DataArray(
        values.data, dims=values.dims, coords=coords, name="+".join(names), attrs=attrs
    )


def _is_frames(da: xr.DataArray) -> bool:
    """A DataArray `open_frames` made (or one laid out exactly like it)."""
    layouts = (("time", "y", "x"), ("time", "channel", "y", "x"))
    return da.dims in layouts and "source_variable" in da.attrs and "crs_wkt" in da.attrs


def _missing(names: list[str]) -> str:
    return repr(names[0]) if len(names) == 1 else f"among {', '.join(names)}"


def _as_dataset(
    obj: xr.Dataset | xr.DataArray, names: list[str] | None, where: str
) -> tuple[xr.Dataset, list[str]]:
    """`obj` as a Dataset and the variables to take from it."""
    if isinstance(obj, xr.DataArray):
        if obj.name is None:
            if names is None or len(names) > 1:
                raise InputError(
                    f"{where}: the DataArray has no name; name it after its variable "
                    "(da.rename('rainrate')) or pass variable=NAME"
                )
            obj = obj.rename(names[0])
        name = str(obj.name)
        if names is not None and names != [name]:
            raise MissingVariableError(f"{where}: no variable {_missing(names)}; available: {name}")
        ds = obj.to_dataset()
        if layout(ds, name) is None:
            raise InputError(f"{where}: {name!r} {_not_frames(obj)}")
        return ds, [name]
    candidates, others = _candidates(obj)
    if names is None:
        if not candidates:
            only = f", only: {', '.join(others)}" if others else ""
            raise InputError(f"{where}: no data variable with (y, x) dimensions{only}")
        if len(candidates) > 1:
            raise InputError(
                f"several data variables in the sources: {', '.join(candidates)}; choose one "
                "with variable=NAME (or a list of names for channels)"
            )
        return obj, candidates
    for name in names:
        if name not in obj.variables:
            available = ", ".join(candidates) or "none"
            raise MissingVariableError(
                f"{where}: no variable {_missing(names)}; available: {available}"
            )
        if layout(obj, name) is None:
            raise InputError(
                f"{where}: variable {name!r} has no (y, x) dimensions; data variables: "
                f"{', '.join(candidates) or 'none'}"
            )
    return obj, names


def _not_frames(da: xr.DataArray) -> str:
    return f"with dimensions {da.dims} is not a stack of (y, x) frames"


def _candidates(ds: xr.Dataset) -> tuple[list[str], list[str]]:
    """The data variables `variable=None` may pick, and the others (for messages)."""
    referenced: set[str] = set()
    for var in ds.variables.values():
        for source in (var.attrs, var.encoding):
            for key in ("coordinates", "bounds", "ancillary_variables", "grid_mapping"):
                value = source.get(key)
                if isinstance(value, str):
                    referenced.update(w.rstrip(":") for w in value.split())
    candidates, others = [], []
    for name in ds.data_vars:
        ok = name not in referenced and layout(ds, str(name)) is not None
        (candidates if ok else others).append(str(name))
    return candidates, others


def _stack(
    ds: xr.Dataset, obj: xr.Dataset | xr.DataArray, name: str, where: str
) -> tuple[xr.DataArray, Grid, np.ndarray, dict[str, str]]:
    """One variable as (`(time, y, x)` float32 values, grid, times sorted, attributes)."""
    found = layout(ds, name)
    assert found is not None  # checked by `_as_dataset`
    ydim, xdim, frame_dim = found
    var = ds[name]
    grid = variable_grid(ds, obj, name, ydim, xdim, where)
    times, note = _times(ds, var, frame_dim)
    if times is None:
        raise InputError(
            f"{where}: no time found for {name!r} (looked at: {note}); give the frames a "
            "'time' coordinate"
        )
    extra = [d for d in var.dims if d not in (ydim, xdim, frame_dim)]
    var = var.isel({d: 0 for d in extra}, drop=True)
    if frame_dim is None:
        var = var.expand_dims("frame")
        frame_dim = "frame"
    var = var.transpose(frame_dim, ydim, xdim).drop_vars(list(var.coords))
    var = var.rename({frame_dim: "time", ydim: "y", xdim: "x"})
    var = _decoded(var)
    order = np.argsort(times, kind="stable")
    if not np.array_equal(order, np.arange(times.size)):
        times, var = times[order], var.isel(time=order)
    t.check_increasing(times, where)
    attrs = {"units": text_of(var.attrs.get("units"))}
    for key in ("long_name", "standard_name"):
        if isinstance(var.attrs.get(key), str):
            attrs[key] = var.attrs[key]
    return var, grid, times, attrs


def _decoded(var: xr.DataArray) -> xr.DataArray:
    """Values as float32 with NaN: packing that xarray left undone (`mask_and_scale=False`)
    applied with the readers' rules, lazily for dask arrays."""
    attrs = var.attrs
    if not any(k in attrs for k in PACKING_KEYS):
        return var.astype(np.float32)
    fills = [float(v) for k in ("_FillValue", "missing_value") if k in attrs
             for v in np.atleast_1d(attrs[k]) if np.asarray(v).dtype.kind in "iufb"]  # fmt: skip
    low, high = attrs.get("valid_min"), attrs.get("valid_max")
    if "valid_range" in attrs and np.size(attrs["valid_range"]) == 2:
        low, high = np.asarray(attrs["valid_range"]).tolist()
    packing = Packing(
        scale=float(np.asarray(attrs.get("scale_factor", 1.0)).ravel()[0]),
        offset=float(np.asarray(attrs.get("add_offset", 0.0)).ravel()[0]),
        fills=tuple(fills),
        valid_min=None if low is None else float(np.asarray(low).ravel()[0]),
        valid_max=None if high is None else float(np.asarray(high).ravel()[0]),
        unsigned=str(attrs.get("_Unsigned", "")).lower() == "true",
    )
    out = xr.apply_ufunc(packing.apply, var, dask="parallelized", output_dtypes=[np.float32])
    out.attrs = {k: v for k, v in attrs.items() if k not in PACKING_KEYS}
    return out


# -- times ------------------------------------------------------------------------------------


def _times(
    ds: xr.Dataset, var: xr.DataArray, frame_dim: str | None
) -> tuple[np.ndarray | None, str]:
    """The frames' valid times as `datetime64[ns]` and where they were found (or looked for)."""
    if frame_dim is not None:
        along = [c for c in var.coords.values() if c.dims == (frame_dim,)]
        along.sort(key=lambda c: (c.name != frame_dim, c.name != "time"))
        for coord in along:
            found = _as_times(coord)
            if found is not None:
                return found, f"coordinate {coord.name!r}"
        if ds.sizes[frame_dim] > 1:
            return None, f"the coordinates along {frame_dim!r} (none holds times)"
    scalars = [c for c in var.coords.values() if c.ndim == 0 or c.size == 1]
    scalars.sort(key=lambda c: (c.name not in ("valid_time", "time"), str(c.name)))
    for coord in scalars:
        found = _as_times(coord)
        if found is not None:
            return found.reshape(-1)[:1], f"coordinate {coord.name!r}"
    for attrs in (var.attrs, ds.attrs):
        lowered = {str(k).lower(): v for k, v in attrs.items()}
        for key in t.TIME_KEYS:
            value = lowered.get(key)
            parsed = t.parse_time_string(value) if isinstance(value, str) else None
            if parsed is not None:
                return np.array([parsed], dtype="datetime64[ns]"), f"attribute {key!r}"
    return None, "a time coordinate along the frames, a scalar 'time', attributes " + "/".join(
        t.TIME_KEYS
    )


def _as_times(coord: xr.DataArray) -> np.ndarray | None:
    """A coordinate's values as `datetime64[ns]`, or None when they are not times."""
    values = np.asarray(coord.values)
    if values.dtype.kind == "M":
        return values.astype("datetime64[ns]").reshape(-1)
    units = coord.attrs.get("units")
    if values.dtype.kind in "iuf" and t.is_time_units(units):
        try:
            return t.decode_cf(values.reshape(-1), units, coord.attrs.get("calendar"))
        except ValueError as err:
            raise InputError(f"cannot decode the times of {coord.name!r}: {err}") from err
    if values.dtype.kind == "O" and values.size and hasattr(values.flat[0], "calendar"):
        try:  # cftime dates (a non-standard calendar)
            index = xr.CFTimeIndex(values.reshape(-1))
            return np.asarray(index.to_datetimeindex(unsafe=True), dtype="datetime64[ns]")
        except (ValueError, TypeError) as err:
            raise InputError(f"cannot convert the times of {coord.name!r}: {err}") from err
    return None


# -- several objects, attributes --------------------------------------------------------------


def _from_many(objs: list[Any], variable: str | Sequence[str] | None) -> xr.DataArray:
    """Several xarray objects (one or more frames each, on one grid) as one stack."""
    parts = [from_xarray(o, variable=variable) for o in objs]
    first = parts[0]
    for k, part in enumerate(parts[1:], 1):
        if part.attrs["source_variable"] != first.attrs["source_variable"]:
            raise InputError(
                f"source {k} holds {part.attrs['source_variable']!r}, source 0 "
                f"{first.attrs['source_variable']!r}"
            )
        if part.attrs.get("units") != first.attrs.get("units"):
            raise InputError(
                f"source {k} is in {part.attrs.get('units')!r}, source 0 in "
                f"{first.attrs.get('units')!r}"
            )
        grid = Grid(part["y"].values, part["x"].values, part.attrs["crs_wkt"])
        diff = Grid(first["y"].values, first["x"].values, first.attrs["crs_wkt"]).difference(grid)
        if diff:
            raise InputError(f"source {k}: not on the grid of source 0: {diff}")
    sources = list(dict.fromkeys(s for p in parts for s in p.attrs["sources"]))
    if any("source" in p.coords for p in parts):
        parts = [
            p if "source" in p.coords else p.assign_coords(source=("time", [""] * p.sizes["time"]))
            for p in parts
        ]
    out = xr.concat(parts, dim="time", combine_attrs="override").sortby("time")
    times = out["time"].values
    t.check_increasing(times, "the sources")
    out.attrs.update(time_step=t.most_common_step(times), sources=sources)
    return out


def _attrs(
    firsts: list[dict[str, str]], names: list[str], channels: bool, grid: Grid, times: np.ndarray
) -> dict:
    attrs: dict = {}
    if channels:
        units = [a.get("units", "") for a in firsts]
        attrs["units"] = units[0] if len(set(units)) == 1 else ""
        attrs["channel_units"] = units
        attrs["channel_long_names"] = [a.get("long_name", "") for a in firsts]
        for key in ("long_name", "standard_name"):
            values = {a.get(key) for a in firsts}
            if len(values) == 1 and None not in values:
                attrs[key] = values.pop()
    else:
        attrs.update(firsts[0])
        attrs.setdefault("units", "")
    attrs.update(
        crs_wkt=grid.crs_wkt,
        transform=[float(v) for v in grid.transform],
        time_step=t.most_common_step(times),
        source_variable=names if channels else names[0],
    )
    return attrs
