"""Grid operations on frame stacks: crop, coarsen, resize, coverage mask, filling.

Inputs are xarray DataArrays with two spatial dimensions (named `y`/`x`, else `lat`/`lon` or
`latitude`/`longitude`, else the last two dimensions), 1-D coordinates on them holding cell
centres, and optionally the attrs `transform` (GDAL/rasterio affine order `[a, b, c, d, e, f]`:
`x = a·col + b·row + c`, `y = d·col + e·row + f` at the cell's upper-left corner, so a centre is
`x = c + a·(col + 0.5)` when b = 0) and `crs_wkt`. Every operation keeps the attrs, updates
`transform` so that it stays consistent with the coordinates, and leaves the CRS alone.

All operations are lazy on dask-backed input and work frame by frame, so archives larger than
memory pass through with one frame (per task) in memory.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from stforecast.data import units
from stforecast.errors import ConfigError, InputError

if TYPE_CHECKING:
    from stforecast.config import DataConfig

__all__ = ["coarsen", "coverage", "crop", "fill_missing", "resize", "spatial_dims"]

_NAMES = (("y", "x"), ("lat", "lon"), ("latitude", "longitude"))


def spatial_dims(da: xr.DataArray) -> tuple[str, str]:
    """The (row, column) dimension names: `y`/`x`, `lat`/`lon`, `latitude`/`longitude`, or
    the last two dimensions."""
    for ydim, xdim in _NAMES:
        if ydim in da.dims and xdim in da.dims:
            return ydim, xdim
    if da.ndim < 2:
        raise InputError(f"expected a grid with y and x dimensions, got dimensions {da.dims}")
    return str(da.dims[-2]), str(da.dims[-1])


def _transform(da: xr.DataArray) -> list[float] | None:
    value = da.attrs.get("transform")
    if value is None:
        return None
    values = [float(v) for v in np.ravel(value)]
    if len(values) != 6:
        raise InputError(
            f"attribute 'transform' must hold 6 numbers [a, b, c, d, e, f], got {value!r}"
        )
    return values


def _with_transform(out: xr.DataArray, attrs: dict[str, Any], t: list[float] | None) -> None:
    out.attrs = dict(attrs)
    if t is not None:
        out.attrs["transform"] = [float(v) for v in t]


def _centres(da: xr.DataArray, dim: str) -> np.ndarray:
    if dim not in da.coords:
        raise InputError(f"the grid has no coordinate {dim!r} (cell centres) to crop by")
    return np.asarray(da[dim].values, dtype=np.float64)


# --------------------------------------------------------------------------------------------
# crop


def crop(
    da: xr.DataArray,
    *,
    bbox: Sequence[float] | None = None,
    pixels: Sequence[int] | None = None,
) -> xr.DataArray:
    """Cut a window out of the grid, by a box in the data's CRS or by pixel indices.

    `bbox = (xmin, ymin, xmax, ymax)` in the units of the `x`/`y` coordinates selects the cells
    whose centres lie inside the box, edges included (ascending or descending `y` alike).
    A box that only partly overlaps the grid gives the overlap; one with no cell centre in it
    raises InputError. `pixels = (row0, row1, col0, col1)` is half-open, row = index along
    `y` as stored; indices beyond the grid raise InputError. The `transform` origin moves to
    the new upper-left cell: `c' = c + a·col0 + b·row0`, `f' = f + d·col0 + e·row0`.
    """
    if (bbox is None) == (pixels is None):
        raise ConfigError("crop needs exactly one of bbox=(xmin, ymin, xmax, ymax) or pixels=")
    ydim, xdim = spatial_dims(da)
    ny, nx = da.sizes[ydim], da.sizes[xdim]

    if bbox is not None:
        xmin, ymin, xmax, ymax = _numbers(bbox, 4, "bbox (xmin, ymin, xmax, ymax)")
        if xmin > xmax or ymin > ymax:
            raise ConfigError(
                f"crop bbox must be (xmin, ymin, xmax, ymax) with xmin <= xmax and "
                f"ymin <= ymax, got {tuple(bbox)}"
            )
        xs, ys = _centres(da, xdim), _centres(da, ydim)
        cols = np.flatnonzero((xs >= xmin) & (xs <= xmax))
        rows = np.flatnonzero((ys >= ymin) & (ys <= ymax))
        if cols.size == 0 or rows.size == 0:
            raise InputError(
                f"crop bbox {tuple(bbox)} contains no cell centre of the grid, whose centres "
                f"span x {xs.min():g} to {xs.max():g} and y {ys.min():g} to {ys.max():g}"
            )
        row0, row1, col0, col1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    else:
        row0, row1, col0, col1 = _pixels(pixels)
        if row1 > ny or col1 > nx:
            raise InputError(
                f"crop pixels (row0, row1, col0, col1) = {tuple(pixels)} exceed the grid of "
                f"{ny} rows and {nx} columns"
            )

    out = da.isel({ydim: slice(row0, row1), xdim: slice(col0, col1)})
    t = _transform(da)
    if t is not None:
        a, b, c, d, e, f = t
        t = [a, b, c + a * col0 + b * row0, d, e, f + d * col0 + e * row0]
    _with_transform(out, da.attrs, t)
    return out


def _numbers(values: Any, n: int, what: str) -> list[float]:
    try:
        numbers = [float(v) for v in values]
    except (TypeError, ValueError):
        raise ConfigError(f"crop {what} must be {n} numbers, got {values!r}") from None
    if len(numbers) != n or not all(math.isfinite(v) for v in numbers):
        raise ConfigError(f"crop {what} must be {n} finite numbers, got {values!r}")
    return numbers


def _pixels(pixels: Any) -> tuple[int, int, int, int]:
    valid = (
        isinstance(pixels, Sequence)
        and len(pixels) == 4
        and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in pixels)
    )
    if valid:
        row0, row1, col0, col1 = (int(v) for v in pixels)
        valid = 0 <= row0 < row1 and 0 <= col0 < col1
    if not valid:
        raise ConfigError(
            "crop pixels must be 4 integers (row0, row1, col0, col1), half-open, with "
            f"0 <= row0 < row1 and 0 <= col0 < col1; got {pixels!r}"
        )
    return row0, row1, col0, col1


# --------------------------------------------------------------------------------------------
# coarsen


def coarsen(da: xr.DataArray, factor: int, *, min_valid: float = 0.0) -> xr.DataArray:
    """Block mean over `factor × factor` cells, ignoring NaN.

    A block's value is the mean of its finite values; a block with none (or with a valid
    fraction below `min_valid`, 0 to 1) is NaN. Rows and columns at the far edges (the last
    rows and columns as stored) that do not fill a whole block are dropped, so the origin and
    the `transform`'s c, f stay; a, b, d, e scale by `factor`. Coordinates become the block
    centres (the mean of the cell centres). Lazy on dask: each task reduces its own chunk.
    """
    if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)) or factor < 1:
        raise ConfigError(f"coarsen factor must be a positive integer, got {factor!r}")
    min_valid = _fraction(min_valid)
    ydim, xdim = spatial_dims(da)
    k = int(factor)
    if da.sizes[ydim] < k or da.sizes[xdim] < k:
        raise InputError(
            f"cannot coarsen a grid of {da.sizes[ydim]} rows and {da.sizes[xdim]} columns by {k}: "
            f"the factor must not exceed the grid size"
        )
    if k == 1:
        return da.copy(deep=False)
    blocks = da.coarsen({ydim: k, xdim: k}, boundary="trim")
    out = blocks.mean()  # skipna is the default for floats: NaN-aware
    if min_valid > 0:
        out = out.where(blocks.count() >= min_valid * k * k)
    t = _transform(da)
    if t is not None:
        a, b, c, d, e, f = t
        t = [a * k, b * k, c, d * k, e * k, f]
    _with_transform(out, da.attrs, t)
    return out


def _fraction(min_valid: Any) -> float:
    if isinstance(min_valid, bool) or not isinstance(min_valid, (int, float)):
        raise ConfigError(f"min_valid must be a fraction from 0 to 1, got {min_valid!r}")
    if not 0.0 <= min_valid <= 1.0:
        raise ConfigError(f"min_valid must be a fraction from 0 to 1, got {min_valid!r}")
    return float(min_valid)


# --------------------------------------------------------------------------------------------
# resize

_METHODS = ("auto", "area", "bilinear")


def resize(
    da: xr.DataArray,
    shape: tuple[int, int],
    *,
    method: str = "auto",
    min_valid: float = 0.0,
) -> xr.DataArray:
    """Resample to exactly `shape = (ny, nx)` cells over the same extent, frame by frame.

    Each axis is resampled by a linear operator W (rows summing to 1), a frame F becomes
    `W_y · F · W_xᵀ`:

    - `area` (default when an axis shrinks): the area-weighted mean of the input cells an output
      cell overlaps, for any ratio (exact block mean for integer ratios, no aliasing);
    - `bilinear` (default when an axis grows): linear interpolation between cell centres,
      centres aligned as in `scipy.ndimage.zoom(..., grid_mode=True)`, edges held constant.

    NaN-aware by normalised convolution: `(W_y·F₀·W_xᵀ) / (W_y·M·W_xᵀ)` with F₀ = F with NaN set
    to 0 and M = 1 where finite; the denominator is the valid fraction of the weights, and cells
    where it is 0 (or below `min_valid`) are NaN. The extent is kept, so the `transform` origin
    stays and a, b, d, e scale by old/new size; the coordinates become the new cell centres.
    Float32 data stay float32 (computed in float64); other data give float64.
    """
    if method not in _METHODS:
        raise ConfigError(f"unknown resize method {method!r}; valid: {', '.join(_METHODS)}")
    try:
        ny2, nx2 = (int(v) for v in shape)
        valid_shape = ny2 >= 1 and nx2 >= 1 and len(tuple(shape)) == 2
    except (TypeError, ValueError):
        valid_shape = False
    if not valid_shape:
        raise ConfigError(f"resize shape must be two positive integers (ny, nx), got {shape!r}")
    min_valid = _fraction(min_valid)
    ydim, xdim = spatial_dims(da)
    ny, nx = da.sizes[ydim], da.sizes[xdim]
    t = _transform(da)

    wy = _operator(ny, ny2, method)
    wx = _operator(nx, nx2, method)
    dtype = np.float32 if da.dtype == np.float32 else np.float64
    source = da.chunk({ydim: -1, xdim: -1}) if da.chunks is not None else da
    out = xr.apply_ufunc(
        _resize_frames,
        source,
        input_core_dims=[[ydim, xdim]],
        output_core_dims=[[ydim, xdim]],
        exclude_dims={ydim, xdim},
        kwargs={"wy": wy, "wx": wx, "min_valid": min_valid, "dtype": dtype},
        dask="parallelized",
        output_dtypes=[dtype],
        dask_gufunc_kwargs={"output_sizes": {ydim: ny2, xdim: nx2}},
        keep_attrs=True,
    ).transpose(*da.dims)

    coords = {}
    for dim, n2, step in ((ydim, ny2, t and t[4]), (xdim, nx2, t and t[0])):
        if dim in da.coords:
            values = _new_centres(_centres(da, dim), n2, step, dim)
            coords[dim] = xr.Variable(dim, values, attrs=da[dim].attrs)
    out = out.assign_coords(coords)
    if t is not None:
        a, b, c, d, e, f = t
        sx, sy = nx / nx2, ny / ny2
        t = [a * sx, b * sy, c, d * sx, e * sy, f]
    _with_transform(out, da.attrs, t)
    return out


def _new_centres(centres: np.ndarray, n2: int, step: float | None, dim: str) -> np.ndarray:
    """Centres of n2 equal cells over the extent of the regular cells centred at `centres`."""
    n = centres.size
    if n >= 2:
        step = (centres[-1] - centres[0]) / (n - 1)
    elif n2 == 1:
        return centres.copy()
    elif not step:
        raise InputError(
            f"cannot resize along {dim!r}: one cell and no 'transform' give no cell size"
        )
    edge = centres[0] - step / 2.0
    return edge + (step * n / n2) * (np.arange(n2) + 0.5)


def _operator(n: int, n2: int, method: str) -> Any:
    """Sparse (n2 × n) resampling matrix along one axis; rows sum to 1."""
    from scipy import sparse

    if n2 == n:
        return sparse.identity(n, format="csr", dtype=np.float64)
    if method == "area" or (method == "auto" and n2 < n):
        rows, cols, vals = [], [], []
        # Output cell j covers [j·n, (j+1)·n) and input cell i covers [i·n2, (i+1)·n2), both in
        # units of 1/n2 input cells: integer arithmetic gives exact overlaps.
        for j in range(n2):
            start, end = j * n, (j + 1) * n
            for i in range(start // n2, (end - 1) // n2 + 1):
                overlap = min((i + 1) * n2, end) - max(i * n2, start)
                rows.append(j)
                cols.append(i)
                vals.append(overlap / n)
        return sparse.csr_array((vals, (rows, cols)), shape=(n2, n))
    # Bilinear: output centre j sits at input position u = (j + 0.5)·n/n2 - 0.5.
    u = np.clip((np.arange(n2) + 0.5) * n / n2 - 0.5, 0.0, n - 1)
    i0 = np.floor(u).astype(np.int64)
    i1 = np.minimum(i0 + 1, n - 1)
    w = u - i0
    rows = np.concatenate([np.arange(n2), np.arange(n2)])
    return sparse.csr_array(
        (np.concatenate([1.0 - w, w]), (rows, np.concatenate([i0, i1]))), shape=(n2, n)
    )


def _resize_frames(
    data: np.ndarray, *, wy: Any, wx: Any, min_valid: float, dtype: type
) -> np.ndarray:
    """Apply `W_y · F · W_xᵀ` to each trailing 2-D frame, NaN-aware (see `resize`)."""
    ny, nx = data.shape[-2:]
    frames = np.asarray(data).reshape(-1, ny, nx)
    out = np.empty((frames.shape[0], wy.shape[0], wx.shape[0]), dtype=dtype)

    def apply(frame: np.ndarray) -> np.ndarray:
        return (wx @ (wy @ frame).T).T

    for i, frame in enumerate(frames):
        values = frame.astype(np.float64)
        valid = np.isfinite(values)
        if valid.all():
            out[i] = apply(values)
            continue
        weight = apply(valid.astype(np.float64))
        total = apply(np.where(valid, values, 0.0))
        keep = (weight > 1e-12) & (weight >= min_valid - 1e-12)
        out[i] = np.where(keep, total / np.where(keep, weight, 1.0), np.nan)
    return out.reshape((*data.shape[:-2], wy.shape[0], wx.shape[0]))


# --------------------------------------------------------------------------------------------
# coverage and filling


def coverage(da: xr.DataArray) -> xr.DataArray:
    """Boolean mask, True where the value is finite (has data), same shape as `da`.

    Keeps the grid attrs (`transform`, `crs_wkt`) so it can be stored beside the data; lazy on
    dask. Take `.any("time")` for a static mask of where there was ever coverage.
    """
    out = np.isfinite(da).rename("coverage")
    out.attrs = {k: da.attrs[k] for k in ("transform", "crs_wkt") if k in da.attrs}
    out.attrs["long_name"] = "data coverage (finite value)"
    return out


def fill_missing(da: xr.DataArray, value: float) -> xr.DataArray:
    """`da` with non-finite values (NaN, ±inf) replaced by `value`; attrs and dtype kept.

    Networks cannot take NaN, so missing cells get a fill value in the transformed space (e.g.
    0, the transform's "no rain"). Take the mask first (`coverage`): after filling, missing cells
    are indistinguishable from data. The caller records `value` in the manifest; it is not
    written into attrs (a `_FillValue` attr would clash with the on-disk encoding).
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        raise ConfigError(f"fill value must be a finite number, got {value!r}")
    if not math.isfinite(float(value)):
        raise ConfigError(f"fill value must be a finite number, got {value!r}")
    if not np.issubdtype(da.dtype, np.floating):
        return da.copy(deep=False)  # integers hold no NaN
    out = da.where(np.isfinite(da), da.dtype.type(value))
    out.attrs = dict(da.attrs)
    return out


def grid_frames(cfg: DataConfig, da: xr.DataArray, step: int) -> xr.DataArray:
    """Units, then crop, coarsen/resize, as `cfg` says: the one path both `prepare` and
    `forecast` take, so new frames go through exactly the code that prepared the training data.
    `cfg.source_units` replaces the files' own units (free text in some archives)."""
    if cfg.source_units:
        da = da.assign_attrs(units=cfg.source_units)
        if "channel_units" in da.attrs:
            da.attrs["channel_units"] = [cfg.source_units] * len(da.attrs["channel_units"])
    source_units = da.attrs.get("units", "")
    if cfg.units and not units.equivalent(cfg.units, source_units):
        da = units.convert(da, source_units, cfg.units, step_seconds=step, zr=cfg.zr)
    if cfg.crop_bbox is not None or cfg.crop_pixels is not None:
        da = crop(da, bbox=cfg.crop_bbox, pixels=cfg.crop_pixels)
    if cfg.coarsen > 1:
        da = coarsen(da, cfg.coarsen)
    if cfg.resize is not None:
        da = resize(da, tuple(cfg.resize))
    return da


def processed_shape(cfg: Any) -> tuple[tuple[int, int], int]:
    """Frame size and channel count of a `[data]` section's sources after its processing,
    from the files' headers (nothing is read): what `train --dry-run` needs."""
    from stforecast.io import open_frames

    da = open_frames(cfg.sources, variable=cfg.variable, time_pattern=cfg.time_pattern)
    step = cfg.time_step or da.attrs.get("time_step") or 1
    da = grid_frames(cfg, da, int(step))
    return (da.sizes["y"], da.sizes["x"]), da.sizes.get("channel", 1)
