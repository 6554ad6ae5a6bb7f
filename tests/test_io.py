"""`stforecast.io.open_frames`: every real layout in ../shared/data, small written files for the
layouts and metadata the real data lacks, and one test per class of input error."""

from __future__ import annotations

import os
import pickle
import shutil
import time
from pathlib import Path

import dask
import netCDF4
import numpy as np
import pyproj
import pytest
import rasterio
import xarray as xr
from rasterio.transform import Affine

from stforecast.errors import ConfigError, InputError
from stforecast.io import crs as crs_mod
from stforecast.io import geotiff, netcdf, open_frames, times
from stforecast.io.frames import FrameStack
from stforecast.io.packing import Packing

from conftest import shared

T = np.datetime64


def _raw_cf(path: Path, name: str, index=...) -> np.ndarray:
    """Independent CF read: raw numbers, fill -> NaN, then scale and offset, in float64."""
    with netCDF4.Dataset(path) as ds:
        var = ds[name]
        var.set_auto_maskandscale(False)
        raw = np.asarray(var[index])
        attrs = var.__dict__
    out = raw.astype(np.float64)
    for key in ("_FillValue", "missing_value"):
        if key in attrs and not np.isnan(attrs[key]):
            out[raw == attrs[key]] = np.nan
    return out * attrs.get("scale_factor", 1.0) + attrs.get("add_offset", 0.0)


def _assert_dims(da: xr.DataArray, n: int, shape: tuple[int, int]) -> None:
    assert da.dims == ("time", "y", "x")
    assert da.shape == (n, *shape)
    assert da.dtype == np.float32
    assert da["time"].dtype == np.dtype("datetime64[ns]")
    assert isinstance(da.data, dask.array.Array)
    assert da.data.chunks[0] == (1,) * n  # one chunk per frame: memory flat in frames


def _assert_times(da: xr.DataArray, first: str, last: str, n: int, step: int) -> None:
    times = da["time"].values
    assert times.size == n
    assert times[0] == T(first) and times[-1] == T(last)
    assert np.all(np.diff(times) > np.timedelta64(0))
    assert da.attrs["time_step"] == step


# -- real data ---------------------------------------------------------------------------------


def test_bom_per_frame_netcdf_with_scalar_valid_time(monkeypatch):
    folder = shared("radar-bom-66-20201031")
    reads = []
    monkeypatch.setattr(Packing, "apply", lambda self, raw: reads.append(1))
    start = time.perf_counter()
    da = open_frames(folder)
    opened = time.perf_counter() - start
    assert not reads, "opening read data arrays"
    monkeypatch.undo()
    assert opened < 4, f"opening 144 files took {opened:.2f} s"

    _assert_dims(da, 144, (512, 512))
    _assert_times(da, "2020-10-31T00:00", "2020-10-31T23:50", 144, 600)
    assert da.name == "precipitation" and da.attrs["source_variable"] == "precipitation"
    assert da.attrs["units"] == "kg m-2"
    assert da.attrs["standard_name"] == "precipitation_amount"
    files = sorted(folder.glob("*.nc"))
    assert da.attrs["sources"] == [str(p.resolve()) for p in files]

    with netCDF4.Dataset(files[0]) as ds:
        albers = pyproj.CRS.from_cf(ds["proj"].__dict__)
        x_km = ds["x"][:]
    assert pyproj.CRS(da.attrs["crs_wkt"]) == albers
    # coordinates in km in the file, in the CRS's metres here
    np.testing.assert_allclose(da["x"].values, x_km * 1000)
    assert da.attrs["transform"] == [500.0, 0.0, -128000.0, 0.0, -500.0, 128000.0]

    for k in (40, 100):
        got = da.isel(time=k).values
        np.testing.assert_allclose(got, _raw_cf(files[k], "precipitation"), rtol=1e-6)
    start = time.perf_counter()
    with dask.config.set(scheduler="threads", num_workers=2):
        everything = da.values
    computed = time.perf_counter() - start
    assert computed < 10, f"reading 144 frames took {computed:.2f} s"
    assert np.isnan(everything).any() and np.nanmin(everything) == pytest.approx(-0.1)


def test_knmi_stacked_netcdf_with_proj_string():
    path = shared("radar-knmi-20100826") / "knmi_rap5min_20100826.nc"
    da = open_frames(path)
    _assert_dims(da, 92, (765, 700))
    _assert_times(da, "2010-08-26T00:00", "2010-08-26T07:35", 92, 300)
    crs = pyproj.CRS(da.attrs["crs_wkt"])
    operation = crs.coordinate_operation
    assert operation.method_name.startswith("Polar Stereographic")
    params = {p.name: p.value for p in operation.params}
    assert params["Latitude of standard parallel"] == 60
    # semi-axes written in km in the file: a real Earth, coordinates in km
    assert crs.ellipsoid.semi_major_metre == pytest.approx(6378137)
    assert crs.axis_info[0].unit_name == "kilometre"
    got = da.isel(time=50).values
    np.testing.assert_array_equal(got, _raw_cf(path, "precipitation", 50).astype(np.float32))
    assert 0.7 < np.isnan(got).mean() < 0.8  # outside radar coverage
    assert np.nanmax(got) <= 2.46


def test_fmi_geotiff_per_frame_one_frame_only():
    folder = shared("radar-fmi-geotiff-20160928")
    da = open_frames(folder)
    _assert_dims(da, 40, (7316, 4963))
    _assert_times(da, "2016-09-28T14:45", "2016-09-28T18:00", 40, 300)
    assert pyproj.CRS(da.attrs["crs_wkt"]) == pyproj.CRS.from_epsg(3067)
    assert da.name == "band_data" and da.attrs["units"] == "dBZ"
    path = folder / "201609281625_FINUTM.tif"
    with rasterio.open(path) as src:
        dn = src.read(1)
        assert da.attrs["transform"] == pytest.approx(list(src.transform)[:6])
    k = int(np.flatnonzero(da["time"].values == T("2016-09-28T16:25"))[0])
    start = time.perf_counter()
    frame = da.isel(time=k).values  # the only full frame the tests read
    assert time.perf_counter() - start < 5
    expected = dn.astype(np.float32) * np.float32(0.5) - np.float32(32)  # exact in float32
    expected[dn == 255] = np.nan
    assert np.array_equal(frame, expected, equal_nan=True)
    del expected
    assert np.nanmin(frame) == -32.0  # undetect (DN 0) is kept as a value
    x = src.transform.c + src.transform.a * 100.5
    assert da["x"].values[100] == pytest.approx(x)


def test_radolan_multiband_geotiff_without_crs():
    path = shared("radolan-rw-20221018") / "radolan_rw_20221018_hourly_24band.tif"
    da = open_frames(path)
    _assert_dims(da, 24, (900, 900))
    _assert_times(da, "2022-10-18T00:50", "2022-10-18T23:50", 24, 3600)
    assert da.attrs["crs_wkt"] == ""
    with rasterio.open(path) as src:
        assert da.attrs["transform"] == list(src.transform)[:6]
        band = src.read(6)
    np.testing.assert_array_equal(da.isel(time=5).values, band)
    assert da["y"].values[0] == -3758645.0 - 500.0


def test_era5_latlon_netcdf_keeps_y_order():
    path = shared("era5-t2m-uk-201903") / "era5_t2m_2019-03_uk_hourly.nc"
    da = open_frames(path, variable="t2m")
    _assert_dims(da, 744, (33, 49))
    _assert_times(da, "2019-03-01T00:00", "2019-03-31T23:00", 744, 3600)
    assert pyproj.CRS(da.attrs["crs_wkt"]) == pyproj.CRS.from_epsg(4326)
    assert da["y"].values[0] == 58.0 and da["y"].values[-1] == 50.0  # north first, as stored
    assert da.attrs["transform"] == [0.25, 0.0, -10.125, 0.0, -0.25, 58.125]
    assert da.attrs["units"] == "K"
    np.testing.assert_allclose(da.isel(time=300).values, _raw_cf(path, "t2m", 300), rtol=1e-6)


def test_wfde5_four_files_as_channels():
    folder = shared("wfde5-gb-201701")
    names = ["Tair", "pr", "Qair", "Wind"]
    da = open_frames(folder, variable=names)
    assert da.dims == ("time", "channel", "y", "x")
    assert da.shape == (744, 4, 20, 28) and da.dtype == np.float32
    assert list(da["channel"].values) == names
    assert da.name == "Tair+pr+Qair+Wind" and da.attrs["source_variable"] == names
    assert da.attrs["channel_units"] == ["K", "kg m-2 s-1", "kg kg-1", "m s-1"]
    _assert_times(da, "2017-01-01T00:00", "2017-01-31T23:00", 744, 3600)
    assert pyproj.CRS(da.attrs["crs_wkt"]) == pyproj.CRS.from_epsg(4326)
    assert len(da.attrs["sources"]) == 4
    frame = da.isel(time=123).values
    np.testing.assert_allclose(
        frame[2], _raw_cf(folder / "specific_humidity.nc", "Qair", 123), rtol=1e-6
    )
    assert 0.5 < np.isnan(frame[0]).mean() < 0.6  # sea
    # one of them alone, reversed order
    one = open_frames(folder / "wind_speed.nc")
    assert one.name == "Wind" and one.attrs["units"] == "m s-1"
    rev = open_frames(folder, variable=names[::-1])
    np.testing.assert_array_equal(rev.isel(time=123).values, frame[::-1])


def test_several_candidates_are_listed():
    folder = shared("wfde5-gb-201701")
    with pytest.raises(InputError, match=r"Tair.*pr.*Qair.*Wind|several"):
        open_frames(folder)


def test_glob_and_list_of_sources():
    folder = shared("radar-bom-66-20201031")
    da = open_frames(str(folder / "66_20201031_01*.nc"))
    _assert_times(da, "2020-10-31T01:00", "2020-10-31T01:50", 6, 600)
    files = sorted(folder.glob("66_20201031_00*.nc"))
    da = open_frames([files[3], files[1], str(files[0])])
    assert list(da["time"].values) == [T(f"2020-10-31T00:{m}0") for m in "013"]


# -- layouts and metadata, on small written files ------------------------------------------------


def _nc(path: Path, data, *, name="rain", y=None, x=None, times=None, dims=("y", "x"), **extra):
    """A tiny NetCDF: `times` -> a time dimension; `extra` -> variables/attributes (see uses)."""
    with netCDF4.Dataset(path, "w") as ds:
        data = np.asarray(data)
        shape = data.shape[-2:]
        for dim, n in zip(dims, shape, strict=True):
            ds.createDimension(dim, n)
        var_dims = dims
        if times is not None:
            ds.createDimension("time", len(times))
            tv = ds.createVariable("time", "i8", ("time",))
            tv.units = "minutes since 2021-06-01 00:00:00"
            tv[:] = times
            var_dims = ("time", *dims)
        for dim, values in zip(dims, (y, x), strict=True):
            if values is not None:
                cv = ds.createVariable(dim, "f8", (dim,))
                cv[:] = values
        packed = extra.pop("packed", None)
        if packed:
            var = ds.createVariable(name, "i2", var_dims, fill_value=packed["_FillValue"])
            var.set_auto_maskandscale(False)
            var.scale_factor, var.add_offset = packed["scale_factor"], packed["add_offset"]
            var[:] = data
        else:
            var = ds.createVariable(name, "f4", var_dims)
            var[:] = data
        for key, value in extra.pop("var_attrs", {}).items():
            var.setncattr(key, value)
        for key, value in extra.pop("global_attrs", {}).items():
            ds.setncattr(key, value)
        for vname, (vdims, value, attrs) in extra.items():
            ev = ds.createVariable(vname, "i8" if not vdims else "f4", vdims)
            ev[...] = value
            for key, val in attrs.items():
                ev.setncattr(key, val)
    return path


def _tif(path: Path, data, *, crs="EPSG:3035", tags=None, band_tags=None, descriptions=None, **kw):
    data = np.asarray(data)
    data = data[None] if data.ndim == 2 else data
    profile = dict(
        driver="GTiff",
        width=data.shape[2],
        height=data.shape[1],
        count=data.shape[0],
        dtype=data.dtype,
        crs=crs,
        transform=Affine(1000, 0, 4000000, 0, -1000, 3000000),
        **kw,
    )
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if tags:
            dst.update_tags(**tags)
        for b, btags in enumerate(band_tags or [], start=1):
            dst.update_tags(b, **btags)
        for b, text in enumerate(descriptions or [], start=1):
            dst.set_band_description(b, text)
    return path


def test_time_from_coordinate_attribute_name_and_pattern(tmp_path):
    frame = np.ones((3, 4), np.float32)
    a = _nc(tmp_path / "a.nc", frame[None], times=[10])  # time dimension of length 1
    b = _nc(tmp_path / "b.nc", frame, global_attrs={"time": "2021-06-01T00:20:00Z"})
    c = _nc(tmp_path / "radar_20210601_0030.nc", frame)  # the name only
    epoch = {"units": "seconds since 1970-01-01"}
    d = _nc(tmp_path / "d.nc", frame, valid_time=((), 1622508600, epoch))
    da = open_frames([d, c, b, a])
    minutes = (da["time"].values - T("2021-06-01")).astype("timedelta64[m]").astype(int)
    assert list(minutes) == [10, 20, 30, 50]
    assert da.attrs["time_step"] == 600
    assert da.attrs["sources"] == [str(p) for p in (a, b, c, d)]
    assert da.attrs["crs_wkt"] == ""
    assert da.attrs["transform"] == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]  # pixel space, as GDAL

    names = [tmp_path / f"x{h:02d}0601X.nc" for h in (1, 2)]
    for p in names:
        _nc(p, frame)
    with pytest.raises(InputError, match="time_pattern"):
        open_frames(names)
    da = open_frames(names, time_pattern="x%H%m%dX")
    assert list(da["time"].dt.hour.values) == [1, 2]
    with pytest.raises(InputError, match=r"x01.*time_pattern '%Y%m%d' not found"):
        open_frames(names, time_pattern="%Y%m%d")
    with pytest.raises(ConfigError, match="%Q"):
        open_frames(names, time_pattern="%Q")


def test_packing_fill_latlon_and_grid_mapping(tmp_path):
    raw = np.array([[0, 10, -1], [20, -32768, 5]], dtype=np.int16)
    lat, lon = np.array([51.0, 50.0]), np.array([1.0, 1.5, 2.0])
    path = _nc(
        tmp_path / "p_202106010000.nc",
        raw,
        dims=("lat", "lon"),
        y=lat,
        x=lon,
        packed={"_FillValue": -32768, "scale_factor": 0.5, "add_offset": 1.0},
        var_attrs={"missing_value": np.int16(-1), "units": "mm", "long_name": "rain"},
    )
    da = open_frames(path)
    expected = [[1.0, 6.0, np.nan], [11.0, np.nan, 3.5]]
    np.testing.assert_array_equal(da.isel(time=0).values, np.array(expected, np.float32))
    assert list(da["y"].values) == [51.0, 50.0] and list(da["x"].values) == [1.0, 1.5, 2.0]
    assert da.attrs["units"] == "mm" and da.attrs["long_name"] == "rain"
    assert pyproj.CRS(da.attrs["crs_wkt"]) == pyproj.CRS.from_epsg(4326)

    lcc = pyproj.CRS.from_epsg(3035)
    gm = {"grid_mapping_name": "lambert_azimuthal_equal_area", "crs_wkt": lcc.to_wkt()}
    path = _nc(
        tmp_path / "q_202106010000.nc",
        raw.astype(np.float32),
        dims=("projection_y_coordinate", "projection_x_coordinate"),
        y=[2500.0, 1500.0],
        x=[500.0, 1500.0, 2500.0],
        var_attrs={"grid_mapping": "crs"},
        crs=((), 0, gm),
    )
    da = open_frames(path)
    assert pyproj.CRS(da.attrs["crs_wkt"]) == lcc
    assert da.attrs["transform"] == [1000.0, 0.0, 0.0, 0.0, -1000.0, 3000.0]


def test_geotiffs_tags_descriptions_scale_and_nodata(tmp_path):
    dn = np.array([[0, 10, 255], [4, 255, 2]], dtype=np.uint8)
    per_frame = [
        _tif(tmp_path / "a.tif", dn, nodata=255, tags={"TIFFTAG_DATETIME": "2021:06:01 00:10:00"}),
        _tif(tmp_path / "b.tif", dn, nodata=255, tags={"time": "2021-06-01T00:00:00Z"}),
    ]
    for path in per_frame:
        with rasterio.open(path, "r+") as dst:
            dst.scales, dst.offsets = (0.5,), (-32.0,)
    da = open_frames(per_frame)
    assert list(da["time"].dt.minute.values) == [0, 10]
    expected = np.where(dn == 255, np.nan, 0.5 * dn - 32.0).astype(np.float32)
    np.testing.assert_array_equal(da.isel(time=1).values, expected)
    assert pyproj.CRS(da.attrs["crs_wkt"]) == pyproj.CRS.from_epsg(3035)
    assert da.attrs["transform"] == [1000.0, 0.0, 4000000.0, 0.0, -1000.0, 3000000.0]
    assert open_frames(per_frame, variable="band_data").name == "band_data"

    stack = np.arange(3 * 2 * 3, dtype=np.float32).reshape(3, 2, 3)
    multi = _tif(tmp_path / "m.tif", stack, descriptions=["20210601-0200", "20210601-0100", "x"])
    with rasterio.open(multi, "r+") as dst:
        dst.update_tags(3, time="2021-06-01T03:00:00")
    with pytest.raises(InputError, match="non-monotonic"):
        open_frames(multi)
    multi = _tif(tmp_path / "n.tif", stack, descriptions=["20210601-0100", "20210601-0200", "x"])
    with rasterio.open(multi, "r+") as dst:
        dst.update_tags(3, time="2021-06-01T03:00:00")
    da = open_frames(multi)
    assert list(da["time"].dt.hour.values) == [1, 2, 3]
    np.testing.assert_array_equal(da.values, stack)


def test_windows_and_pickling_of_the_lazy_array(tmp_path):
    data = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    path = _nc(tmp_path / "s.nc", data, times=[0, 5, 10, 15])
    da = open_frames(path)
    keys = [
        (slice(1, 3), slice(1, 4), slice(2, 5)),
        (2, slice(None), 3),
        (slice(None, None, 2), slice(4, 0, -2), slice(None, None, 3)),
        (Ellipsis, [0, 2]),
        (slice(3, 3),),
    ]
    refs = [[r] for r in netcdf.scan(path, None, None).variables["rain"].refs]
    lazy = FrameStack(refs, (5, 6), channels=False)
    for key in keys:
        np.testing.assert_array_equal(lazy[key], data[key])
    np.testing.assert_array_equal(da.isel(x=slice(1, 3), y=3).values, data[:, 3, 1:3])
    again = pickle.loads(pickle.dumps(da))
    np.testing.assert_array_equal(again.values, data)


def test_fmi_style_gdal_metadata_items(tmp_path):
    dn = np.array([[0, 100], [255, 64]], dtype=np.uint8)
    path = _tif(tmp_path / "frame.tif", dn)
    xml = (
        "<GDALMetadata>\n"
        '<Item name="Observation time" format="YYYYMMDDhhmm">202106011445</Item>\n'
        '<Item name="Quantity" unit="dBZ">Corrected reflectivity</Item>\n'
        '<Item name="Gain">0.500000</Item>\n<Item name="Offset">-32.000000</Item>\n'
        '<Item name="Nodata">255</Item>\n</GDALMetadata>\n'
    )
    header_items = geotiff._gdal_items(xml)[0]
    assert header_items["gain"][0] == "0.500000"
    assert header_items["observation time"] == ("202106011445", {"format": "YYYYMMDDhhmm"})
    with rasterio.open(path, "r+") as dst:
        dst.update_tags(GDAL_METADATA=xml)  # stays raw, as in FMI's files
    da = open_frames(path)
    assert da["time"].values[0] == T("2021-06-01T14:45")
    assert da.attrs["units"] == "dBZ" and da.attrs["long_name"] == "Corrected reflectivity"
    np.testing.assert_array_equal(da.values[0], np.array([[-32, 18], [np.nan, 0]], np.float32))


# -- errors --------------------------------------------------------------------------------------


def test_missing_paths_globs_and_empty_directories(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        open_frames(tmp_path / "absent.nc")
    with pytest.raises(InputError, match="matches nothing"):
        open_frames(str(tmp_path / "*.nc"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"empty.*no \.nc"):
        open_frames(tmp_path / "empty")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "README.txt").write_text("no data here")
    with pytest.raises(InputError, match="notes"):
        open_frames(tmp_path / "notes")
    with pytest.raises(InputError, match=r"README\.txt.*neither NetCDF nor GeoTIFF"):
        open_frames(tmp_path / "notes" / "README.txt")


def test_truncated_netcdf_among_good_files_is_named(tmp_path):
    folder = shared("radar-bom-66-20201031")
    for src in sorted(folder.glob("66_20201031_00*.nc"))[:3]:
        shutil.copy(src, tmp_path / src.name)
        os.chmod(tmp_path / src.name, 0o644)
    bad = tmp_path / "66_20201031_001000.prcp-c10.nc"
    os.truncate(bad, bad.stat().st_size // 2)
    with pytest.raises(InputError, match=r"66_20201031_001000\.prcp-c10\.nc"):
        open_frames(tmp_path)
    # classic format cut short: it would open and read as fill values
    frames = np.zeros((3, 20, 30), np.float32)
    for k in range(3):
        with netCDF4.Dataset(tmp_path / f"c{k}.nc", "w", format="NETCDF3_CLASSIC") as ds:
            ds.createDimension("time", None)
            ds.createDimension("y", 20)
            ds.createDimension("x", 30)
            tv = ds.createVariable("time", "f8", ("time",))
            tv.units = "hours since 2021-01-01"
            tv[:] = [3 * k, 3 * k + 1, 3 * k + 2]
            ds.createVariable("rain", "f4", ("time", "y", "x"))[:] = frames
    os.truncate(tmp_path / "c1.nc", (tmp_path / "c1.nc").stat().st_size - 3000)
    with pytest.raises(InputError, match=r"c1\.nc.*truncated"):
        open_frames(str(tmp_path / "c*.nc"))


def test_corrupt_geotiffs_are_named_at_open_or_at_read(tmp_path):
    data = np.random.default_rng(0).random((200, 300), dtype=np.float32)
    paths = [_tif(tmp_path / f"f_2021060100{m}0.tif", data, compress="deflate") for m in range(3)]
    corrupt = paths[1]
    size = corrupt.stat().st_size
    with open(corrupt, "r+b") as f:  # garbage in the middle: the header is fine
        f.seek(size // 2)
        f.write(b"\xff" * 4000)
    da = open_frames(tmp_path)
    np.testing.assert_array_equal(da.isel(time=0).values, data)
    with pytest.raises(InputError, match=r"f_202106010010\.tif.*cannot read"):
        da.isel(time=1).compute()
    os.truncate(corrupt, size // 2)
    with pytest.raises(InputError, match=r"f_202106010010\.tif: truncated GeoTIFF"):
        open_frames(tmp_path)


def test_missing_variable_lists_the_available_ones(tmp_path):
    path = _nc(tmp_path / "r_202106010000.nc", np.zeros((2, 2)), name="rain")
    with pytest.raises(InputError, match=r"r_202106010000\.nc.*'snow'.*available: rain"):
        open_frames(path, variable="snow")
    with pytest.raises(InputError, match="rain"):
        open_frames(path, variable=["rain", "snow"])
    tif = _tif(tmp_path / "t_202106010000.tif", np.zeros((2, 2), np.float32))
    with pytest.raises(InputError, match="available: band_data"):
        open_frames(tif, variable="rain")


def test_different_grids_name_the_first_differing_file(tmp_path):
    grid = {"y": [1.0, 0.0], "x": [0.0, 1.0, 2.0]}
    a = _nc(tmp_path / "a_202106010000.nc", np.zeros((2, 3)), **grid)
    b = _nc(tmp_path / "b_202106010010.nc", np.zeros((2, 3)), **grid)
    shape = _nc(tmp_path / "c_202106010020.nc", np.zeros((3, 3)), y=[2.0, 1.0, 0.0], x=grid["x"])
    moved = _nc(tmp_path / "d_202106010030.nc", np.zeros((2, 3)), y=grid["y"], x=[5.0, 6.0, 7.0])
    with pytest.raises(InputError, match=r"c_202106010020\.nc.*shape"):
        open_frames([a, b, shape, moved])
    with pytest.raises(InputError, match=r"d_202106010030\.nc.*x coordinates"):
        open_frames([a, b, moved])
    epsg = _nc(
        tmp_path / "e_202106010040.nc", np.zeros((2, 3)), var_attrs={"proj4": "+proj=longlat"}
    )
    plain = _nc(tmp_path / "f_202106010050.nc", np.zeros((2, 3)))
    with pytest.raises(InputError, match=r"f_202106010050\.nc.*CRS"):
        open_frames([epsg, plain])


def test_duplicate_and_unordered_times(tmp_path):
    a = _nc(tmp_path / "one_202106010000.nc", np.zeros((2, 2)))
    b = _nc(tmp_path / "two_202106010000.nc", np.zeros((2, 2)))
    with pytest.raises(
        InputError, match=r"duplicate time 2021-06-01T00:00:00 in .*two_.*and .*one_"
    ):
        open_frames([b, a])
    c = _nc(tmp_path / "stack.nc", np.zeros((3, 2, 2)), times=[0, 20, 10])
    with pytest.raises(InputError, match=r"stack\.nc.*non-monotonic"):
        open_frames(c)
    d = _nc(tmp_path / "stack2.nc", np.zeros((2, 2, 2)), times=[5, 5])
    with pytest.raises(InputError, match=r"stack2\.nc.*duplicate"):
        open_frames(d)


def test_no_time_says_where_it_looked(tmp_path):
    path = _nc(tmp_path / "frame.nc", np.zeros((2, 2)))
    with pytest.raises(InputError, match=r"frame\.nc.*looked.*valid_time.*time_pattern"):
        open_frames(path)
    tif = _tif(tmp_path / "frame.tif", np.zeros((2, 2), np.float32))
    with pytest.raises(InputError, match=r"frame\.tif.*TIFFTAG_DATETIME.*time_pattern"):
        open_frames(tif)


# -- helpers: times, CRS text, packing -----------------------------------------------------------


@pytest.mark.parametrize(
    "values, units, calendar, expected",
    [
        (
            [0, 90],
            "minutes since 2020-01-01 00:00:00 UTC",
            None,
            ["2020-01-01", "2020-01-01T01:30"],
        ),
        ([1 / 6], "hours since 2020-01-01", "gregorian", ["2020-01-01T00:10"]),
        ([1026359.0], "hours since 1900-01-01", "standard", ["2017-01-31T23:00"]),
        ([0], "seconds since 2020-01-01T02:00:00+02:00", None, ["2020-01-01T00:00"]),
        ([59], "days since 2001-1-1", "noleap", ["2001-03-01"]),
    ],
)
def test_cf_time_decoding(values, units, calendar, expected):
    got = times.decode_cf(np.array(values), units, calendar)
    assert got.dtype == np.dtype("datetime64[ns]")
    assert list(got) == [T(e, "ns") for e in expected]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("2022-10-18T00:50:00Z", "2022-10-18T00:50"),
        ("2016:09:28 14:45:00", "2016-09-28T14:45"),
        ("201609281445", "2016-09-28T14:45"),
        ("2021-06-01T02:00:00+02:00", "2021-06-01T00:00"),
        ("Corrected reflectivity", None),
    ],
)
def test_time_strings(text, expected):
    got = times.parse_time_string(text)
    assert got == (T(expected, "ns") if expected else None)


@pytest.mark.parametrize(
    "name, expected",
    [
        ("66_20201031_235000.prcp-c10.nc", "2020-10-31T23:50"),
        ("201609281445_FINUTM.tif", "2016-09-28T14:45"),
        ("T_PAAH21_C_EUMS_20200101T0315.nc", "2020-01-01T03:15"),
        ("run1202010310000.nc", None),  # 13 digits: no date hidden in a longer number
    ],
)
def test_time_in_file_names(name, expected):
    got = times.time_in_text(name, times.AUTO_PATTERNS)
    assert got == (T(expected, "ns") if expected else None)


def test_proj_string_with_prose_and_km_axes():
    text = "+proj=stere +lat_0=90 +lon_0=0.0 +lat_ts=60.0 +a=6378.137 +b=6356.752, 1 km pixels"
    crs = pyproj.CRS(crs_mod.wkt_from_text(text))
    assert crs.ellipsoid.semi_minor_metre == pytest.approx(6356752)
    assert crs_mod.crs_unit_factor(crs.to_wkt()) == 1000.0


def test_packing_unsigned_and_valid_range():
    raw = np.array([-1, 0, 5, 100], dtype=np.int8)
    got = Packing(scale=2.0, unsigned=True, fills=(-1.0,)).apply(raw)
    np.testing.assert_array_equal(got, [np.nan, 0, 10, 200])
    got = Packing(valid_min=0, valid_max=50).apply(raw.astype(np.int32))
    np.testing.assert_array_equal(got, [np.nan, 0, 5, np.nan])
    assert got.dtype == np.float32
