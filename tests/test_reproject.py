"""Lat-lon inputs for a model of `data.spacing` (`data.reproject`): a geographic grid goes onto
its local Lambert azimuthal equal-area projection at the spacing (area means, NaN-aware), and a
forecast comes back onto the lat-lon cells. Checked against analytic fields, the area integral,
pyproj's own projection, and (end to end, with the shipped model) against the forecast of the
same BOM frames on their Albers grid, reprojected by rasterio (GDAL), an independent code."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pyproj
import pytest
import xarray as xr

from stforecast.data.reproject import is_geographic, local_crs, points_operator, to_local
from stforecast.data.spacing import to_spacing

from conftest import shared

WGS84 = pyproj.CRS.from_epsg(4326).to_wkt()
R = 6371008.8  # mean Earth radius (m): cell areas of the reference integral


def _grid(values, lat, lon) -> xr.DataArray:
    res = abs(lat[1] - lat[0])
    return xr.DataArray(
        values, dims=("time", "y", "x"),
        coords={"time": np.array(["2020-01-01T00:00"], "datetime64[ns]"),
                "y": ("y", lat, {"standard_name": "latitude", "units": "degrees_north"}),
                "x": ("x", lon, {"standard_name": "longitude", "units": "degrees_east"})},
        attrs={"crs_wkt": WGS84, "units": "mm h-1",
               "transform": [res, 0.0, lon[0] - res / 2, 0.0, -res, lat[0] + res / 2]},
    )  # fmt: skip


def _axes(res=0.01, centre=(-27.7, 153.2), half=1.0):
    lat = np.arange(centre[0] + half, centre[0] - half, -res) - res / 2
    lon = np.arange(centre[1] - half, centre[1] + half, res) + res / 2
    return lat, lon


def test_a_linear_field_lands_where_pyproj_puts_each_cell():
    lat, lon = _axes()
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    out = to_local(_grid((2.0 * la + lo)[None], lat, lon), 2000.0)
    assert is_geographic(_grid((la * 0)[None], lat, lon)) and not is_geographic(out)
    back = pyproj.Transformer.from_crs(out.attrs["crs_wkt"], WGS84, always_xy=True)
    xx, yy = np.meshgrid(out["x"].values, out["y"].values)
    clon, clat = back.transform(xx, yy)
    inside = (clat < lat[0] - 0.05) & (clat > lat[-1] + 0.05)
    inside &= (clon > lon[0] + 0.05) & (clon < lon[-1] - 0.05)
    got = out.values[0][inside]
    # a linear field: its mean over a cell is its value at the cell's centre
    np.testing.assert_allclose(got, (2.0 * clat + clon)[inside], atol=2e-4)
    # square 2 km cells covering the input: 2° of latitude are 222 km, 111-112 cells and the
    # snapping to whole cells
    t = out.attrs["transform"]
    assert t[0] == 2000.0 and t[4] == -2000.0
    assert 111 <= out.sizes["y"] <= 114


def test_area_integral_is_kept_and_missing_stays_missing():
    lat, lon = _axes(res=0.005)
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    blob = 10.0 * np.exp(-(((la + 27.7) / 0.3) ** 2 + ((lo - 153.2) / 0.4) ** 2))
    cell = R**2 * math.radians(0.005) ** 2 * np.cos(np.radians(la))
    out = to_local(_grid(blob[None], lat, lon), 2000.0)
    total_in, total_out = float((blob * cell).sum()), float(np.nansum(out.values) * 2000.0**2)
    assert total_out == pytest.approx(total_in, rel=5e-3)  # equal-area: rain volume kept
    # corners of the local grid outside the lat-lon box have no input under them
    assert np.isnan(out.values[0, 0, 0]) or np.isnan(out.values[0, -1, -1])
    holed = blob.copy()
    holed[:, : lon.size // 2] = np.nan  # the western half missing
    half = to_local(_grid(holed[None], lat, lon), 2000.0).values[0]
    west, east = half[:, : half.shape[1] // 2 - 2], half[:, half.shape[1] // 2 + 2 :]
    assert np.isnan(west).all() and np.isfinite(east[5:-5, 5:-5]).all()


def test_there_and_back_again_recovers_a_smooth_field():
    lat, lon = _axes(res=0.01)
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    field = 5.0 + np.sin(np.radians(la * 60)) * np.cos(np.radians(lo * 40))
    out = to_spacing(_grid(field[None], lat, lon), 1000.0)  # `data.spacing`'s path
    assert out.attrs["spacing_metres"] == 1000.0
    op, outside = points_operator(out["y"].values, out["x"].values, out.attrs["crs_wkt"],
                                  lat, lon, WGS84)  # fmt: skip
    back = (op @ out.values[0].ravel()).reshape(outside.shape)
    assert not outside.any()  # the local grid covers every input cell
    inner = (slice(5, -5), slice(5, -5))
    np.testing.assert_allclose(back[inner], field[inner], atol=0.01)


def test_the_local_projection_is_centred_on_the_datum_of_the_input():
    crs = local_crs(WGS84, -27.7, 153.2)
    x, y = pyproj.Transformer.from_crs(WGS84, crs, always_xy=True).transform(153.2, -27.7)
    assert abs(x) < 1e-6 and abs(y) < 1e-6
    assert crs.is_projected and crs.ellipsoid.name == pyproj.CRS(WGS84).ellipsoid.name


def _latlon_bom(tmp_path, files):
    """The BOM frames reprojected by rasterio onto a 0.005° lat-lon grid, as a CF file."""
    import rasterio.warp as rw
    from rasterio.transform import Affine

    import stforecast

    da = stforecast.open_frames([str(f) for f in files])
    src = Affine(*da.attrs["transform"])
    h, w = da.sizes["y"], da.sizes["x"]
    left, bottom, right, top = rw.transform_bounds(
        da.attrs["crs_wkt"], "EPSG:4326", src.c, src.f + src.e * h, src.c + src.a * w, src.f
    )
    res = 0.005
    ny, nx = int((top - bottom) / res), int((right - left) / res)
    dst = Affine(res, 0, left, 0, -res, top)
    out = np.full((da.sizes["time"], ny, nx), np.nan, np.float32)
    for i, frame in enumerate(np.asarray(da.values, np.float32)):
        rw.reproject(frame, out[i], src_transform=src, src_crs=da.attrs["crs_wkt"],
                     dst_transform=dst, dst_crs="EPSG:4326", src_nodata=np.nan,
                     dst_nodata=np.nan, resampling=rw.Resampling.bilinear)  # fmt: skip
    lat, lon = top - res * (np.arange(ny) + 0.5), left + res * (np.arange(nx) + 0.5)
    ds = xr.Dataset(
        {"precipitation": (("time", "lat", "lon"), out,
                           {"units": "mm", "grid_mapping": "crs"}),
         "crs": ((), np.int32(0), {"grid_mapping_name": "latitude_longitude",
                                   "semi_major_axis": 6378137.0,
                                   "inverse_flattening": 298.257223563})},
        coords={"time": da["time"].values,
                "lat": ("lat", lat, {"standard_name": "latitude", "units": "degrees_north"}),
                "lon": ("lon", lon, {"standard_name": "longitude", "units": "degrees_east"})},
        attrs={"Conventions": "CF-1.10"},
    )  # fmt: skip
    path = tmp_path / "bom_latlon.nc"
    ds.to_netcdf(path)
    return path, dst


def _forecast(tmp_path, name, *inputs):
    env = {k: v for k, v in os.environ.items() if k != "STFORECAST_MODEL"}
    out = tmp_path / name
    res = subprocess.run([sys.executable, "-m", "stforecast", "forecast", *map(str, inputs),
                          "--hours", "1", "--out", str(out), "--quiet"],
                         capture_output=True, text=True, env=env, cwd=tmp_path)  # fmt: skip
    assert res.returncode == 0, res.stderr
    return xr.open_dataset(out)


def test_default_forecast_of_a_latlon_input_is_on_its_grid_and_matches_the_projected_one(
    tmp_path,
):
    pytest.importorskip("pysteps")  # the shipped model is guided by S-PROG
    import rasterio.warp as rw
    from rasterio.transform import Affine

    files = sorted(shared("radar-bom-66-20201031").glob("*.nc"))[30:37]  # 05:00-06:00
    latlon, transform = _latlon_bom(tmp_path, files)
    ll = _forecast(tmp_path, "latlon.nc", latlon)
    src = xr.open_dataset(latlon)
    np.testing.assert_allclose(ll["y"].values, src["lat"].values)  # the input's own cells
    np.testing.assert_allclose(ll["x"].values, src["lon"].values)
    assert ll["crs"].attrs["grid_mapping_name"] == "latitude_longitude"
    assert ll["y"].attrs["standard_name"] == "latitude"
    assert ll["precipitation"].attrs["units"] == "mm"  # the input's units
    assert json.loads(ll.attrs["provenance"])["model"]["pretrained"] == "radar"
    assert "equal-area" in ll.attrs["comment"]
    alb = _forecast(tmp_path, "albers.nc", *files)
    g = alb.attrs["geotransform"]
    g = [float(v) for v in g.strip("[]").split(",")] if isinstance(g, str) else list(g)
    for k in (0, 5):  # 10 and 60 min
        onto = np.full(ll["precipitation"].shape[1:], np.nan, np.float32)
        rw.reproject(alb["precipitation"].values[k], onto, src_transform=Affine(*g),
                     src_crs=alb["crs"].attrs["crs_wkt"], dst_transform=transform,
                     dst_crs="EPSG:4326", src_nodata=np.nan, dst_nodata=np.nan,
                     resampling=rw.Resampling.bilinear)  # fmt: skip
        mine = ll["precipitation"].values[k]
        ok = np.isfinite(onto) & np.isfinite(mine)
        assert ok.mean() > 0.95
        assert np.corrcoef(onto[ok], mine[ok])[0, 1] > 0.95
        assert np.nanmean(mine[ok]) == pytest.approx(np.nanmean(onto[ok]), rel=0.03)
