"""Quick-look images of a forecast: an animated GIF (one frame per lead) or a PNG strip.

    ds = stforecast.forecast(frames, "runs/radar", hours=1)
    quicklook(ds, "nowcast.gif")                            # or "nowcast.png"
    quicklook(open_forecast("rain_cms_lstm_20201031T1200Z_PT1H.tif"), "nowcast.png")

`quicklook` takes a forecast dataset as `stforecast.forecast()` returns it, or as xarray reads a
forecast NetCDF back; `open_forecast` reads a forecast NetCDF or GeoTIFF (band k = lead k, with
the band tags `stforecast forecast` writes) into that layout.

- **GIF** (`.gif`): one frame per lead, titled with the valid time and the lead (`+10 min`),
  one colour bar; written with matplotlib's `PillowWriter`.
- **PNG** (`.png`): the leads side by side (rows of six), one colour scale shared by every
  panel and one colour bar.

Colours are the maps' choice of `stforecast.viz.palette`: precipitation (a rate, or an
accumulation per step) uses discrete levels 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100 (rates shown
in mm/h, accumulations in mm), white below 0.1; any other quantity uses viridis over the range of
the leads shown. Missing values (no coverage) are grey.
At most `max_leads` leads are drawn, evenly spaced and always including the last; grids larger
than 512 pixels are thinned for display (every k-th pixel), which keeps a quick look quick.

The output appears only when complete: it is written to a temporary file in the same directory
and moved into place with `os.replace`. Errors are `stforecast.errors` classes (exit codes of the
command line): a missing or unreadable input is `InputError` (3), a bad argument `ConfigError` (2).
"""

from __future__ import annotations

import datetime as dt
import math
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
from stforecast.viz.palette import Scale, map_scale

__all__ = ["SUFFIXES", "open_forecast", "quicklook"]

SUFFIXES = (".gif", ".png")
_MAX_PIXELS = 512  # display size of a panel's longer side before thinning
_COLUMNS = 6  # panels per row of the PNG strip
_FPS = 2  # GIF frames per second

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
            return ds.load()
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
        candidates = [str(n) for n, v in ds.data_vars.items() if v.ndim >= 2]
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


# ------------------------------------------------------------------------------ colours


class _Style:
    """The values as drawn (rain in mm/h or mm) with the palette's scale and colour-bar label."""

    def __init__(self, values: np.ndarray, units: str) -> None:
        self.scale, self.values, self.label = map_scale(values, units)


# ------------------------------------------------------------------------------ drawing


def quicklook(
    ds: xr.Dataset | xr.DataArray,
    path: str | os.PathLike[str],
    *,
    variable: str | None = None,
    max_leads: int = 12,
) -> Path:
    """Draw a forecast to `path`: an animated GIF (`.gif`, one frame per lead) or a PNG strip
    (`.png`, leads side by side, one shared colour scale); returns the path.

    `variable` picks the data variable (default: the only gridded one); `max_leads` caps the
    leads drawn (evenly spaced, the last included). Written atomically.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ConfigError(f"{path}: must end in .gif (an animation) or .png (a strip of leads)")
    if not path.parent.is_dir():
        raise InputError(f"{path}: the directory {path.parent} does not exist")
    da = _field(ds, variable)
    dim = da.dims[0]
    keep = _leads(da.sizes[dim], max_leads)
    periods = _periods(da)
    reference = _reference(da, ds)
    da = da.isel({dim: keep})
    ny, nx = da.shape[1:]
    stride = max(1, -(-max(ny, nx) // _MAX_PIXELS))
    values = np.asarray(da.values[:, ::stride, ::stride], dtype=np.float32)
    style = _Style(values, str(da.attrs.get("units", "")))
    frames = [
        (_time_text(da[dim].values[i]), _lead_text(periods[k])) for i, k in enumerate(keep.tolist())
    ]
    name = str(da.attrs.get("long_name") or da.name or "forecast")
    heading = name if reference is None else f"{name} from {_time_text(reference)}"
    extent, origin = _extent(da)
    draw = _gif if suffix == ".gif" else _png
    with writing(path, "write the image"), atomic_path(path, suffix=path.suffix) as tmp:
        draw(tmp, style, frames, heading, extent, origin)
    return path


def _extent(da: xr.DataArray) -> tuple[list[float] | None, str]:
    """imshow's extent (cell edges) from the 1-D y/x coordinates and its origin, so that north
    is up whichever way the rows run; arrays without coordinates are drawn as images (row 0 at
    the top)."""
    ydim, xdim = da.dims[1], da.dims[2]
    if ydim not in da.coords or xdim not in da.coords:
        return None, "upper"
    try:
        y = np.asarray(da[ydim].values, dtype=np.float64)
        x = np.asarray(da[xdim].values, dtype=np.float64)
    except (TypeError, ValueError):
        return None, "upper"
    if y.size < 2 or x.size < 2 or not (np.isfinite(y).all() and np.isfinite(x).all()):
        return None, "upper"
    dy, dx = (y[-1] - y[0]) / (y.size - 1), (x[-1] - x[0]) / (x.size - 1)
    if dy == 0 or dx == 0:
        return None, "upper"
    left, right = x[0] - dx / 2, x[-1] + dx / 2
    first, last = y[0] - dy / 2, y[-1] + dy / 2  # outer edges of the first and last rows
    if dy < 0:  # rows run north to south (the usual raster order): row 0 at the top
        return [left, right, last, first], "upper"
    return [left, right, first, last], "lower"


def _title(frame: tuple[str, str | None]) -> str:
    valid, lead = frame
    return f"{valid}  ({lead})" if lead else valid


def _gif(tmp: Path, style: _Style, frames, heading: str, extent, origin: str) -> None:
    from matplotlib.animation import PillowWriter
    from matplotlib.figure import Figure

    ny, nx = style.values.shape[1:]
    dpi, width = 100, 5.0  # sizes in quarter inches: whole pixels, as PillowWriter needs
    image_w = width * 0.78
    image_h = min(image_w * ny / nx, 8.0)
    height = math.ceil((image_h + 1.0) * 4) / 4
    bottom, top = 0.25 / height, (image_h + 0.25) / height
    fig = Figure(figsize=(width, height), dpi=dpi)
    ax = fig.add_axes((0.03, bottom, 0.78, top - bottom))
    _frame(ax)
    image = ax.imshow(
        style.values[0], cmap=style.scale.cmap, norm=style.scale.norm, extent=extent,
        origin=origin, interpolation="nearest", resample=False,
    )  # fmt: skip
    ax.set_aspect("equal")
    span = top - bottom
    cax = fig.add_axes((0.85, bottom + 0.08 * span, 0.035, 0.84 * span))
    _colorbar(fig, image, style, cax=cax)
    fig.suptitle(heading, fontsize=10, y=1 - 0.1 / height, va="top")
    title = ax.set_title(_title(frames[0]), fontsize=9)
    writer = PillowWriter(fps=_FPS)
    with writer.saving(fig, str(tmp), dpi):
        for k, frame in enumerate(frames):
            image.set_data(style.values[k])
            title.set_text(_title(frame))
            writer.grab_frame()


def _frame(ax: Any) -> None:
    """A thin frame and no ticks: white (no rain) stays distinct from the page."""
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_linewidth(0.5)
        spine.set_color("0.5")


def _colorbar(fig: Any, image: Any, style: _Style, **where: Any) -> None:
    """One colour bar: `cax=` an axes of its own, or `ax=` the axes to take room from."""
    scale: Scale = style.scale
    ticks = list(scale.ticks) if scale.ticks else None
    bar = fig.colorbar(
        image, extend=scale.extend, ticks=ticks,
        spacing="uniform" if scale.discrete else "proportional", **where,
    )  # fmt: skip
    if ticks:
        bar.ax.set_yticklabels([f"{t:g}" for t in ticks])
    if style.label:
        bar.set_label(style.label)


def _png(tmp: Path, style: _Style, frames, heading: str, extent, origin: str) -> None:
    from matplotlib.figure import Figure

    n = len(frames)
    ny, nx = style.values.shape[1:]
    cols = min(n, _COLUMNS)
    rows = -(-n // cols)
    # A fixed layout in inches (constrained layout would cost more than the drawing itself)
    panel_w, gap, title_h, head_h, foot_h, bar_w = 2.2, 0.1, 0.42, 0.45, 0.15, 1.0
    panel_h = min(panel_w * ny / nx, 2 * panel_w)
    width = gap + cols * (panel_w + gap) + bar_w
    height = head_h + rows * (title_h + panel_h) + foot_h
    fig = Figure(figsize=(width, height), dpi=100)
    image = None
    for k, (valid, lead) in enumerate(frames):
        r, c = divmod(k, cols)
        left = gap + c * (panel_w + gap)
        bottom = height - head_h - (r + 1) * (title_h + panel_h)
        ax = fig.add_axes((left / width, bottom / height, panel_w / width, panel_h / height))
        _frame(ax)
        image = ax.imshow(
            style.values[k], cmap=style.scale.cmap, norm=style.scale.norm, extent=extent,
            origin=origin, interpolation="nearest", resample=False,
        )  # fmt: skip
        ax.set_aspect("equal")
        ax.set_title(f"{lead}\n{valid}" if lead else valid, fontsize=8)
    plots_h = height - head_h - foot_h
    bar_h = min(plots_h - title_h, 4.0)
    bar_bottom = foot_h + (plots_h - title_h - bar_h) / 2
    cax = fig.add_axes(
        ((width - bar_w + 0.15) / width, bar_bottom / height, 0.15 / width, bar_h / height)
    )
    _colorbar(fig, image, style, cax=cax)
    fig.suptitle(heading, fontsize=10, y=1 - 0.12 / height, va="top")
    fig.savefig(tmp, format="png")
