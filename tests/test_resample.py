"""Grid operations: hand-computed crops, block means and resizes; laziness and memory on dask."""

from __future__ import annotations

import dask
import numpy as np
import pytest
import xarray as xr
from dask.callbacks import Callback

from stforecast.data import resample
from stforecast.errors import ConfigError, InputError

NAN = np.nan


def grid(values, *, x0=100.0, y_top=50.0, res=10.0, ascending_y=False) -> xr.DataArray:
    """(time, y, x) array on a regular grid whose upper-left corner is (x0, y_top), north up;
    with `ascending_y` the rows are stored south to north (transform e > 0)."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 2:
        values = values[None]
    _, ny, nx = values.shape
    if ascending_y:
        f, e = y_top - ny * res, res
    else:
        f, e = y_top, -res
    return xr.DataArray(
        values,
        dims=("time", "y", "x"),
        coords={
            "x": x0 + res * (np.arange(nx) + 0.5),
            "y": f + e * (np.arange(ny) + 0.5),
        },
        attrs={"transform": [res, 0.0, x0, 0.0, e, f], "crs_wkt": "EPSG:3067", "units": "mm"},
    )


def assert_geo_consistent(da: xr.DataArray) -> None:
    """The transform and the coordinates describe the same cell centres."""
    a, b, c, d, e, f = da.attrs["transform"]
    assert b == 0 and d == 0
    np.testing.assert_allclose(da.x.values, c + a * (np.arange(da.sizes["x"]) + 0.5))
    np.testing.assert_allclose(da.y.values, f + e * (np.arange(da.sizes["y"]) + 0.5))


V4 = np.array(
    [
        [1.0, 2.0, NAN, NAN],
        [3.0, 4.0, NAN, 6.0],
        [NAN, NAN, NAN, NAN],
        [NAN, 8.0, NAN, NAN],
    ]
)


def test_coarsen_by_hand():
    out = resample.coarsen(grid(V4), 2)
    # blocks: (1+2+3+4)/4, 6/1; 8/1, all-NaN
    np.testing.assert_array_equal(out.values[0], [[2.5, 6.0], [8.0, NAN]])
    np.testing.assert_array_equal(out.x.values, [110.0, 130.0])
    np.testing.assert_array_equal(out.y.values, [40.0, 20.0])
    assert out.attrs["transform"] == [20.0, 0.0, 100.0, 0.0, -20.0, 50.0]
    assert out.attrs["crs_wkt"] == "EPSG:3067" and out.attrs["units"] == "mm"
    assert_geo_consistent(out)
    strict = resample.coarsen(grid(V4), 2, min_valid=0.5)
    np.testing.assert_array_equal(strict.values[0], [[2.5, NAN], [NAN, NAN]])


def test_coarsen_trims_far_edges():
    v = np.arange(25.0).reshape(5, 5)
    out = resample.coarsen(grid(v), 2)
    np.testing.assert_array_equal(out.values[0], [[3.0, 5.0], [13.0, 15.0]])
    assert_geo_consistent(out)
    with pytest.raises(InputError, match="factor must not exceed"):
        resample.coarsen(grid(v), 6)
    with pytest.raises(ConfigError, match="positive integer"):
        resample.coarsen(grid(v), 1.5)
    with pytest.raises(ConfigError, match="min_valid"):
        resample.coarsen(grid(v), 2, min_valid=2)


@pytest.mark.parametrize("ascending_y", [False, True])
def test_crop_bbox(ascending_y):
    v = np.arange(20.0).reshape(4, 5)
    da = grid(v, ascending_y=ascending_y)  # centres x 105..145, y 45..15 (or 15..45)
    out = resample.crop(da, bbox=(112.0, 20.0, 135.0, 35.0))
    np.testing.assert_array_equal(out.x.values, [115.0, 125.0, 135.0])  # 135 on the edge: in
    np.testing.assert_array_equal(np.sort(out.y.values), [25.0, 35.0])
    # rows 1 and 2 either way: y 35, 25 stored north-up; 25, 35 stored south-up
    np.testing.assert_array_equal(out.values[0], v[1:3, 1:4])
    assert_geo_consistent(out)
    a, _, c, _, e, f = out.attrs["transform"]
    assert (a, c) == (10.0, 110.0)
    assert (e, f) == ((-10.0, 40.0) if not ascending_y else (10.0, 20.0))


def test_crop_pixels_and_errors():
    v = np.arange(20.0).reshape(4, 5)
    out = resample.crop(grid(v), pixels=(1, 3, 2, 5))
    np.testing.assert_array_equal(out.values[0], v[1:3, 2:5])
    assert out.attrs["transform"] == [10.0, 0.0, 120.0, 0.0, -10.0, 40.0]
    assert_geo_consistent(out)
    with pytest.raises(InputError, match=r"contains no cell centre.*x 105 to 145"):
        resample.crop(grid(v), bbox=(0, 0, 50, 50))
    with pytest.raises(InputError, match=r"exceed the grid of 4 rows and 5 columns"):
        resample.crop(grid(v), pixels=(0, 5, 0, 2))
    with pytest.raises(ConfigError, match="half-open"):
        resample.crop(grid(v), pixels=(2, 2, 0, 2))
    with pytest.raises(ConfigError, match="xmin <= xmax"):
        resample.crop(grid(v), bbox=(140, 0, 110, 50))
    with pytest.raises(ConfigError, match="exactly one"):
        resample.crop(grid(v))


def test_resize_area_equals_block_mean():
    rng = np.random.default_rng(1)
    v = rng.random((3, 8, 12))
    v[rng.random(v.shape) < 0.3] = NAN
    da = grid(v)
    out = resample.resize(da, (4, 6))
    np.testing.assert_allclose(out.values, resample.coarsen(da, 2).values, rtol=1e-12)
    assert out.dims == da.dims and out.shape == (3, 4, 6)
    assert out.attrs["transform"] == [20.0, 0.0, 100.0, 0.0, -20.0, 50.0]
    assert_geo_consistent(out)


def test_resize_non_integer_area_by_hand():
    # 3 cells -> 2: each output cell covers 1.5 input cells
    out = resample.resize(grid([[1.0, 2.0, 4.0]]), (1, 2))
    np.testing.assert_allclose(out.values[0, 0], [(1 + 0.5 * 2) / 1.5, (0.5 * 2 + 4) / 1.5])
    out = resample.resize(grid([[1.0, NAN, 4.0]]), (1, 2))
    np.testing.assert_allclose(out.values[0, 0], [1.0, 4.0])  # NaN ignored, weights renormalised
    assert_geo_consistent(out)


def test_resize_bilinear_preserves_linear_fields_and_nan():
    yy, xx = np.mgrid[0:6, 0:8]
    da = grid(2.0 * xx + 3.0 * yy)
    out = resample.resize(da, (12, 16))
    assert out.shape == (1, 12, 16)
    assert_geo_consistent(out)
    assert out.attrs["transform"] == [5.0, 0.0, 100.0, 0.0, -5.0, 50.0]
    # away from the held edges, bilinear interpolation reproduces a linear field exactly
    col = (out.x.values - 100.0) / 10.0 - 0.5  # input column position of each output centre
    row = (50.0 - out.y.values) / 10.0 - 0.5
    expected = 2.0 * col[None, :] + 3.0 * row[:, None]
    np.testing.assert_allclose(out.values[0, 1:-1, 1:-1], expected[1:-1, 1:-1], atol=1e-12)
    v = np.ones((6, 8))
    v[:, :4] = NAN
    out = resample.resize(grid(v), (12, 16))
    assert np.isnan(out.values[0, :, :7]).all()
    np.testing.assert_allclose(out.values[0, :, 8:], 1.0)  # NaN-aware: no mixing with NaN


def test_resize_keeps_float32_and_other_dim_orders():
    da = grid(np.arange(48.0).reshape(6, 8)).astype(np.float32)
    da = da.expand_dims(channel=2).transpose("time", "y", "x", "channel")
    out = resample.resize(da, (3, 4))
    assert out.dims == ("time", "y", "x", "channel") and out.shape == (1, 3, 4, 2)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.values[..., 0], resample.coarsen(da, 2).values[..., 0])
    with pytest.raises(ConfigError, match="unknown resize method"):
        resample.resize(da, (3, 4), method="cubic")
    with pytest.raises(ConfigError, match="two positive integers"):
        resample.resize(da, (0, 4))


class PeakTaskBytes(Callback):
    """Largest chunk any dask task produced (the final concatenation excluded)."""

    def __init__(self) -> None:
        super().__init__()
        self.peak = 0

    def _posttask(self, key, result, dsk, state, worker_id):
        if isinstance(key, tuple):
            self.peak = max(self.peak, getattr(result, "nbytes", 0))


@pytest.mark.parametrize(
    "op",
    [
        lambda d: resample.coarsen(d, 4),
        lambda d: resample.resize(d, (24, 20)),
        lambda d: resample.resize(d, (80, 120)),
        lambda d: resample.crop(d, pixels=(3, 50, 7, 40)),
    ],
    ids=["coarsen", "resize-down", "resize-up", "crop"],
)
@pytest.mark.parametrize("chunks", [{"time": 1}, {"time": 1, "y": 16, "x": 9}])
def test_dask_stays_lazy_and_per_frame(op, chunks):
    rng = np.random.default_rng(2)
    v = rng.random((6, 64, 48))
    v[rng.random(v.shape) < 0.2] = NAN
    eager = grid(v)
    lazy = eager.chunk(chunks)
    out = op(lazy)
    assert out.chunks is not None and len(out.chunks[0]) == 6  # still dask, one chunk a frame
    with PeakTaskBytes() as cb, dask.config.set(scheduler="synchronous"):
        computed = out.compute()
    frame = v[0].nbytes
    assert 0 < cb.peak <= max(frame, computed.isel(time=0).nbytes)
    np.testing.assert_allclose(computed.values, op(eager).values, rtol=1e-12)
    assert computed.attrs == op(eager).attrs


def test_coverage_and_fill_missing():
    da = grid(V4).chunk({"time": 1})
    cov = resample.coverage(da)
    assert cov.dtype == bool and cov.chunks is not None
    np.testing.assert_array_equal(cov.values[0], np.isfinite(V4))
    assert cov.attrs["transform"] == da.attrs["transform"] and "units" not in cov.attrs
    filled = resample.fill_missing(grid(V4).astype(np.float32), 0.0)
    assert filled.dtype == np.float32 and filled.attrs == grid(V4).attrs
    np.testing.assert_array_equal(filled.values[0], np.nan_to_num(V4, nan=0.0))
    with pytest.raises(ConfigError, match="finite number"):
        resample.fill_missing(da, np.nan)
