"""Quick-look images of a forecast: an animated GIF (one frame per lead) or a PNG strip.

    ds = stforecast.forecast(frames, "runs/radar", hours=1)
    quicklook(ds, "nowcast.gif")                            # or "nowcast.png"
    quicklook(open_forecast("rain_cms_lstm_20201031T1200Z_PT1H.tif"), "nowcast.png")

`quicklook` takes a forecast dataset as `stforecast.forecast()` returns it, or as xarray reads a
forecast NetCDF back; `open_forecast` reads a forecast NetCDF or GeoTIFF (band k = lead k, with
the band tags `stforecast forecast` writes) into that layout.

- **GIF** (`.gif`): the last observation (where there is one) beside the forecast, one frame
  per lead titled with the lead (`+10 min`) and the valid time, one colour bar; written with
  matplotlib's `PillowWriter`.
- **PNG** (`.png`): the last observation, then the leads side by side (rows of six), one colour
  scale shared by every panel and one colour bar.

Both are maps (`stforecast.viz.maps`): axes in km on a projected grid, in degrees on a lat-lon
grid, a labelled graticule, and coastlines and borders where their data is on this machine (a
file given, `$STFORECAST_COASTLINES`, or Natural Earth files cartopy already has; nothing is
downloaded); a line under the maps says which. The last observation is the input frame at the
reference time, read again from the files the forecast's provenance names, or from `observed`.

Colours are `stforecast.viz.palette`'s, the same as the evaluation report's panels:
precipitation (a rate, or an accumulation per step) uses discrete levels 0.1, 0.2, 0.5, 1, 2, 5,
10, 20, 50, 100 (rates shown in mm/h, accumulations in mm), white below 0.1 (no rain); any other
quantity uses viridis over the range of the frames shown. Missing values (no coverage) are grey.
The colour bar carries the unit.
At most `max_leads` leads are drawn, evenly spaced and always including the last; grids larger
than 512 pixels are thinned for display (every k-th pixel), which keeps a quick look quick.

The output appears only when complete: it is written to a temporary file in the same directory
and moved into place with `os.replace`. Errors are `stforecast.errors` classes (exit codes of the
command line): a missing or unreadable input is `InputError` (3), a bad argument `ConfigError` (2).
"""

from __future__ import annotations

import datetime as dt
import os
import re
import stat
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from stforecast.errors import (
    ConfigError,
    InputError,
    MissingVariableError,
    environment_error,
    writing,
)
from stforecast.io.atomic import atomic_path
from stforecast.viz.maps import map_grid, map_layers
from stforecast.viz.observed import AUTO, Observation, last_observation
from stforecast.viz.palette import display_scale
from stforecast.viz.strip import Panel, Picture
from stforecast.viz.strip import draw_gif as _gif
from stforecast.viz.strip import draw_png as _png

__all__ = ["SUFFIXES", "open_forecast", "quicklook"]

SUFFIXES = (".gif", ".png")
_MAX_PIXELS = 512  # display size of a panel's longer side before thinning

_NETCDF_MAGIC = (b"CDF\x01", b"CDF\x02", b"CDF\x05", b"\x89HDF\r\n\x1a\n")
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


# ------------------------------------------------------------------------------ reading


def open_forecast(path: str | os.PathLike[str]) -> xr.Dataset:
    """A forecast file (NetCDF or GeoTIFF, told apart by content, not name) as a Dataset with
    `time` (valid time), `forecast_period` and `forecast_reference_time` where the file has them.
    The values are read into memory and the file is closed. A missing or unreadable file raises
    `InputError` (exit 3)."""
    path = Path(path)
    try:  # os.stat, not Path.exists(), which calls a symbolic link loop absent
        if stat.S_ISDIR(os.stat(path).st_mode):
            raise InputError(f"{path}: is a directory, expected a forecast NetCDF or GeoTIFF file")
        with open(path, "rb") as f:
            magic = f.read(8)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file (a forecast NetCDF or GeoTIFF)") from None
    except OSError as err:
        raise environment_error(err, path, "read") from None
    if magic.startswith(_TIFF_MAGIC):
        return _open_geotiff(path)
    if magic.startswith(_NETCDF_MAGIC):
        return _open_netcdf(path)
    raise InputError(f"{path}: neither a NetCDF nor a GeoTIFF file (empty, truncated or other)")


def _open_netcdf(path: Path) -> xr.Dataset:
    try:
        with xr.open_dataset(path, decode_timedelta=True) as ds:
            ds = ds.load()
            ds.encoding["source"] = str(path)  # where provenance paths are relative to
            return ds
    except Exception as err:  # netCDF4/HDF5 raise OSError, RuntimeError, ValueError...
        raise InputError(f"{path}: not a readable NetCDF file ({_reason(err)})") from None


def _open_geotiff(path: Path) -> xr.Dataset:
    import rasterio
    from rasterio.errors import RasterioError

    try:
        with rasterio.open(path) as src:
            values = src.read(masked=True).astype(np.float32).filled(np.nan)
            for k, (scale, offset) in enumerate(zip(src.scales, src.offsets, strict=True)):
                if scale != 1.0 or offset != 0.0:
                    values[k] = values[k] * scale + offset
            tags = src.tags()
            band_tags = [src.tags(b) for b in range(1, src.count + 1)]
            descriptions = list(src.descriptions)
            transform = src.transform
            crs_wkt = src.crs.to_wkt() if src.crs else ""
    except (RasterioError, OSError) as err:
        raise InputError(f"{path}: not a readable GeoTIFF ({_reason(err)})") from None
    n, ny, nx = values.shape
    x = transform.c + transform.a * (np.arange(nx) + 0.5)
    y = transform.f + transform.e * (np.arange(ny) + 0.5)
    name = tags.get("variable") or "band_data"
    attrs = {k: tags[k] for k in ("units", "standard_name", "long_name") if k in tags}
    if "units" not in attrs and band_tags and band_tags[0].get("units"):
        attrs["units"] = band_tags[0]["units"]
    coords: dict[str, Any] = {"y": ("y", y), "x": ("x", x)}
    valid = [_parse_time(t.get("valid_time")) for t in band_tags]
    reference = _parse_time(tags.get("forecast_reference_time"))
    if all(v is not None for v in valid):
        coords["time"] = ("time", np.array(valid, dtype="datetime64[ns]"))
        if reference is not None:
            coords["forecast_reference_time"] = ((), reference)
            coords["forecast_period"] = ("time", coords["time"][1] - reference)
    else:  # a multi-band GeoTIFF not written by stforecast: bands are numbered
        coords["time"] = ("time", np.arange(1, n + 1))
        periods = [_parse_duration(d) for d in descriptions]
        if all(p is not None for p in periods):
            coords["forecast_period"] = ("time", np.array(periods, dtype="timedelta64[ns]"))
    ds = xr.Dataset({name: (("time", "y", "x"), values, attrs)}, coords=coords)
    ds.encoding["source"] = str(path)  # where provenance paths are relative to
    ds.attrs = {k: v for k, v in tags.items() if not k.startswith("TIFFTAG_")}
    if crs_wkt:
        ds.attrs["crs_wkt"] = crs_wkt
    return ds


def _reason(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text or type(err).__name__


def _parse_time(text: str | None) -> np.datetime64 | None:
    if not text:
        return None
    try:
        return np.datetime64(text.strip().rstrip("Z").replace(" ", "T"), "ns")
    except ValueError:
        return None


_DURATION = re.compile(r"([+-])?PT?(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?$")


def _parse_duration(text: str | None) -> np.timedelta64 | None:
    """`+PT10M`, `PT1H30M`, `-PT5M` -> timedelta64; None for anything else."""
    match = _DURATION.match((text or "").strip().upper())
    if not match or not any(match.groups()[1:]):
        return None
    sign, h, m, s = match.groups()
    seconds = int(h or 0) * 3600 + int(m or 0) * 60 + float(s or 0)
    ns = round(seconds * 1e9) * (-1 if sign == "-" else 1)
    return np.timedelta64(ns, "ns")


# ------------------------------------------------------------------------------ choosing


def _field(ds: xr.Dataset | xr.DataArray, variable: str | None) -> xr.DataArray:
    """The variable to draw, as (lead, y, x)."""
    if isinstance(ds, xr.DataArray):
        da = ds
    else:
        bounds = {str(c.attrs.get("bounds")) for c in ds.variables.values()}  # time_bnds
        candidates = [str(n) for n, v in ds.data_vars.items()
                      if v.ndim >= 2 and str(n) not in bounds and "nv" not in v.dims]  # fmt: skip
        if variable is not None:
            if variable not in ds.data_vars:
                raise MissingVariableError(
                    f"no variable {variable!r} in the forecast; it has "
                    f"{', '.join(candidates) or 'no gridded variable'}"
                )
            da = ds[variable]
        elif len(candidates) == 1:
            da = ds[candidates[0]]
        elif not candidates:
            raise InputError("the forecast holds no gridded variable to plot")
        else:
            raise ConfigError(
                f"the forecast holds {len(candidates)} variables ({', '.join(candidates)}); "
                "choose one by name (variable)"
            )
    if da.ndim == 2:
        da = da.expand_dims("time")
    if da.ndim != 3:
        raise InputError(
            f"variable {da.name!r} has dims {da.dims}: expected (time, y, x) or (y, x)"
        )
    if da.sizes[da.dims[0]] == 0:
        raise InputError(f"variable {da.name!r} has no lead times")
    return da


def _leads(n: int, max_leads: int) -> np.ndarray:
    """At most `max_leads` indices out of `n`, evenly spaced, first and last included."""
    if max_leads < 1:
        raise ConfigError(f"max_leads must be at least 1, got {max_leads}")
    if n <= max_leads:
        return np.arange(n)
    if max_leads == 1:
        return np.array([n - 1])
    return np.unique(np.round(np.linspace(0, n - 1, max_leads)).astype(int))


def _lead_text(period: Any) -> str | None:
    """`+10 min`, `+1 h`, `+1 h 30 min` from a timedelta64 (or seconds)."""
    if period is None:
        return None
    if isinstance(period, np.timedelta64):
        seconds = period / np.timedelta64(1, "s")
    else:
        try:
            seconds = float(period)
        except (TypeError, ValueError):
            return None
    if not np.isfinite(seconds):
        return None
    sign = "-" if seconds < 0 else "+"
    total = round(abs(seconds))
    h, rest = divmod(total, 3600)
    m, s = divmod(rest, 60)
    parts = [f"{h} h"] * bool(h) + [f"{m} min"] * bool(m) + [f"{s} s"] * bool(s)
    return sign + (" ".join(parts) or "0 min")


def _time_text(value: Any) -> str:
    if isinstance(value, np.datetime64):
        if np.isnat(value):
            return "?"
        when = value.astype("datetime64[s]").item()
        if isinstance(when, dt.datetime):
            return when.strftime("%Y-%m-%d %H:%M" + (":%S" if when.second else "") + " UTC")
    return str(value)


def _periods(da: xr.DataArray) -> list[Any]:
    """Each lead's forecast period, from `forecast_period` or valid minus reference time."""
    dim = da.dims[0]
    n = da.sizes[dim]
    if "forecast_period" in da.coords and da["forecast_period"].dims == (dim,):
        fp = da["forecast_period"]
        values = fp.values
        if values.dtype.kind in "iuf":  # not decoded: CF units, seconds by default
            factor = {"s": 1, "min": 60, "h": 3600, "hours": 3600, "minutes": 60}.get(
                str(fp.attrs.get("units", "s")).split()[0], 1
            )
            return [float(v) * factor for v in values]
        return list(values)
    ref = None
    if "forecast_reference_time" in da.coords and da["forecast_reference_time"].ndim == 0:
        ref = da["forecast_reference_time"].values
    if ref is not None and np.issubdtype(da[dim].values.dtype, np.datetime64):
        return list(da[dim].values - ref)
    return [None] * n


def _reference(da: xr.DataArray, ds: Any) -> Any:
    if "forecast_reference_time" in da.coords and da["forecast_reference_time"].ndim == 0:
        return da["forecast_reference_time"].values
    attrs = getattr(ds, "attrs", {}) or {}
    return _parse_time(attrs.get("forecast_reference_time"))


# ------------------------------------------------------------------------------ drawing


def quicklook(
    ds: xr.Dataset | xr.DataArray,
    path: str | os.PathLike[str],
    *,
    variable: str | None = None,
    max_leads: int = 12,
    observed: Any = AUTO,
    coastlines: str | os.PathLike[str] | None = None,
) -> Path:
    """Draw a forecast to `path`: an animated GIF (`.gif`, one frame per lead) or a PNG strip
    (`.png`, leads side by side, one shared colour scale); returns the path.

    `variable` picks the data variable (default: the only gridded one); `max_leads` caps the
    leads drawn (evenly spaced, the last included). `observed`: the last observation drawn
    beside the forecast: `"auto"` (the forecast's input file at its reference time, from its
    provenance, when still there), files/directories/globs to read it from, a `(y, x)`
    DataArray, or None. `coastlines`: a shapefile, GeoJSON file or directory (`"none"`: none;
    default `$STFORECAST_COASTLINES`, else Natural Earth files cartopy already has). Written
    atomically.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ConfigError(f"{path}: must end in .gif (an animation) or .png (a strip of leads)")
    if not path.parent.is_dir():
        raise InputError(f"{path}: the directory {path.parent} does not exist")
    picture = _picture(ds, variable, max_leads, observed, coastlines)
    draw = _gif if suffix == ".gif" else _png
    with writing(path, "write the image"), atomic_path(path, suffix=path.suffix) as tmp:
        draw(tmp, picture)
    return path


def _observation(ds: Any, da: xr.DataArray, observed: Any, reference: Any) -> Observation | None:
    if isinstance(observed, xr.DataArray):
        when = observed["time"].values if "time" in observed.coords else reference
        values = np.asarray(observed.squeeze().values, dtype=np.float32)
        if values.shape != da.shape[1:]:
            raise InputError(
                f"observed: shape {values.shape}, the forecast's grid is {da.shape[1:]}"
            )
        return Observation(values, when)
    at = reference if isinstance(reference, np.datetime64) and not np.isnat(reference) else None
    return last_observation(ds, da, observed, at=at)


def _picture(ds: Any, variable: str | None, max_leads: int, observed: Any, coastlines: Any):
    da = _field(ds, variable)
    dim = da.dims[0]
    keep = _leads(da.sizes[dim], max_leads)
    periods = _periods(da)
    reference = _reference(da, ds)
    grid = map_grid(da, ds)
    layers = map_layers(grid, coastlines)
    obs = _observation(ds, da, observed, reference)
    da = da.isel({dim: keep})
    ny, nx = da.shape[1:]
    stride = max(1, -(-max(ny, nx) // _MAX_PIXELS))
    values = np.asarray(da.values[:, ::stride, ::stride], dtype=np.float32)
    if obs is not None:
        values = np.concatenate([obs.values[None, ::stride, ::stride], values])
    units = str(da.attrs.get("units", ""))
    scale, shown, unit = display_scale(values, units)
    leads = []
    for i, k in enumerate(keep.tolist()):
        valid, lead = _time_text(da[dim].values[i]), _lead_text(periods[k])
        leads.append(Panel(shown[i + (obs is not None)], f"{lead}\n{valid}" if lead else valid))
    name = str(da.attrs.get("long_name") or da.name or "forecast")
    heading = name if reference is None else f"{name} from {_time_text(reference)}"
    label = f"{name} [{unit}]" if unit else name
    picture = Picture(leads, scale, label, heading, grid, layers)
    if obs is not None:
        picture.observation = Panel(shown[0], f"observed\n{_time_text(obs.time)}")
    return picture
