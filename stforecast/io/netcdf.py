"""NetCDF (classic and NetCDF-4/HDF5) headers and frames, through netCDF4 directly.

netCDF4 rather than `xarray.open_dataset` because a day of per-frame radar files must open in well
under a second per hundred files, and because packing, fill values and times are decoded here
exactly once, the same way for every layout. All library calls hold the HDF5 lock: the HDF5
library is not thread-safe and dask reads frames from several threads.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Any

import netCDF4
import numpy as np
from pyproj.exceptions import CRSError

from stforecast.errors import InputError
from stforecast.io import crs as crs_mod
from stforecast.io import times as t
from stforecast.io.frames import FrameRef, ScannedFile, Variable
from stforecast.io.grid import PIXEL_SPACE, Grid, pixel_centres
from stforecast.io.handles import HandleCache
from stforecast.io.packing import Packing

try:  # share xarray's lock, so our reads never overlap an xarray NetCDF write in another thread
    from xarray.backends.locks import HDF5_LOCK as LOCK
except ImportError:  # pragma: no cover - older or newer xarray layouts
    LOCK = threading.Lock()

X_STANDARD = {"projection_x_coordinate", "longitude", "grid_longitude"}
Y_STANDARD = {"projection_y_coordinate", "latitude", "grid_latitude"}
X_NAMES = {"x", "lon", "long", "longitude", "xc", "easting", "rlon", "west_east", "nx", "cols"}
Y_NAMES = {"y", "lat", "latitude", "yc", "northing", "rlat", "south_north", "ny", "rows"}
LON_UNITS = {"degrees_east", "degree_east", "degree_e", "degrees_e", "degreee", "degreese"}
LAT_UNITS = {"degrees_north", "degree_north", "degree_n", "degrees_n", "degreen", "degreesn"}
SCALAR_TIME_NAMES = ("valid_time", "time")

MAX_CHUNK_CACHE = 256 * 2**20


def axis_attrs(dim: str, axis: str, units: str, standard: str) -> dict[str, str]:
    """CF attributes of coordinate `dim` on `axis` ("x"/"y"): its own standard name, else one
    inferred from degree units or the names lon/lat, else a projection coordinate."""
    squashed = units.lower().replace(" ", "")
    if not standard:
        if squashed in LON_UNITS or (axis == "x" and dim.lower() in ("lon", "longitude")):
            standard = "longitude"
        elif squashed in LAT_UNITS or (axis == "y" and dim.lower() in ("lat", "latitude")):
            standard = "latitude"
        else:
            standard = f"projection_{axis}_coordinate"
    out = {"standard_name": standard}
    if units:
        out["units"] = units
    return out


def placed_grid(wkt: str, y: tuple[np.ndarray, dict], x: tuple[np.ndarray, dict]) -> Grid:
    """The grid of (values, attrs) coordinates `y`, `x` in `wkt`: WGS 84 for longitude/latitude
    axes without a CRS, and coordinates in another length unit than the CRS's (BOM: km on an
    Albers CRS in metres) brought to the CRS's unit."""
    (y_values, y_attrs), (x_values, x_attrs) = y, x
    lonlat = x_attrs.get("standard_name") == "longitude" and (
        y_attrs.get("standard_name") == "latitude"
    )
    if not wkt and lonlat:
        wkt = crs_mod.LONLAT_WKT
    factor = crs_mod.crs_unit_factor(wkt)
    for values, attrs in ((x_values, x_attrs), (y_values, y_attrs)):
        own = crs_mod.length_unit_factor(attrs.get("units"))
        if factor and own and own != factor:
            values *= own / factor
            attrs["units"] = crs_mod.projected_units(wkt)
    return Grid(y_values, x_values, wkt, x_attrs, y_attrs)


class _Handle:
    """An open dataset and the variables whose chunk cache was already sized."""

    def __init__(self, path: str) -> None:
        self.ds = netCDF4.Dataset(path, "r")
        self.sized: set[str] = set()

    def close(self) -> None:
        self.ds.close()


HANDLES = HandleCache(_Handle, size=8)


def scan(path: Path, wanted: set[str] | None, time_pattern: str | None) -> ScannedFile:
    """Describe the variables of `path` (all candidates when `wanted` is None) without reading
    data: coordinates, scalar times and attributes only."""
    with LOCK:
        try:
            ds = netCDF4.Dataset(path, "r")
        except (OSError, RuntimeError, ValueError) as err:
            reason = " ".join(str(err).split())
            raise InputError(f"{path}: not a readable NetCDF file ({reason})") from err
        try:
            _check_complete(ds, path)
            return _Scanner(ds, path, time_pattern).scan(wanted)
        except (OSError, RuntimeError) as err:  # a header that opens but fails to read
            reason = " ".join(str(err).split())
            raise InputError(f"{path}: cannot read the NetCDF header ({reason})") from err
        finally:
            ds.close()


def _check_complete(ds: Any, path: Path) -> None:
    """Classic-format files cut short open and even read (as fill values); their data cannot be
    smaller than the variables' sizes, so compare with the file's size. (HDF5 checks its own
    end-of-file address at open.)"""
    if not ds.data_model.startswith("NETCDF3"):
        return
    fixed = record = 0
    numrecs = 0
    for var in ds.variables.values():
        dims = [ds.dimensions[d] for d in var.dimensions]
        if dims and dims[0].isunlimited():
            numrecs = len(dims[0])
            record += int(np.prod([len(d) for d in dims[1:]])) * var.dtype.itemsize
        else:
            fixed += -(-int(np.prod([len(d) for d in dims])) * var.dtype.itemsize // 4) * 4
    needed = fixed + numrecs * record
    size = path.stat().st_size
    if size < needed:
        raise InputError(f"{path}: truncated NetCDF ({size} bytes, its variables need {needed})")


def read(ref: FrameRef, ys: slice, xs: slice) -> np.ndarray:
    """One frame's window, decoded to float32 with NaN."""
    with LOCK:
        if ref.cached:
            with HANDLES.use(ref.path) as handle:
                raw = _read_raw(handle, ref, ys, xs)
        else:
            handle = _Handle(ref.path)
            try:
                raw = _read_raw(handle, ref, ys, xs)
            finally:
                handle.close()
    return ref.packing.apply(raw)


def _read_raw(handle: _Handle, ref: FrameRef, ys: slice, xs: slice) -> np.ndarray:
    var = handle.ds.variables[ref.variable]
    var.set_auto_maskandscale(False)
    if ref.cached and ref.variable not in handle.sized:
        _size_chunk_cache(var)
        handle.sized.add(ref.variable)
    index, ypos, xpos = ref.index
    key = list(index)
    key[ypos], key[xpos] = ys, xs
    raw = np.asarray(var[tuple(key)])
    return raw.T if ypos > xpos else raw


def _size_chunk_cache(var: Any) -> None:
    """Let the HDF5 chunk cache hold the chunks of two frames' worth of chunk rows, so that chunks
    spanning several frames (KNMI: 31) are inflated once, not once per frame, even when a window
    of frames crosses a chunk boundary. Bounded by `MAX_CHUNK_CACHE`, whatever the frame count."""
    chunking = var.chunking()
    if not isinstance(chunking, list) or var.ndim < 2:
        return
    per_chunk = int(np.prod(chunking)) * var.dtype.itemsize
    spatial = [math.ceil(s / c) for s, c in zip(var.shape[-2:], chunking[-2:], strict=True)]
    needed = per_chunk * int(np.prod(spatial))
    size, nelems, preemption = var.get_var_chunk_cache()
    wanted = min(MAX_CHUNK_CACHE, int(needed * 2))
    if wanted > size:
        var.set_var_chunk_cache(size=wanted, nelems=max(nelems, 1009), preemption=preemption)


class _Scanner:
    def __init__(self, ds: Any, path: Path, time_pattern: str | None) -> None:
        self.ds = ds
        self.path = path
        self.time_pattern = time_pattern
        self.vars = ds.variables
        self.global_attrs = {k: ds.getncattr(k) for k in ds.ncattrs()}
        self._axes: dict[str, str | None] = {}

    def scan(self, wanted: set[str] | None) -> ScannedFile:
        referenced = self._referenced()
        spatial: dict[str, tuple[str, str, str | None]] = {}
        others: list[str] = []
        for name, var in self.vars.items():
            if var.dimensions == (name,) or var.ndim < 2 or var.dtype.kind not in "iufb":
                others.append(name)
                continue
            layout = self._layout(var)
            if layout is None:
                others.append(name)
            else:
                spatial[name] = layout
        candidates = [n for n in spatial if n not in referenced]
        chosen = candidates if wanted is None else [n for n in spatial if n in wanted]
        variables = {n: self._describe(n, *spatial[n]) for n in chosen}
        # `others`: names that exist but that `variable=None` never picks, for error messages.
        return ScannedFile(
            str(self.path),
            variables,
            candidates,
            others=[n for n in spatial if n not in candidates] + others,
        )

    def _referenced(self) -> set[str]:
        """Auxiliary coordinates, bounds, grid mappings and ancillary variables: not the data."""
        names: set[str] = set()
        for var in self.vars.values():
            attrs = var.__dict__
            for key in ("coordinates", "bounds", "ancillary_variables", "grid_mapping"):
                value = attrs.get(key)
                if isinstance(value, str):
                    names.update(w.rstrip(":") for w in value.split())
        return names

    def _axis(self, dim: str) -> str | None:
        if dim not in self._axes:
            self._axes[dim] = self._guess_axis(dim)
        return self._axes[dim]

    def _guess_axis(self, dim: str) -> str | None:
        var = self.vars.get(dim)
        if var is not None and var.dimensions == (dim,):
            attrs = var.__dict__
            standard = str(attrs.get("standard_name", "")).lower()
            axis = str(attrs.get("axis", "")).upper()
            units = str(attrs.get("units", "")).lower().replace(" ", "")
            if standard in X_STANDARD or axis == "X" or units in LON_UNITS:
                return "x"
            if standard in Y_STANDARD or axis == "Y" or units in LAT_UNITS:
                return "y"
            if t.is_time_units(attrs.get("units")) or axis == "T":
                return "t"
        name = dim.lower()
        if name in X_NAMES:
            return "x"
        if name in Y_NAMES:
            return "y"
        return None

    def _layout(self, var: Any) -> tuple[str, str, str | None] | None:
        """(y dim, x dim, frame dim or None) of a variable, or None when it is not a stack of 2-D
        frames (no spatial pair, or more than one non-spatial dimension longer than 1)."""
        dims = var.dimensions
        ys = [d for d in dims if self._axis(d) == "y"]
        xs = [d for d in dims if self._axis(d) == "x"]
        if len(ys) == 1 and len(xs) == 1:
            ydim, xdim = ys[0], xs[0]
        elif not ys and not xs and self._axis(dims[-1]) is None and self._axis(dims[-2]) is None:
            ydim, xdim = dims[-2], dims[-1]  # CF order (..., Y, X) when nothing says otherwise
        else:
            return None
        rest = [d for d in dims if d not in (ydim, xdim)]
        long = [d for d in rest if len(self.ds.dimensions[d]) > 1]
        if len(long) > 1:
            return None
        if long:
            return ydim, xdim, long[0]
        return ydim, xdim, rest[0] if rest else None

    def _describe(self, name: str, ydim: str, xdim: str, frame_dim: str | None) -> Variable:
        var = self.vars[name]
        attrs = var.__dict__
        grid = self._grid(var, ydim, xdim)
        n = len(self.ds.dimensions[frame_dim]) if frame_dim else 1
        times, note = self._times(var, frame_dim, n)
        packing = _packing(attrs)
        ypos, xpos = var.dimensions.index(ydim), var.dimensions.index(xdim)
        refs = []
        for k in range(n):
            index = tuple(
                None if d in (ydim, xdim) else (k if d == frame_dim else 0) for d in var.dimensions
            )
            refs.append(
                FrameRef(read, str(self.path), name, (index, ypos, xpos), packing, cached=n > 1)
            )
        out_attrs = {"units": _text(attrs.get("units"))}
        for key in ("long_name", "standard_name"):
            if isinstance(attrs.get(key), str):
                out_attrs[key] = attrs[key]
        return Variable(name, str(self.path), grid, refs, times, note, out_attrs)

    # -- grid ---------------------------------------------------------------------------------

    def _grid(self, var: Any, ydim: str, xdim: str) -> Grid:
        return placed_grid(self._crs(var), self._coordinate(ydim, "y"), self._coordinate(xdim, "x"))

    def _coordinate(self, dim: str, axis: str) -> tuple[np.ndarray, dict]:
        var = self.vars.get(dim)
        n = len(self.ds.dimensions[dim])
        if var is None or var.dimensions != (dim,) or var.dtype.kind not in "iuf":
            return pixel_centres(n), {"long_name": f"{axis} {PIXEL_SPACE}"}
        values = np.ma.filled(np.ma.asarray(var[:], dtype=np.float64), np.nan).astype(np.float64)
        if not np.all(np.isfinite(values)):
            raise InputError(f"{self.path}: coordinate {dim!r} has missing values")
        return values, axis_attrs(dim, axis, _text(var.__dict__.get("units")),
                                  str(var.__dict__.get("standard_name", "")))  # fmt: skip

    def _crs(self, var: Any) -> str:
        """WKT2 from the grid mapping, else a proj/WKT attribute of the variable or the file;
        `""` when there is none."""
        attrs = var.__dict__
        mapping = attrs.get("grid_mapping")
        if isinstance(mapping, str) and mapping.strip():
            gm_name = mapping.split()[0].rstrip(":")
            gm = self.vars.get(gm_name)
            if gm is not None:
                try:
                    return crs_mod.wkt_from_cf(gm.__dict__)
                except (CRSError, KeyError, ValueError, TypeError) as err:
                    raise InputError(
                        f"{self.path}: grid mapping {gm_name!r} of {var.name!r} is not a CRS "
                        f"pyproj understands ({' '.join(str(err).split())})"
                    ) from err
        for where, source in (("variable", attrs), ("global", self.global_attrs)):
            try:
                found = crs_mod.wkt_from_loose_attrs(source)
            except CRSError as err:
                raise InputError(
                    f"{self.path}: {where} CRS attribute of {var.name!r} is not a CRS pyproj "
                    f"understands ({' '.join(str(err).split())})"
                ) from err
            if found:
                return found[1]
        return ""

    # -- times --------------------------------------------------------------------------------

    def _times(self, var: Any, frame_dim: str | None, n: int) -> tuple[np.ndarray | None, str]:
        coord = self.vars.get(frame_dim) if frame_dim else None
        has_coord = coord is not None and coord.dimensions == (frame_dim,)
        if n > 1 or (has_coord and not self.time_pattern):
            if not has_coord:
                return None, f"dimension {frame_dim!r} has no coordinate variable"
            if not t.is_time_units(coord.__dict__.get("units")):
                return None, f"coordinate {frame_dim!r} has no CF time units ('... since ...')"
            return self._decode(coord, f"coordinate {frame_dim!r}")
        if self.time_pattern:
            return t.time_from_name(self.path, [self.time_pattern])
        looked = []
        scalar, note = self._scalar_times(var)
        if scalar is not None:
            return scalar, note
        looked.append(note)
        for where, source in (("variable", var.__dict__), ("global", self.global_attrs)):
            found = _time_from_attrs(source)
            if found is not None:
                return np.array([found[1]]), f"{where} attribute {found[0]!r}"
        looked.append("attributes " + "/".join(t.TIME_KEYS))
        named, note = t.time_from_name(self.path, t.AUTO_PATTERNS)
        if named is not None:
            return named, note
        looked.append(note)
        return None, "; ".join(looked)

    def _scalar_times(self, var: Any) -> tuple[np.ndarray | None, str]:
        names = list(SCALAR_TIME_NAMES)
        coords = var.__dict__.get("coordinates")
        if isinstance(coords, str):
            names += coords.split()
        names += [n for n, v in self.vars.items() if v.__dict__.get("standard_name") == "time"]
        for name in dict.fromkeys(names):
            tv = self.vars.get(name)
            if tv is None or tv.size != 1 or not t.is_time_units(tv.__dict__.get("units")):
                continue
            return self._decode(tv, f"scalar variable {name!r}")
        return None, "scalar time variables (valid_time, time, standard_name=time)"

    def _decode(self, tv: Any, where: str) -> tuple[np.ndarray, str]:
        attrs = tv.__dict__
        units = attrs.get("units")
        if not t.is_time_units(units):
            raise InputError(f"{self.path}: {where} has no CF time units ('... since ...')")
        tv.set_auto_maskandscale(False)
        values = np.asarray(tv[...]).reshape(-1)
        try:
            return t.decode_cf(values, units, attrs.get("calendar")), where
        except ValueError as err:
            raise InputError(f"{self.path}: cannot decode the times of {where}: {err}") from err


def _time_from_attrs(attrs: dict) -> tuple[str, np.datetime64] | None:
    lowered = {k.lower(): v for k, v in attrs.items()}
    for key in t.TIME_KEYS:
        value = lowered.get(key)
        if isinstance(value, str):
            found = t.parse_time_string(value)
            if found is not None:
                return key, found
    return None


def _packing(attrs: dict) -> Packing:
    fills: list[float] = []
    for key in ("_FillValue", "missing_value"):
        if key in attrs:
            values = np.atleast_1d(attrs[key])
            if values.dtype.kind in "iufb":
                fills += [float(v) for v in values]
    low, high = attrs.get("valid_min"), attrs.get("valid_max")
    if "valid_range" in attrs and np.size(attrs["valid_range"]) == 2:
        low, high = np.asarray(attrs["valid_range"]).tolist()
    unsigned = str(attrs.get("_Unsigned", "")).lower() == "true"
    return Packing(
        scale=float(np.asarray(attrs.get("scale_factor", 1.0)).ravel()[0]),
        offset=float(np.asarray(attrs.get("add_offset", 0.0)).ravel()[0]),
        fills=tuple(fills),
        valid_min=None if low is None else float(np.asarray(low).ravel()[0]),
        valid_max=None if high is None else float(np.asarray(high).ravel()[0]),
        unsigned=unsigned,
    )


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""
