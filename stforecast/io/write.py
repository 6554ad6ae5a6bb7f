"""Forecast writers: CF-1.10 NetCDF-4, multi-band GeoTIFF and Cloud-Optimized GeoTIFF, streamed
lead by lead, atomically.

`write_forecast(path, template, leads, fmt)` takes the forecast's *template* (an `xr.Dataset`
with every coordinate and attribute; its data variables may be lazy and are never loaded) and an
iterable of leads, one `{variable: (y, x) array}` per valid time, and writes each lead as it
arrives, so memory does not grow with the number of lead times. The file appears under `path`
only when complete (see `stforecast.io.atomic.atomic_path`); any failure, KeyboardInterrupt
included, leaves the previous file at `path` untouched and no temporary file behind. The writers
do not take the output lock: the caller holds `output_lock(path)` around the whole run. What is at
`path` is replaced only if it is a forecast stforecast wrote (`stforecast.io.target`), checked
before writing and again just before the rename; a symbolic link to one is followed.

One module per format (`netcdf_write`, `geotiff_write`, which writes COGs too) over the shared
`layout` of a template; the CF attributes both use come from `stforecast.io.cf`. Both add what
depends on the file rather than on the forecast: the grid's ACDD extent (`geospatial_lat_min`,
..., `geospatial_bounds`, from the grid written), and the `provenance`'s input files and run
directory as paths relative to the file's directory (no absolute path of this machine in a
forecast file).

Layouts (docs/operations.md, "Forecast NetCDF" and "Forecast GeoTIFF"):

- **NetCDF**: dimensions `time` (lead), `y`, `x` (the template's names). `time` is the valid
  time, `forecast_reference_time` a scalar and `forecast_period(time)` the lead in `s`; times are
  `seconds since 1970-01-01 00:00:00` in the `proleptic_gregorian` calendar (numpy's calendar, the
  same as `standard` for every date after 1582), stored as int64 when all are whole seconds.
  Each variable is float32, zlib level 4 with shuffle, one chunk per lead `(1, y, x)`,
  `_FillValue = -9999.0`, `grid_mapping="crs"` and
  `coordinates="forecast_reference_time forecast_period"` (plus any 2-D auxiliary coordinates,
  such as `lat lon`, the template has; written compressed) and, unless given, ACDD's
  `coverage_content_type="modelResult"`. A variable whose `cell_methods` say its values stand
  for time intervals (`time: sum`, `time: mean`) gets `time:bounds = "time_bnds"` and
  `time_bnds(time, nv)`, from the previous valid time (the reference time for the first) to each
  valid time. Global attributes are copied; lists and dicts become JSON strings (e.g.
  `geotransform`). `y`/`x` keep their attributes, with standard_name, units
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
  long_name, units and cell_methods, and every global attribute (`provenance` included). Written
  bands wait in GDAL's block cache (bounded by `GDAL_CACHEMAX`) until flushed, never in Python.
- **COG** (`fmt="cog"`): that GeoTIFF copied by GDAL's COG driver once complete (256-pixel
  tiles, DEFLATE, overviews by averaging, `LAYOUT=COG`); the same tags and descriptions.

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
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from stforecast.errors import ConfigError, write_failure
from stforecast.io.atomic import atomic_path, remove_stale_temps
from stforecast.io.geotiff_write import GeoTIFFWriter
from stforecast.io.layout import check_lead, layout
from stforecast.io.netcdf_write import NetCDFWriter
from stforecast.io.target import replaceable

__all__ = ["FORMATS", "SUFFIX", "write_forecast"]

FORMATS = ("netcdf", "geotiff", "cog")
SUFFIX = {"netcdf": ".nc", "geotiff": ".tif", "cog": ".tif"}

_END = object()


def write_forecast(
    path: str | os.PathLike[str],
    template: Any,
    leads: Iterable[Mapping[str, np.ndarray]],
    fmt: str = "netcdf",
) -> Path:
    """Write a forecast lead by lead to `path` (NetCDF or GeoTIFF), atomically; returns the
    file written (`path`, or the forecast a symbolic link at `path` points to).

    `template` is an `xr.Dataset` holding the coordinates (`time`, `forecast_period`,
    `forecast_reference_time`, `y`, `x`), the grid-mapping variable and the attributes; its
    `(time, y, x)` data variables say which variables to write and are never loaded. `leads`
    yields, in order, one dict per valid time `{name: (y, x) array}` with every variable; NaN is
    missing. More or fewer leads than times raise `ValueError` and nothing is written.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}: expected one of {', '.join(FORMATS)}")
    lay = layout(template)
    if fmt != "netcdf" and len(lay.fields) != 1:
        raise ValueError(
            f"a GeoTIFF holds one variable (band k = lead k) but the template has "
            f"{len(lay.fields)}: {', '.join(lay.fields)}; write one file per variable "
            f"with template[[name, {lay.grid_mapping or 'crs'!r}]] and leads {{name: array}}"
        )
    target = replaceable(path)
    if "provenance" in template.attrs:  # no absolute paths of this machine in the file
        given = template.attrs["provenance"]
        template = template.assign_attrs(provenance=_portable_provenance(given, target.parent))

    blame = _Blame(target)
    with blame:
        remove_stale_temps(target)
        with atomic_path(target) as tmp:
            if fmt == "netcdf":
                writer = NetCDFWriter(tmp, template, lay)
            else:
                writer = GeoTIFFWriter(tmp, template, lay, cog=fmt == "cog")
            try:
                it = iter(leads)
                for k in range(lay.n):
                    with blame.theirs():
                        lead = next(it, _END)
                    if lead is _END:
                        raise ValueError(
                            f"leads: got {k} lead(s) for {lay.n} valid times; nothing was written"
                        )
                    writer.write(k, check_lead(lead, lay, k))
                with blame.theirs():
                    extra = next(it, _END)
                if extra is not _END:
                    raise ValueError(
                        f"leads: more than {lay.n} leads for {lay.n} valid times; "
                        "nothing was written"
                    )
                writer.close()
            except BaseException:
                writer.abort()
                raise
            if replaceable(path) != target:  # again, just before the rename
                raise ConfigError(f"{path}: changed while the forecast was written; not replaced")
    return target


def _portable_provenance(text: str, base: str | os.PathLike[str]) -> str:
    """A `provenance` (JSON) whose input files and run directory are paths relative to `base`
    (the forecast file's directory) instead of this machine's absolute paths."""
    try:
        prov = json.loads(text)
    except (TypeError, ValueError):
        return text
    if not isinstance(prov, dict):
        return text
    model = prov.get("model")
    if isinstance(model, dict) and isinstance(model.get("run"), str):
        model["run"] = _relative(model["run"], base)
    for item in prov.get("inputs") or []:
        if isinstance(item, dict) and isinstance(item.get("path"), str):
            item["path"] = _relative(item["path"], base)
    return json.dumps(prov, sort_keys=True)


def _relative(path: str, base: str | os.PathLike[str]) -> str:
    if "://" in path:  # a URL is not a path of this machine
        return path
    try:
        return os.path.relpath(os.path.abspath(path), os.path.abspath(base))
    except ValueError:  # another drive (Windows): the name alone
        return os.path.basename(path)


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
        raise write_failure(err, self.path, "write the forecast") from err


def _library_errors() -> tuple[type[BaseException], ...]:
    from rasterio.errors import RasterioError

    return (OSError, RuntimeError, RasterioError)
