"""Grids brought to one spacing in metres, and forecasts brought back onto an input's own grid.

`to_spacing` is what `data.spacing` does to every archive and to every new forecast input:

- when the spacing is a whole multiple of the archive's cell (within 0.1 %, so FMI's 250.004 m
  cells count as 250 m), a NaN-aware **block mean** (`resample.coarsen`, rows and columns that
  do not fill a block at the far edges dropped);
- otherwise an **area-weighted mean** over exactly `spacing`-sized cells (each output cell the
  mean of the input cells it overlaps, weighted by the overlap; NaN-aware), or **bilinear
  interpolation** where the archive is coarser than the spacing; the far edges are trimmed to
  whole output cells, the upper-left corner stays.

The cell size in metres comes from the affine transform and the CRS's axis unit (km grids are
converted); a grid without coordinates (KNMI) needs its `pixel_size`; a grid on a geographic CRS
(degrees) goes onto its local equal-area projection instead (`data.reproject.to_local`). `onto`
interpolates a coarse field back onto a finer grid by its cell centres (bilinear, separable,
edges held, NaN outside the coarse extent).
"""

from __future__ import annotations

import math

import numpy as np
import xarray as xr

from stforecast.data.reproject import is_geographic, to_local
from stforecast.data.resample import coarsen, spatial_dims
from stforecast.errors import ConfigError, InputError
from stforecast.io.grid import pixel_space

__all__ = ["cell_metres", "interpolation", "onto", "to_spacing"]

WHOLE = 1e-3  # relative tolerance for a whole ratio of spacings


def cell_metres(da: xr.DataArray, pixel_size: float | None = None) -> tuple[float, float]:
    """The (x, y) cell size of `da`'s grid in metres."""
    ydim, xdim = spatial_dims(da)
    t = da.attrs.get("transform")
    if t is None or len(t) != 6:
        raise InputError("the grid has no affine transform: its spacing in metres is unknown")
    a, e = abs(float(t[0])), abs(float(t[4]))
    if pixel_size is not None:  # metres per pixel of the file's grid, whatever its coordinates
        return a * pixel_size, e * pixel_size
    if pixel_space(da[xdim].attrs) or pixel_space(da[ydim].attrs):
        raise ConfigError(
            "the grid has no coordinates (pixel indices only): give the archive's pixel_size "
            "in metres to bring it to data.spacing"
        )
    wkt = da.attrs.get("crs_wkt", "")
    if not wkt:
        raise InputError("the grid has no CRS: give the archive's pixel_size in metres")
    import pyproj

    crs = pyproj.CRS.from_wkt(wkt)
    if not crs.is_projected:
        raise InputError(f"the grid's CRS {crs.name!r} is not projected: no spacing in metres")
    factor = float(crs.axis_info[0].unit_conversion_factor)
    return a * factor, e * factor


def _whole(ratio: float) -> int | None:
    k = round(ratio)
    return k if k >= 1 and abs(ratio - k) <= WHOLE * ratio else None


def to_spacing(da: xr.DataArray, spacing: float, pixel_size: float | None = None) -> xr.DataArray:
    """`da` on cells of `spacing` metres (see the module docstring); lazy on dask."""
    ydim, xdim = spatial_dims(da)
    placed = not (pixel_space(da[xdim].attrs) or pixel_space(da[ydim].attrs))
    if pixel_size is None and placed and is_geographic(da):
        out = to_local(da, spacing)
        out.attrs["spacing_metres"] = float(spacing)
        return out
    sx, sy = cell_metres(da, pixel_size)
    kx, ky = _whole(spacing / sx), _whole(spacing / sy)
    if kx is not None and kx == ky:
        out = coarsen(da, kx)
    else:
        out = _regrid(da, spacing / sx, spacing / sy)
    out.attrs["spacing_metres"] = float(spacing)
    return out


def _axis(n: int, r: float) -> tuple[object, int]:
    """Sparse (n2 × n) operator along one axis for output cells `r` input cells wide."""
    from scipy import sparse

    n2 = math.floor(n / r + 1e-9)
    if n2 < 1:
        raise InputError(f"a grid of {n} cells is smaller than one cell of the spacing")
    if r < 1:  # interpolate between input centres, edges held
        u = np.clip((np.arange(n2) + 0.5) * r - 0.5, 0.0, n - 1)
        i0 = np.floor(u).astype(np.int64)
        i1, w = np.minimum(i0 + 1, n - 1), u - np.floor(u)
        rows = np.concatenate([np.arange(n2), np.arange(n2)])
        vals, cols = np.concatenate([1 - w, w]), np.concatenate([i0, i1])
        return sparse.csr_array((vals, (rows, cols)), shape=(n2, n)), n2
    rows, cols, vals = [], [], []
    for j in range(n2):
        lo, hi = j * r, (j + 1) * r
        for i in range(math.floor(lo), min(math.ceil(hi), n)):
            overlap = min(i + 1, hi) - max(i, lo)
            if overlap > 1e-12:
                rows.append(j), cols.append(i), vals.append(overlap / r)
    return sparse.csr_array((vals, (rows, cols)), shape=(n2, n)), n2


def _regrid(da: xr.DataArray, rx: float, ry: float) -> xr.DataArray:
    ydim, xdim = spatial_dims(da)
    wy, ny2 = _axis(da.sizes[ydim], ry)
    wx, nx2 = _axis(da.sizes[xdim], rx)
    source = da.chunk({ydim: -1, xdim: -1}) if da.chunks is not None else da
    out = xr.apply_ufunc(
        apply_axes,
        source,
        input_core_dims=[[ydim, xdim]],
        output_core_dims=[[ydim, xdim]],
        exclude_dims={ydim, xdim},
        kwargs={"wy": wy, "wx": wx},
        dask="parallelized",
        output_dtypes=[np.float32],
        dask_gufunc_kwargs={"output_sizes": {ydim: ny2, xdim: nx2}},
        keep_attrs=True,
    ).transpose(*da.dims)
    coords = {}
    for dim, r, n2 in ((ydim, ry, ny2), (xdim, rx, nx2)):
        centres = np.asarray(da[dim].values, np.float64)
        step = centres[1] - centres[0] if centres.size > 1 else 1.0
        new = centres[0] - step / 2 + step * r * (np.arange(n2) + 0.5)
        coords[dim] = xr.Variable(dim, new, attrs=da[dim].attrs)
    out = out.assign_coords(coords)
    out.attrs = dict(da.attrs)
    a, b, c, d, e, f = (float(v) for v in da.attrs["transform"])
    out.attrs["transform"] = [a * rx, b * ry, c, d * rx, e * ry, f]
    return out


def apply_axes(data: np.ndarray, *, wy, wx) -> np.ndarray:
    """`W_y · F · W_xᵀ` for each trailing 2-D frame, NaN-aware (normalised by the weight of the
    valid cells; NaN where none)."""
    ny, nx = data.shape[-2:]
    frames = np.asarray(data, np.float64).reshape(-1, ny, nx)
    out = np.empty((frames.shape[0], wy.shape[0], wx.shape[0]), np.float32)
    for i, frame in enumerate(frames):
        valid = np.isfinite(frame)
        total = (wx @ (wy @ np.where(valid, frame, 0.0)).T).T
        weight = (wx @ (wy @ valid.astype(np.float64)).T).T
        with np.errstate(invalid="ignore", divide="ignore"):
            out[i] = np.where(weight > 1e-9, total / weight, np.nan)
    return out.reshape((*data.shape[:-2], wy.shape[0], wx.shape[0]))


def interpolation(source: np.ndarray, target: np.ndarray):
    """Sparse bilinear operator from cell centres `source` to centres `target` along one axis
    (edges held), and the target cells outside the source's extent."""
    from scipy import sparse

    n = source.size
    step = source[1] - source[0] if n > 1 else 1.0
    u = (np.asarray(target, np.float64) - source[0]) / step
    outside = (u < -0.5 - 1e-9) | (u > n - 0.5 + 1e-9)
    u = np.clip(u, 0.0, n - 1)
    i0 = np.floor(u).astype(np.int64)
    i1, w = np.minimum(i0 + 1, n - 1), u - np.floor(u)
    m = target.size
    rows = np.concatenate([np.arange(m), np.arange(m)])
    op = sparse.csr_array(
        (np.concatenate([1 - w, w]), (rows, np.concatenate([i0, i1]))), shape=(m, n)
    )
    return op, outside


def onto(field: np.ndarray, wy, wx, outside_y, outside_x) -> np.ndarray:
    """A coarse `(..., y, x)` field on the fine grid of the operators from `interpolation`."""
    out = apply_axes(field, wy=wy, wx=wx)
    out[..., outside_y, :] = np.nan
    out[..., :, outside_x] = np.nan
    return out
