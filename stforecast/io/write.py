"""Forecast writers: CF-1.10 NetCDF-4 and multi-band GeoTIFF, streamed lead by lead, atomically.

`write_forecast(path, template, leads, fmt)` takes the forecast's *template* (an `xr.Dataset`
with every coordinate and attribute; its data variables may be lazy and are never loaded) and an
iterable of leads, one `{variable: (y, x) array}` per valid time, and writes each lead as it
arrives, so memory does not grow with the number of lead times. The file appears under `path`
only when complete (see `stforecast.io.atomic.atomic_path`); any failure, KeyboardInterrupt
included, leaves the previous file at `path` untouched and no temporary file behind. The writers
do not take the output lock: the caller holds `output_lock(path)` around the whole run.

Layouts (docs/operations.md, "Forecast NetCDF" and "Forecast GeoTIFF"):

- **NetCDF**: dimensions `time` (lead), `y`, `x` (the template's names). `time` is the valid
  time, `forecast_reference_time` a scalar and `forecast_period(time)` the lead in `s`; times are
  `seconds since 1970-01-01 00:00:00` in the `proleptic_gregorian` calendar (numpy's calendar, the
  same as `standard` for every date after 1582), stored as int64 when all are whole seconds.
  Each variable is float32, zlib level 4 with shuffle, one chunk per lead `(1, y, x)`,
  `_FillValue = -9999.0`, `grid_mapping="crs"` and
  `coordinates="forecast_reference_time forecast_period"` (plus any 2-D auxiliary coordinates,
  such as `lat lon`, the template has) and, unless given, ACDD's
  `coverage_content_type="modelResult"`. Global attributes are copied; lists and dicts become
  JSON strings (e.g. `geotransform`). `y`/`x` keep their attributes, with standard_name, units
  and axis added where missing; on a grid without a CRS they get no `axis` (CF's X/Y axes are
  georeferenced; the compliance checker fails pixel axes).
- **GeoTIFF**: one file for one variable, band k = lead k (a template with several variables
  raises `ValueError`: write one GeoTIFF per variable, with `template[[name, "crs"]]` and leads
  `{name: array}`); float32, nodata -9999.0, DEFLATE with the floating-point predictor, tiled,
  band-interleaved (so that bands can be written one after the other and GDAL never rewrites a
  compressed block), the template's CRS (as its EPSG code when pyproj identifies one exactly,
  else as WKT) and the `geotransform` attribute as transform (derived from `x`/`y` when absent,
  checked against them when present; rows are kept in the template's order). Band description
  `+PT10M` (the lead as an ISO 8601 duration), band tags `valid_time`, `forecast_reference_time`
  (ISO 8601 `...Z`), `forecast_period` (`PT10M`), `units`; the band's unit type is set too. File
  tags `TIFFTAG_DATETIME` (reference time, `YYYY:MM:DD HH:MM:SS`), `TIFFTAG_SOFTWARE` (the
  `source` attribute), `TIFFTAG_IMAGEDESCRIPTION` (`title`), the variable's name, standard_name,
  long_name and units, and every global attribute (`provenance` included). Written bands wait in
  GDAL's block cache (bounded by `GDAL_CACHEMAX`) until flushed, never in Python.

Why -9999.0 and not NaN as fill value: NaN is legal and xarray and GDAL mask it, but tools and
programs that test `value == _FillValue` (CDO, much Fortran and C code) never match NaN; -9999.0 is
exact in float32, every CF reader masks it (xarray, GDAL, Panoply, ncview), and the IOOS
compliance checker accepts it. NaN in a lead is written as -9999.0 and read back as missing; a
real value of exactly -9999.0 would be read as missing too (no field this tool forecasts takes it).

Failures writing the file itself (disk full, permission denied, HDF5 or GDAL errors) raise
`InputError` (exit 3) naming the path; errors raised by the `leads` iterator pass through
unchanged; a template or leads that do not fit raise `ValueError` (a bug in the caller).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stforecast.errors import InputError
from stforecast.io.atomic import atomic_path, remove_stale_temps

__all__ = [
    "CALENDAR",
    "FILL_VALUE",
    "FORMATS",
    "SUFFIX",
    "TIME_UNITS",
    "iso_duration",
    "write_dataset",
    "write_forecast",
]

FORMATS = ("netcdf", "geotiff")
SUFFIX = {"netcdf": ".nc", "geotiff": ".tif"}

FILL_VALUE = np.float32(-9999.0)
TIME_UNITS = "seconds since 1970-01-01 00:00:00"
CALENDAR = "proleptic_gregorian"
ZLIB_LEVEL = 4

_EPOCH = np.datetime64("1970-01-01T00:00:00", "ns")
_NS = 1_000_000_000
_END = object()
_LEAD_COORDS = ("forecast_period", "forecast_reference_time")
# Attributes that describe an encoding, not the data: never copied from the template.
_ENCODING_ATTRS = {
    "_FillValue",
    "missing_value",
    "scale_factor",
    "add_offset",
    "_Unsigned",
    "coordinates",
    "grid_mapping",
    "units",
    "calendar",
    "dtype",
    "chunksizes",
    "zlib",
    "complevel",
    "shuffle",
    "contiguous",
}


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def write_forecast(
    path: str | os.PathLike[str],
    template: Any,
    leads: Iterable[Mapping[str, np.ndarray]],
    fmt: str = "netcdf",
) -> Path:
    """Write a forecast lead by lead to `path` (NetCDF or GeoTIFF), atomically; returns `path`.

    `template` is an `xr.Dataset` holding the coordinates (`time`, `forecast_period`,
    `forecast_reference_time`, `y`, `x`), the grid-mapping variable and the attributes; its
    `(time, y, x)` data variables say which variables to write and are never loaded. `leads`
    yields, in order, one dict per valid time `{name: (y, x) array}` with every variable; NaN is
    missing. More or fewer leads than times raise `ValueError` and nothing is written.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}: expected one of {', '.join(FORMATS)}")
    path = Path(path)
    layout = _layout(template)
    if fmt == "geotiff" and len(layout.fields) != 1:
        raise ValueError(
            f"a GeoTIFF holds one variable (band k = lead k) but the template has "
            f"{len(layout.fields)}: {', '.join(layout.fields)}; write one file per variable "
            f"with template[[name, {layout.grid_mapping or 'crs'!r}]] and leads {{name: array}}"
        )
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected a file name for the forecast")
    writer_class = _NetCDFWriter if fmt == "netcdf" else _GeoTIFFWriter

    blame = _Blame(path)
    with blame:
        remove_stale_temps(path)
        with atomic_path(path) as tmp:
            writer = writer_class(tmp, template, layout)
            try:
                it = iter(leads)
                for k in range(layout.n):
                    with blame.theirs():
                        lead = next(it, _END)
                    if lead is _END:
                        raise ValueError(
                            f"leads: got {k} lead(s) for {layout.n} valid times; "
                            "nothing was written"
                        )
                    writer.write(k, _check_lead(lead, layout, k))
                with blame.theirs():
                    extra = next(it, _END)
                if extra is not _END:
                    raise ValueError(
                        f"leads: more than {layout.n} leads for {layout.n} valid times; "
                        "nothing was written"
                    )
                writer.close()
            except BaseException:
                writer.abort()
                raise
    return path


def write_dataset(ds: Any, path: str | os.PathLike[str], fmt: str = "netcdf") -> Path:
    """Write a materialised (or dask-backed) forecast Dataset: `write_forecast` of its leads."""
    layout = _layout(ds)

    def leads() -> Iterator[dict[str, np.ndarray]]:
        for k in range(layout.n):
            yield {name: np.asarray(ds[name].isel(time=k).values) for name in layout.fields}

    return write_forecast(path, ds, leads(), fmt)


def iso_duration(ns: int) -> str:
    """ISO 8601 duration of a number of nanoseconds in hours, minutes and seconds: `PT1H30M`,
    `PT10M`, `PT0S`, `-PT5M`, `PT0.5S`."""
    ns = int(ns)
    sign = "-" if ns < 0 else ""
    whole, frac = divmod(abs(ns), _NS)
    hours, rest = divmod(whole, 3600)
    minutes, seconds = divmod(rest, 60)
    text = ""
    if hours:
        text += f"{hours}H"
    if minutes:
        text += f"{minutes}M"
    if seconds or frac or not text:
        text += f"{seconds}.{frac:09d}".rstrip("0").rstrip(".") + "S"
    return f"{sign}PT{text}"


# --------------------------------------------------------------------------------------------
# Template
# --------------------------------------------------------------------------------------------


@dataclass
class _Layout:
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


def _layout(template: Any) -> _Layout:
    if "time" not in template.dims:
        raise ValueError("the forecast template has no `time` dimension (the lead times)")
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

    mappings = {template[f].attrs.get("grid_mapping") for f in fields}
    if len(mappings) > 1:
        raise ValueError(f"template variables have different grid mappings: {mappings}")
    grid_mapping = mappings.pop()
    if grid_mapping is not None:
        grid_mapping = str(grid_mapping)
        if grid_mapping not in template.data_vars or template[grid_mapping].ndim != 0:
            raise ValueError(
                f"grid_mapping {grid_mapping!r} is not a scalar variable of the template"
            )

    n = int(template.sizes["time"])
    valid = _datetimes(template["time"].values, "time")
    if "forecast_reference_time" not in template.coords:
        raise ValueError("the forecast template has no forecast_reference_time coordinate")
    reference = _datetimes(template["forecast_reference_time"].values, "forecast_reference_time")
    if reference.shape != ():
        raise ValueError("forecast_reference_time must be a scalar coordinate")
    reference_ns = int(reference)
    if "forecast_period" in template.coords:
        period = _periods(template["forecast_period"])
        if period.shape != (n,):
            raise ValueError(f"forecast_period must be 1-D along time, got {period.shape}")
        if not np.array_equal(period, valid - reference_ns):
            raise ValueError("forecast_period differs from time - forecast_reference_time")
    else:
        period = valid - reference_ns

    aux = []
    order = ("time", ydim, xdim)
    for name, coord in template.coords.items():
        if name in order or name in _LEAD_COORDS:
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
    return _Layout(
        fields=fields,
        ydim=ydim,
        xdim=xdim,
        ny=int(template.sizes[ydim]),
        nx=int(template.sizes[xdim]),
        n=n,
        grid_mapping=grid_mapping,
        aux=aux,
        valid_ns=valid,
        reference_ns=reference_ns,
        period_ns=period,
    )


def _datetimes(values: np.ndarray, name: str) -> np.ndarray:
    values = np.asarray(values)
    if values.dtype.kind != "M":
        raise ValueError(f"{name} must hold datetime64 values, got {values.dtype}")
    values = values.astype("datetime64[ns]")
    if np.isnat(values).any():
        raise ValueError(f"{name} has missing (NaT) values")
    return (values - _EPOCH).astype(np.int64)


def _periods(coord: Any) -> np.ndarray:
    values = np.asarray(coord.values)
    if values.dtype.kind == "m":
        values = values.astype("timedelta64[ns]")
        if np.isnat(values).any():
            raise ValueError("forecast_period has missing (NaT) values")
        return values.astype(np.int64)
    if values.dtype.kind in "iuf" and coord.attrs.get("units") in ("s", "seconds"):
        return np.round(values.astype(np.float64) * _NS).astype(np.int64)
    raise ValueError(f"forecast_period must be timedelta64 or seconds, got {values.dtype}")


def _check_lead(lead: Any, layout: _Layout, k: int) -> dict[str, np.ndarray]:
    """The lead's arrays as float32 with NaN replaced by the fill value."""
    if not isinstance(lead, Mapping):
        raise ValueError(f"lead {k}: expected a dict {{variable: array}}, got {type(lead)}")
    keys = set(lead)
    if keys != set(layout.fields):
        missing = sorted(set(layout.fields) - keys)
        extra = sorted(map(str, keys - set(layout.fields)))
        raise ValueError(
            f"lead {k}: variables differ from the template (missing {missing}, extra {extra})"
        )
    out = {}
    for name in layout.fields:
        values = np.asarray(lead[name], dtype=np.float32)
        if values.shape != (layout.ny, layout.nx):
            raise ValueError(
                f"lead {k}: {name} has shape {values.shape}, expected {(layout.ny, layout.nx)}"
            )
        out[name] = np.where(np.isnan(values), FILL_VALUE, values)
    return out


# --------------------------------------------------------------------------------------------
# Attributes and times
# --------------------------------------------------------------------------------------------


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def _attr(value: Any, numeric_lists: bool) -> Any:
    """A value netCDF can store: strings and numbers as they are, lists and dicts as JSON text
    (numeric lists as arrays when `numeric_lists`: CF wants e.g. `standard_parallel` numeric),
    booleans as JSON `true`/`false`; None is dropped."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, np.bool_)):
        return json.dumps(bool(value))
    if isinstance(value, (int, float, np.integer, np.floating)):
        return value
    if isinstance(value, np.datetime64):
        return _iso(int((value.astype("datetime64[ns]") - _EPOCH).astype(np.int64)))
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return _attr(value[()], numeric_lists)
    if isinstance(value, (list, tuple, np.ndarray)):
        array = np.asarray(value) if len(value) else None
        numeric = array is not None and array.ndim == 1 and array.dtype.kind in "iuf"
        if numeric and (numeric_lists or isinstance(value, np.ndarray)):
            return array
    if isinstance(value, (list, tuple, dict, np.ndarray)):
        return json.dumps(value, default=_json_default)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def _attrs(attrs: Mapping[str, Any], numeric_lists: bool = True, skip: Iterable[str] = ()) -> dict:
    skip = set(skip)
    out = {}
    for key, value in attrs.items():
        if key in skip:
            continue
        value = _attr(value, numeric_lists)
        if value is not None:
            out[str(key)] = value
    return out


def _iso(ns: int) -> str:
    """ISO 8601 UTC time `2024-01-01T00:10:00Z` of ns since the epoch (ms when not whole s)."""
    unit = "s" if ns % _NS == 0 else "ms"
    return np.datetime_as_string(_EPOCH + np.timedelta64(ns, "ns"), unit=unit) + "Z"


def _tiff_datetime(ns: int) -> str:
    text = np.datetime_as_string(_EPOCH + np.timedelta64(ns, "ns"), unit="s")
    return text.replace("-", ":").replace("T", " ")


# --------------------------------------------------------------------------------------------
# Error attribution
# --------------------------------------------------------------------------------------------


class _Blame:
    """Turns errors of the writing itself into `InputError` naming the file, but lets errors
    raised by the caller's `leads` iterator (inside `theirs()`) pass unchanged."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.theirs_error: BaseException | None = None

    @contextlib.contextmanager
    def theirs(self) -> Iterator[None]:
        try:
            yield
        except BaseException as err:
            self.theirs_error = err
            raise

    def __enter__(self) -> _Blame:
        return self

    def __exit__(self, kind: type | None, err: BaseException | None, tb: Any) -> bool:
        if err is None or err is self.theirs_error or not isinstance(err, _library_errors()):
            return False
        reason = getattr(err, "strerror", None) or " ".join(str(err).split())
        raise InputError(f"{self.path}: cannot write the forecast ({reason})") from err


def _library_errors() -> tuple[type[BaseException], ...]:
    from rasterio.errors import RasterioError

    return (OSError, RuntimeError, RasterioError)


# --------------------------------------------------------------------------------------------
# NetCDF
# --------------------------------------------------------------------------------------------


class _NetCDFWriter:
    """netCDF4 directly: every call holds the HDF5 lock the readers share, so a dask thread
    reading input frames for the next lead never runs HDF5 at the same time."""

    def __init__(self, tmp: Path, template: Any, layout: _Layout) -> None:
        import netCDF4

        from stforecast.io.netcdf import LOCK

        self.lock = LOCK
        self.layout = layout
        self.nc = None
        with self.lock:
            self.nc = netCDF4.Dataset(tmp, "w", format="NETCDF4")
        try:
            with self.lock:
                self._define(template)
        except BaseException:
            self.abort()
            raise

    def _define(self, template: Any) -> None:
        nc, lay = self.nc, self.layout
        nc.set_fill_off()  # every value is written; no need to prefill
        attrs = _attrs(template.attrs, numeric_lists=False)
        attrs.setdefault("Conventions", "CF-1.10, ACDD-1.3")
        if lay.n:
            attrs.setdefault("time_coverage_start", _iso(int(lay.valid_ns[0])))
            attrs.setdefault("time_coverage_end", _iso(int(lay.valid_ns[-1])))
        nc.setncatts(attrs)

        nc.createDimension("time", lay.n)
        nc.createDimension(lay.ydim, lay.ny)
        nc.createDimension(lay.xdim, lay.nx)

        whole = all(
            int(v) % _NS == 0
            for v in (*lay.valid_ns.tolist(), lay.reference_ns, *lay.period_ns.tolist())
        )
        dtype = "i8" if whole else "f8"

        def seconds(ns: Any) -> np.ndarray:
            ns = np.asarray(ns, dtype=np.int64)
            return ns // _NS if whole else ns / _NS

        time = nc.createVariable("time", dtype, ("time",), fill_value=False)
        time.setncatts(
            {
                "long_name": "valid time",
                **_attrs(template["time"].attrs, skip=_ENCODING_ATTRS),
                "standard_name": "time",
                "axis": "T",
                "units": TIME_UNITS,
                "calendar": CALENDAR,
            }
        )
        time[:] = seconds(lay.valid_ns)

        reference = nc.createVariable("forecast_reference_time", dtype, (), fill_value=False)
        reference.setncatts(
            {
                "long_name": "forecast reference time (valid time of the last input frame)",
                **_attrs(template["forecast_reference_time"].attrs, skip=_ENCODING_ATTRS),
                "standard_name": "forecast_reference_time",
                "units": TIME_UNITS,
                "calendar": CALENDAR,
            }
        )
        reference.assignValue(seconds(lay.reference_ns))

        period = nc.createVariable("forecast_period", dtype, ("time",), fill_value=False)
        period_attrs = (
            template["forecast_period"].attrs if "forecast_period" in template.coords else {}
        )
        period.setncatts(
            {
                "long_name": "forecast period (lead time)",
                **_attrs(period_attrs, skip=_ENCODING_ATTRS),
                "standard_name": "forecast_period",
                "units": "s",
            }
        )
        period[:] = seconds(lay.period_ns)

        mapping = self._grid_mapping(template)
        for dim, axis in ((lay.ydim, "Y"), (lay.xdim, "X")):
            coord = template[dim]
            values = np.asarray(coord.values)
            kind = "f8" if values.dtype.kind != "f" else values.dtype.str[1:]
            var = nc.createVariable(dim, kind, (dim,), fill_value=False)
            var.setncatts(_coord_attrs(coord.attrs, axis, mapping))
            var[:] = values

        for name in lay.aux:
            coord = template[name]
            values = np.asarray(coord.values)
            var = nc.createVariable(name, values.dtype.str[1:], coord.dims, fill_value=False)
            var.setncatts(_attrs(coord.attrs, skip={"_FillValue", "missing_value"}))
            if values.ndim:
                var[:] = values
            else:
                var.assignValue(values)

        coordinates = " ".join([*_LEAD_COORDS[::-1], *lay.aux])
        self.vars = {}
        for name in lay.fields:
            var = nc.createVariable(
                name,
                "f4",
                ("time", lay.ydim, lay.xdim),
                zlib=True,
                complevel=ZLIB_LEVEL,
                shuffle=True,
                chunksizes=(1, lay.ny, lay.nx),
                fill_value=FILL_VALUE,
            )
            attrs = _attrs(template[name].attrs, skip=_ENCODING_ATTRS - {"units"})
            attrs.setdefault("coverage_content_type", "modelResult")  # ACDD-1.3
            attrs["coordinates"] = coordinates
            if lay.grid_mapping is not None:
                attrs["grid_mapping"] = lay.grid_mapping
            var.setncatts(attrs)
            var.set_auto_maskandscale(False)  # NaN was replaced by the fill value already
            self.vars[name] = var

    def _grid_mapping(self, template: Any) -> dict | None:
        lay = self.layout
        if lay.grid_mapping is None:
            return None
        attrs = _attrs(template[lay.grid_mapping].attrs, skip={"_FillValue", "missing_value"})
        if "crs_wkt" not in attrs:
            from stforecast.io.crs import wkt_from_cf

            attrs["crs_wkt"] = wkt_from_cf(template[lay.grid_mapping].attrs)
        var = self.nc.createVariable(lay.grid_mapping, "i4", (), fill_value=False)
        var.setncatts(attrs)
        var.assignValue(0)
        return attrs

    def write(self, k: int, lead: dict[str, np.ndarray]) -> None:
        with self.lock:
            for name, values in lead.items():
                self.vars[name][k, :, :] = values

    def close(self) -> None:
        with self.lock:
            nc, self.nc = self.nc, None
            nc.close()

    def abort(self) -> None:
        if self.nc is not None:
            with contextlib.suppress(Exception), self.lock:
                self.nc.close()
            self.nc = None


def _coord_attrs(attrs: Mapping[str, Any], axis: str, mapping: Mapping[str, Any] | None) -> dict:
    """A 1-D grid coordinate's attributes, with `axis` and CF's standard_name and units filled in
    where the template lacks them. A grid without a CRS (pixel coordinates) gets no standard_name
    and no `axis`: CF's X/Y axes are georeferenced horizontal coordinates, and the compliance
    checker fails X/Y axes that are neither latitude/longitude nor tied to a grid mapping."""
    out = _attrs(attrs, skip={"_FillValue", "missing_value"})
    if mapping is None:
        out.pop("axis", None)
        return out
    if mapping.get("grid_mapping_name") == "latitude_longitude":
        name = "latitude" if axis == "Y" else "longitude"
        out.setdefault("standard_name", name)
        out.setdefault("units", f"degrees_{'north' if axis == 'Y' else 'east'}")
    else:
        out.setdefault("standard_name", f"projection_{axis.lower()}_coordinate")
        out.setdefault("units", "m")
    out.setdefault("axis", axis)
    return out


# --------------------------------------------------------------------------------------------
# GeoTIFF
# --------------------------------------------------------------------------------------------


def _block(size: int) -> int:
    """Tile edge: 256, or the size rounded up to a multiple of 16 (TIFF's rule) when smaller."""
    return min(256, 16 * math.ceil(size / 16))


class _GeoTIFFWriter:
    def __init__(self, tmp: Path, template: Any, layout: _Layout) -> None:
        import rasterio
        from rasterio.transform import Affine

        self.layout = layout
        self.name = layout.fields[0]
        self.dst = None
        var_attrs = template[self.name].attrs
        self.units = str(var_attrs.get("units", ""))
        self.reference = _iso(layout.reference_ns)
        # No .aux.xml sidecar next to the temporary name: everything fits in the TIFF's tags.
        self.env = rasterio.Env(GDAL_PAM_ENABLED="NO")
        self.env.__enter__()
        self.env_open = True
        transform = Affine(*_geotransform(template, layout))
        try:
            with warnings.catch_warnings():
                # pixel space (a source without coordinates) is meant: no warning on the terminal
                warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
                self.dst = rasterio.open(
                    tmp,
                    "w",
                    driver="GTiff",
                    width=layout.nx,
                    height=layout.ny,
                    count=layout.n,
                    dtype="float32",
                    crs=_rasterio_crs(template, layout),
                    transform=transform,
                    nodata=float(FILL_VALUE),
                    compress="deflate",
                    predictor=3,
                    tiled=True,
                    blockxsize=_block(layout.nx),
                    blockysize=_block(layout.ny),
                    interleave="band",
                    bigtiff="if_safer",
                )
            tags = _attrs(template.attrs, numeric_lists=False)
            tags = {
                k: v if isinstance(v, str) else json.dumps(v, default=_json_default)
                for k, v in tags.items()
            }
            tags["variable"] = self.name
            for key in ("standard_name", "long_name", "units"):
                if key in var_attrs:
                    tags[key] = str(var_attrs[key])
            tags["forecast_reference_time"] = self.reference
            tags["TIFFTAG_DATETIME"] = _tiff_datetime(layout.reference_ns)
            from stforecast import __version__

            tags["TIFFTAG_SOFTWARE"] = str(
                template.attrs.get("source", f"stforecast {__version__}")
            )
            if "title" in template.attrs:
                tags["TIFFTAG_IMAGEDESCRIPTION"] = str(template.attrs["title"])
            self.dst.update_tags(**tags)
        except BaseException:
            self.abort()
            raise

    def write(self, k: int, lead: dict[str, np.ndarray]) -> None:
        band = k + 1
        period = int(self.layout.period_ns[k])
        self.dst.write(lead[self.name], band)
        self.dst.set_band_description(
            band, ("-" if period < 0 else "+") + iso_duration(period).lstrip("-")
        )
        self.dst.set_band_unit(band, self.units)
        self.dst.update_tags(
            band,
            valid_time=_iso(int(self.layout.valid_ns[k])),
            forecast_reference_time=self.reference,
            forecast_period=iso_duration(period),
            units=self.units,
        )

    def close(self) -> None:
        dst, self.dst = self.dst, None
        try:
            dst.close()
        finally:
            self._exit_env()

    def abort(self) -> None:
        if self.dst is not None:
            with contextlib.suppress(Exception):
                self.dst.close()
            self.dst = None
        self._exit_env()

    def _exit_env(self) -> None:
        if self.env_open:
            self.env_open = False
            self.env.__exit__(None, None, None)


def _rasterio_crs(template: Any, layout: _Layout) -> Any:
    """The template's CRS for GDAL: its EPSG code when pyproj identifies one exactly (GeoTIFF
    keys every reader understands), else its WKT; None without a grid mapping."""
    if layout.grid_mapping is None:
        return None
    import pyproj
    from rasterio.crs import CRS

    from stforecast.io.crs import wkt_from_cf

    wkt = wkt_from_cf(template[layout.grid_mapping].attrs)
    epsg = pyproj.CRS.from_wkt(wkt).to_epsg(min_confidence=100)
    return CRS.from_epsg(epsg) if epsg else CRS.from_wkt(wkt)


def _geotransform(template: Any, layout: _Layout) -> list[float]:
    """The `geotransform` attribute (a list of 6, or its JSON), checked against the cell
    centres; derived from them when absent."""
    from stforecast.io.grid import Grid

    y = np.asarray(template[layout.ydim].values, dtype=np.float64)
    x = np.asarray(template[layout.xdim].values, dtype=np.float64)
    derived = Grid(y=y, x=x, crs_wkt="").transform
    given = template.attrs.get("geotransform")
    if given is None:
        return derived
    if isinstance(given, str):
        given = json.loads(given)
    given = [float(v) for v in np.asarray(given, dtype=np.float64).ravel()]
    if len(given) != 6:
        raise ValueError(f"geotransform must have 6 numbers, got {len(given)}")
    if given[1] == 0 and given[3] == 0 and (layout.nx > 1 and layout.ny > 1):
        a, c, e, f = given[0], given[2], given[4], given[5]
        tol = 1e-3 * max(abs(a), abs(e))
        if not (
            abs(a - derived[0]) <= tol
            and abs(e - derived[4]) <= tol
            and abs(c + a / 2 - x[0]) <= tol
            and abs(f + e / 2 - y[0]) <= tol
        ):
            raise ValueError(
                f"the geotransform attribute {given} does not match the x/y coordinates "
                f"(which give {derived})"
            )
    return given
