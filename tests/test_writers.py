"""Forecast writers (CF NetCDF, GeoTIFF), atomic replacement and the output lock.

The forecast template (`forecast_files.make_template`) is built as the engine builds it: lazy
data variables, lead coordinates, a `crs` grid-mapping variable from pyproj and ACDD attributes.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
import tracemalloc
from pathlib import Path

import dask.array as da
import netCDF4
import numpy as np
import pyproj
import pytest
import rasterio
import xarray as xr
from forecast_files import (
    PROVENANCE,
    REFERENCE,
    forecast_file,
    lead_values,
    make_leads,
    make_template,
    write_dataset,
)

from stforecast.errors import ConfigError, InputError, LockHeldError
from stforecast.io import lock as lock_mod
from stforecast.io.atomic import host, remove_stale_temps, temp_prefix
from stforecast.io.cf import FILL_VALUE, TIME_UNITS
from stforecast.io.lock import lock_path, output_lock
from stforecast.io.target import is_forecast, replaceable
from stforecast.io.times import iso_duration
from stforecast.io.write import FORMATS, SUFFIX, write_forecast

ROOT = Path(__file__).resolve().parents[1]


def temps(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if ".tmp" in p.name)


# --------------------------------------------------------------------------------------------
# NetCDF
# --------------------------------------------------------------------------------------------


def test_netcdf_read_back_with_xarray(tmp_path):
    path = write_forecast(tmp_path / "fc.nc", make_template(), make_leads())
    assert path == tmp_path / "fc.nc"
    with xr.open_dataset(path) as ds:
        values = ds["rainrate"].values
        assert values.dtype == np.float32 and values.shape == (6, 40, 50)
        expected = np.stack([lead_values(k) for k in range(6)])
        np.testing.assert_array_equal(np.isnan(values), np.isnan(expected))
        np.testing.assert_array_equal(values, expected)  # NaN compare equal here
        times = REFERENCE + np.arange(1, 7) * np.timedelta64(10, "m")
        np.testing.assert_array_equal(ds["time"].values, times)
        assert ds["forecast_reference_time"].values == REFERENCE
        period = ds["forecast_period"].values
        # units "s" is not decoded to timedelta by every xarray version
        seconds = period / np.timedelta64(1, "s") if period.dtype.kind == "m" else period
        np.testing.assert_array_equal(seconds, np.arange(1, 7) * 600)
        assert {"forecast_period", "forecast_reference_time"} <= set(ds["rainrate"].coords)
        assert ds["rainrate"].encoding["coordinates"] == "forecast_reference_time forecast_period"
        assert ds["rainrate"].attrs["grid_mapping"] == "crs"
        assert ds["rainrate"].attrs["standard_name"] == "rainfall_rate"
        assert ds["rainrate"].attrs["units"] == "mm h-1"
        crs = pyproj.CRS.from_wkt(ds["crs"].attrs["crs_wkt"])
        assert crs == pyproj.CRS.from_epsg(3035)
        assert ds["crs"].attrs["grid_mapping_name"] == "lambert_azimuthal_equal_area"
        assert json.loads(ds.attrs["provenance"]) == PROVENANCE
        assert json.loads(ds.attrs["geotransform"]) == make_template().attrs["geotransform"]
        assert ds.attrs["Conventions"] == "CF-1.10, ACDD-1.3"
        assert ds["y"].values[0] > ds["y"].values[-1]  # order kept: north first


def test_netcdf_raw_attributes(tmp_path):
    path = write_forecast(tmp_path / "fc.nc", make_template(), make_leads())
    with netCDF4.Dataset(path) as nc:
        assert nc.data_model == "NETCDF4"
        assert nc.dimensions["time"].size == 6 and not nc.dimensions["time"].isunlimited()
        time = nc["time"]
        assert time.units == TIME_UNITS == "seconds since 1970-01-01 00:00:00"
        assert time.calendar == "proleptic_gregorian"
        assert (time.standard_name, time.axis) == ("time", "T")
        assert time.dtype == np.int64
        assert (
            time[0]
            == (REFERENCE - np.datetime64("1970-01-01", "ns")) / np.timedelta64(1, "s") + 600
        )
        frt = nc["forecast_reference_time"]
        assert frt.dimensions == () and frt.standard_name == "forecast_reference_time"
        assert frt.units == TIME_UNITS and frt.calendar == time.calendar
        assert frt[...] == time[0] - 600
        fp = nc["forecast_period"]
        assert (fp.units, fp.standard_name) == ("s", "forecast_period")
        assert list(fp[:]) == [600, 1200, 1800, 2400, 3000, 3600]
        for name, axis, standard in (
            ("y", "Y", "projection_y_coordinate"),
            ("x", "X", "projection_x_coordinate"),
        ):
            var = nc[name]
            assert (var.axis, var.standard_name, var.units) == (axis, standard, "m")
            assert "_FillValue" not in var.ncattrs()
        rain = nc["rainrate"]
        assert rain.dtype == np.float32
        assert rain._FillValue == FILL_VALUE and rain._FillValue.dtype == np.float32
        assert rain.coordinates == "forecast_reference_time forecast_period"
        assert rain.grid_mapping == "crs"
        assert rain.chunking() == [1, 40, 50]
        filters = rain.filters()
        assert filters["zlib"] and filters["shuffle"] and filters["complevel"] == 4
        rain.set_auto_mask(False)
        raw = rain[2]
        assert (raw[:5, :7] == FILL_VALUE).all()  # NaN stored as the fill value
        assert not np.isnan(raw).any()
        assert "crs_wkt" in nc["crs"].ncattrs()
        assert nc.getncattr("source") == "stforecast 0.0.test convlstm"


def test_netcdf_readable_by_gdal(tmp_path):
    path = write_forecast(tmp_path / "fc.nc", make_template(), make_leads())
    with rasterio.open(f'netcdf:"{path}":rainrate') as src:
        assert src.count == 6 and (src.height, src.width) == (40, 50)
        assert src.crs.to_epsg() == 3035
        assert tuple(src.transform)[:6] == tuple(make_template().attrs["geotransform"])
        assert src.nodata == FILL_VALUE
        band = src.read(1, masked=True)
        assert band.mask[:5, :7].all() and not band.mask[5:, 7:].any()


def test_template_data_is_never_loaded(tmp_path):
    def explode(block):
        raise AssertionError("the template's data was computed")

    lazy = da.zeros((6, 40, 50), dtype=np.float32, chunks=(1, 40, 50)).map_blocks(
        explode, dtype=np.float32
    )
    template = make_template(data=lazy)
    write_forecast(tmp_path / "fc.nc", template, make_leads())
    write_forecast(tmp_path / "fc.tif", template, make_leads(), "geotiff")


def test_several_variables_and_auxiliary_coordinates(tmp_path):
    template = make_template(names=("rainrate", "rainrate_p90"))
    lon, lat = np.meshgrid(template["x"].values / 1e5, template["y"].values / 1e5)
    template = template.assign_coords(
        lat=(("y", "x"), lat, {"standard_name": "latitude", "units": "degrees_north"}),
        lon=(("y", "x"), lon, {"standard_name": "longitude", "units": "degrees_east"}),
    )
    names = ("rainrate", "rainrate_p90")
    path = write_forecast(tmp_path / "fc.nc", template, make_leads(names=names))
    with xr.open_dataset(path) as ds:
        assert set(ds.data_vars) == {"rainrate", "rainrate_p90", "crs"}
        np.testing.assert_array_equal(ds["rainrate_p90"].values[4], lead_values(4))
        np.testing.assert_allclose(ds["lat"].values, lat)
        coordinates = ds["rainrate"].encoding["coordinates"].split()
        assert coordinates == ["forecast_reference_time", "forecast_period", "lat", "lon"]


def test_write_dataset_convenience(tmp_path):
    template = make_template()
    data = np.stack([lead_values(k) for k in range(6)])
    ds = template.copy()
    ds["rainrate"] = (("time", "y", "x"), data, template["rainrate"].attrs)
    for fmt in FORMATS:
        path = write_dataset(ds, tmp_path / f"fc{SUFFIX[fmt]}", fmt)
        assert path.exists()
    with xr.open_dataset(tmp_path / "fc.nc") as back:
        np.testing.assert_array_equal(back["rainrate"].values, data)


def test_template_without_geotransform_or_crs(tmp_path):
    template = make_template(geotransform=False)
    path = write_forecast(tmp_path / "fc.tif", template, make_leads(), "geotiff")
    with rasterio.open(path) as src:
        assert tuple(src.transform)[:6] == (1000.0, 0.0, 4_000_000.0, 0.0, -1000.0, 3_000_000.0)
    bare = template.drop_vars("crs")
    del bare["rainrate"].attrs["grid_mapping"]
    path = write_forecast(tmp_path / "bare.nc", bare, make_leads())
    with netCDF4.Dataset(path) as nc:
        assert "crs" not in nc.variables and "grid_mapping" not in nc["rainrate"].ncattrs()


# --------------------------------------------------------------------------------------------
# CF conformance (IOOS compliance checker)
# --------------------------------------------------------------------------------------------


def cf_report(path: Path, tmp_path: Path) -> dict:
    runner = pytest.importorskip("compliance_checker.runner")
    runner.CheckSuite.load_all_available_checkers()
    if "cf:1.10" not in runner.CheckSuite.checkers:
        pytest.skip("this compliance-checker has no cf:1.10 suite")
    out = tmp_path / f"{path.name}.cf.json"
    runner.ComplianceChecker.run_checker(
        str(path),
        ["cf:1.10"],
        verbose=0,
        criteria="normal",
        output_filename=str(out),
        output_format="json",
    )
    return json.loads(out.read_text())["cf:1.10"]


def failures(report: dict, priority: str) -> list:
    return [
        (r["name"], r["msgs"])
        for r in report[f"{priority}_priorities"]
        if r["value"][0] < r["value"][1]
    ]


def test_cf_compliance_of_a_grid_without_crs(tmp_path):
    """Pixel coordinates (no CRS, as the engine makes for ungeoreferenced inputs)."""
    template = make_template(geotransform=False).drop_vars("crs")
    del template["rainrate"].attrs["grid_mapping"]
    template = template.assign_coords(
        y=("y", np.arange(40) + 0.5, {"long_name": "row", "units": "1", "axis": "Y"}),
        x=("x", np.arange(50) + 0.5, {"long_name": "column", "units": "1", "axis": "X"}),
    )
    path = write_forecast(tmp_path / "fc.nc", template, make_leads())
    with netCDF4.Dataset(path) as nc:
        assert "axis" not in nc["x"].ncattrs() and "standard_name" not in nc["x"].ncattrs()
    assert failures(cf_report(path, tmp_path), "high") == []


@pytest.mark.parametrize(
    "latlon,dims",
    [(False, ("y", "x")), (True, ("y", "x")), (True, ("lat", "lon"))],
    ids=["epsg3035", "latlon-yx", "latlon-named"],
)
def test_cf_compliance(tmp_path, latlon, dims):
    template = make_template(latlon=latlon, dims=dims)
    path = write_forecast(tmp_path / "fc.nc", template, make_leads())
    report = cf_report(path, tmp_path)
    assert failures(report, "high") == []
    # Medium and low are recommendations; the writer currently meets them all.
    assert failures(report, "medium") == []
    assert report["scored_points"] == report["possible_points"]


# --------------------------------------------------------------------------------------------
# GeoTIFF
# --------------------------------------------------------------------------------------------


def test_geotiff_read_back(tmp_path):
    template = make_template()
    path = write_forecast(tmp_path / "fc.tif", template, make_leads(), "geotiff")
    assert temps(tmp_path) == [] and sorted(os.listdir(tmp_path)) == ["fc.tif"]  # no .aux.xml
    with rasterio.open(path) as src:
        assert src.driver == "GTiff" and src.count == 6 and (src.height, src.width) == (40, 50)
        assert src.crs == rasterio.crs.CRS.from_epsg(3035)
        assert pyproj.CRS.from_wkt(src.crs.to_wkt()).equals(pyproj.CRS.from_epsg(3035))
        assert tuple(src.transform)[:6] == tuple(template.attrs["geotransform"])
        assert src.nodata == FILL_VALUE
        assert src.compression == rasterio.enums.Compression.deflate
        assert src.profile["tiled"] and src.profile["interleave"] == "band"
        assert src.dtypes == ("float32",) * 6
        assert src.descriptions == ("+PT10M", "+PT20M", "+PT30M", "+PT40M", "+PT50M", "+PT1H")
        assert src.units == ("mm h-1",) * 6
        assert src.tags(3) == {
            "valid_time": "2024-05-01T12:30:00Z",
            "forecast_period": "PT30M",
            "forecast_reference_time": "2024-05-01T12:00:00Z",
            "units": "mm h-1",
        }
        tags = src.tags()
        assert tags["TIFFTAG_DATETIME"] == "2024:05:01 12:00:00"
        assert tags["TIFFTAG_SOFTWARE"] == "stforecast 0.0.test convlstm"
        assert json.loads(tags["provenance"]) == PROVENANCE
        assert tags["variable"] == "rainrate" and tags["units"] == "mm h-1"
        for k in range(6):
            band = src.read(k + 1)
            expected = lead_values(k)
            nan = np.isnan(expected)
            assert (band[nan] == FILL_VALUE).all()
            np.testing.assert_array_equal(band[~nan], expected[~nan])
            masked = src.read(k + 1, masked=True)
            np.testing.assert_array_equal(masked.mask, nan)


def test_geotiff_latlon(tmp_path):
    template = make_template(latlon=True, dims=("lat", "lon"))
    path = write_forecast(tmp_path / "fc.tif", template, make_leads(), "geotiff")
    with rasterio.open(path) as src:
        assert src.crs.to_epsg() == 4326
        np.testing.assert_allclose(tuple(src.transform)[:6], template.attrs["geotransform"])


def test_geotiff_refuses_several_variables(tmp_path):
    template = make_template(names=("rainrate", "rainrate_p90"))
    with pytest.raises(ValueError, match="one variable"):
        write_forecast(tmp_path / "fc.tif", template, make_leads(), "geotiff")
    # One file per variable is the way.
    write_forecast(tmp_path / "fc.tif", template[["rainrate", "crs"]], make_leads(), "geotiff")
    assert sorted(os.listdir(tmp_path)) == ["fc.tif"]


def test_geotransform_must_match_coordinates(tmp_path):
    template = make_template()
    template.attrs["geotransform"] = [1000.0, 0.0, 0.0, 0.0, -1000.0, 0.0]
    with pytest.raises(ValueError, match="geotransform"):
        write_forecast(tmp_path / "fc.tif", template, make_leads(), "geotiff")
    assert os.listdir(tmp_path) == []


def test_iso_duration():
    s = np.timedelta64(1_000_000_000, "ns")  # a lead time, as the GeoTIFF writer has it
    assert iso_duration(600 * s) == "PT10M"
    assert iso_duration(3600 * s) == "PT1H"
    assert iso_duration(5400 * s) == "PT1H30M"
    assert iso_duration(0) == "PT0S"
    assert iso_duration(-300 * s) == "-PT5M"
    assert iso_duration(s // 2) == "PT0.5S"
    assert iso_duration(86400 * s + 61 * s, days=False) == "PT24H1M1S"  # band descriptions


# --------------------------------------------------------------------------------------------
# Errors and atomicity
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("n_leads", [5, 7])
def test_wrong_number_of_leads_writes_nothing(tmp_path, fmt, n_leads):
    path = tmp_path / f"fc{SUFFIX[fmt]}"
    with pytest.raises(ValueError, match="lead"):
        write_forecast(path, make_template(), make_leads(n_leads), fmt)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "lead",
    [{"rainrate": np.zeros((40, 49))}, {"other": np.zeros((40, 50))}, np.zeros((40, 50))],
    ids=["shape", "name", "not-a-dict"],
)
def test_bad_lead_writes_nothing(tmp_path, lead):
    with pytest.raises(ValueError, match="lead 0"):
        write_forecast(tmp_path / "fc.nc", make_template(), iter([lead]))
    assert os.listdir(tmp_path) == []


def test_bad_template_and_format(tmp_path):
    with pytest.raises(ValueError, match="format"):
        write_forecast(tmp_path / "fc.zarr", make_template(), make_leads(), "zarr")
    with pytest.raises(ValueError, match="forecast_reference_time"):
        write_forecast(
            tmp_path / "fc.nc",
            make_template().drop_vars("forecast_reference_time"),
            make_leads(),
        )
    assert os.listdir(tmp_path) == []


def failing_leads(at: int, error: BaseException):
    for k, lead in enumerate(make_leads(offset=100.0)):
        if k == at:
            raise error
        yield lead


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    "error",
    [RuntimeError("engine failed"), OSError(5, "input vanished"), KeyboardInterrupt()],
    ids=["RuntimeError", "OSError", "KeyboardInterrupt"],
)
def test_failure_mid_stream_keeps_previous_file(tmp_path, fmt, error):
    path = tmp_path / f"fc{SUFFIX[fmt]}"
    write_forecast(path, make_template(), make_leads(), fmt)
    before = path.read_bytes()
    with pytest.raises(type(error)) as info:
        write_forecast(path, make_template(), failing_leads(3, error), fmt)
    assert info.value is error  # the iterator's own exception, not wrapped
    assert path.read_bytes() == before
    assert temps(tmp_path) == [] and sorted(os.listdir(tmp_path)) == [path.name]


@pytest.mark.parametrize("fmt", FORMATS)
def test_only_a_forecast_is_replaced(tmp_path, fmt):
    """A forecast replaces an earlier forecast (NetCDF or GeoTIFF, either way) and nothing else."""
    path = tmp_path / f"fc{SUFFIX[fmt]}"
    for previous in FORMATS:
        forecast_file(path, previous)
        write_forecast(path, make_template(), make_leads(), fmt)
        assert is_forecast(path)
    path.write_text("notes")
    with pytest.raises(ConfigError, match="not a stforecast forecast; not replaced") as info:
        write_forecast(path, make_template(), make_leads(), fmt)
    assert info.value.exit_code == 2
    assert path.read_text() == "notes" and sorted(os.listdir(tmp_path)) == [path.name]


def test_inputs_written_by_stforecast_are_not_forecasts(tmp_path):
    """A synthetic archive has stforecast's `source` but no provenance and no reference time;
    a GeoTIFF of another program has no tags at all."""
    from stforecast.data.synthetic import write_rain_cells

    archive = write_rain_cells(tmp_path / "rain.nc", frames=3, size=8, seed=1)
    with netCDF4.Dataset(archive) as nc:
        assert nc.getncattr("source").startswith("stforecast")
    assert not is_forecast(archive)
    other = tmp_path / "other.tif"
    with rasterio.open(other, "w", driver="GTiff", width=4, height=4, count=1, dtype="float32",
                       transform=rasterio.Affine(1.0, 0, 0, 0, -1.0, 4.0)) as dst:  # fmt: skip
        dst.write(np.zeros((1, 4, 4), np.float32))
    assert not is_forecast(other)
    assert is_forecast(forecast_file(tmp_path / "f.tif", "geotiff"))


def test_devices_fifos_and_links_are_refused_without_opening_them(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="is a FIFO"):
        replaceable(fifo)  # a FIFO opened for reading would block
    with pytest.raises(ConfigError, match="is a character device"):
        replaceable("/dev/null")  # only looked at: replaceable never writes
    (tmp_path / "null.nc").symlink_to("/dev/null")
    with pytest.raises(ConfigError, match="link to /dev/null, which is not a stforecast"):
        replaceable(tmp_path / "null.nc")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    with pytest.raises(InputError, match="is a directory"):
        replaceable(tmp_path)
    target = forecast_file(tmp_path / "f.nc")
    (tmp_path / "latest.nc").symlink_to("f.nc")
    assert replaceable(tmp_path / "latest.nc") == target
    assert replaceable(tmp_path / "new.nc") == tmp_path / "new.nc"


def test_a_link_to_a_forecast_keeps_pointing_to_it(tmp_path):
    target = forecast_file(tmp_path / "f.nc")
    link = tmp_path / "latest.nc"
    link.symlink_to("f.nc")
    assert write_forecast(link, make_template(), make_leads()) == target
    assert link.is_symlink() and os.readlink(link) == "f.nc"
    with xr.open_dataset(link) as ds:
        assert ds.sizes["time"] == 6
    assert sorted(os.listdir(tmp_path)) == ["f.nc", "latest.nc"]


def test_what_appears_at_the_path_meanwhile_is_not_replaced(tmp_path):
    """The check is repeated just before the rename."""
    path = tmp_path / "fc.nc"

    def leads():
        for k, lead in enumerate(make_leads()):
            if k == 3:
                path.write_text("written by someone else meanwhile")
            yield lead

    with pytest.raises(ConfigError, match="not a stforecast forecast"):
        write_forecast(path, make_template(), leads())
    assert path.read_text() == "written by someone else meanwhile"
    assert sorted(os.listdir(tmp_path)) == ["fc.nc"]


def test_output_under_a_file_is_an_input_error(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match="cannot write") as info:
        write_forecast(tmp_path / "file" / "fc.nc", make_template(), make_leads())
    assert info.value.exit_code == 3


def test_unwritable_directory_is_an_input_error(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root can write anywhere")
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(InputError, match="cannot write") as info:
            write_forecast(locked / "fc.nc", make_template(), make_leads())
        assert info.value.exit_code == 3
    finally:
        locked.chmod(0o700)


def run_child(code: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        **kwargs,
    )


def wait_for(proc: subprocess.Popen, word: str) -> None:
    line = proc.stdout.readline()
    if word not in line:
        proc.kill()
        raise AssertionError(f"child said {line!r}: {proc.stderr.read()}")


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("previous", [True, False], ids=["previous", "first"])
def test_sigkill_mid_stream(tmp_path, fmt, previous):
    path = tmp_path / f"fc{SUFFIX[fmt]}"
    if previous:
        write_forecast(path, make_template(), make_leads(), fmt)
        before = path.read_bytes()
    child = run_child(
        f"""
        import time
        from forecast_files import make_leads, make_template
        from stforecast.io.write import write_forecast

        def slow():
            for k, lead in enumerate(make_leads(offset=50.0)):
                if k == 3:
                    print("written 3", flush=True)  # leads 0-2 are in the file
                    time.sleep(60)
                yield lead

        write_forecast({str(path)!r}, make_template(), slow(), {fmt!r})
        """
    )
    try:
        wait_for(child, "written 3")
        assert len(temps(tmp_path)) == 1  # the half-written file, under a temporary name
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        child.stdout.close()
        child.stderr.close()
        child.stdin.close()
    if previous:
        assert path.read_bytes() == before
    else:
        assert not path.exists()
    (stale,) = temps(tmp_path)
    assert stale.startswith(f".{path.name}.") and str(child.pid) in stale
    # The next run cleans up the dead process's temporary file.
    write_forecast(path, make_template(), make_leads(), fmt)
    assert temps(tmp_path) == []


def test_stale_temp_cleanup_spares_live_processes(tmp_path):
    path = tmp_path / "fc.nc"
    mine = tmp_path / f"{temp_prefix(path)}abc123.tmp"
    other_host = tmp_path / f".fc.nc.elsewhere.{os.getpid() + 1}.abc123.tmp"
    other_output = tmp_path / f"{temp_prefix(tmp_path / 'other.nc', pid=dead_pid())}x.tmp"
    dead = tmp_path / f"{temp_prefix(path, pid=dead_pid())}abc123.tmp"
    for p in (mine, other_host, other_output, dead):
        p.write_text("x")
    # a dead run's temp of another output goes too: forecasts named by reference time change
    # name every run, so only a sweep of the directory keeps it clean
    assert sorted(remove_stale_temps(path)) == sorted([dead, other_output])
    assert mine.exists() and other_host.exists()


def test_memory_is_flat_in_the_number_of_leads(tmp_path):
    """Python-side allocations stay at a few leads however many are written."""
    n, ny, nx = 60, 120, 100
    lead_bytes = ny * nx * 4
    template = make_template(n=n, ny=ny, nx=nx)
    for fmt in FORMATS:
        leads = make_leads(n, ny=ny, nx=nx)
        tracemalloc.start()
        try:
            write_forecast(tmp_path / f"fc{SUFFIX[fmt]}", template, leads, fmt)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 12 * lead_bytes, (fmt, peak / lead_bytes)


# --------------------------------------------------------------------------------------------
# Lock
# --------------------------------------------------------------------------------------------


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_lock_held_by_another_process(tmp_path):
    path = tmp_path / "fc.nc"
    child = run_child(
        f"""
        import sys
        from stforecast.io.lock import output_lock

        with output_lock({str(path)!r}):
            print("locked", flush=True)
            sys.stdin.read()  # until the parent closes stdin or kills us
        """
    )
    try:
        wait_for(child, "locked")
        with pytest.raises(LockHeldError) as info, output_lock(path):
            pass
        assert info.value.exit_code == 5
        message = str(info.value)
        assert str(path) in message and f"pid {child.pid}" in message
        assert str(lock_path(path)) in message
        # A killed holder leaves its lock file, which the next run takes over.
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        assert lock_path(path).read_text().split()[0] == str(child.pid)
        with output_lock(path) as lockfile:
            assert lockfile == tmp_path / ".fc.nc.lock"
            assert lockfile.read_text().split()[0] == str(os.getpid())
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=30)
        for stream in (child.stdin, child.stdout, child.stderr):
            stream.close()


def test_lock_released_by_a_process_that_exits(tmp_path):
    path = tmp_path / "fc.nc"
    child = run_child(
        f"""
        from stforecast.io.lock import output_lock

        with output_lock({str(path)!r}):
            print("locked", flush=True)
        """
    )
    _, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    with output_lock(path):
        pass


def test_stale_lock_file_is_taken_over(tmp_path):
    path = tmp_path / "fc.nc"
    lock_path(path).write_text(f"{dead_pid()} {host()}\n")
    with output_lock(path) as lockfile:
        assert lockfile.read_text().split()[0] == str(os.getpid())


def test_lock_released_after_the_block(tmp_path):
    path = tmp_path / "sub" / "fc.nc"
    with output_lock(path) as lockfile:
        assert lockfile.exists()
        # Not re-entrant, even in the same process.
        with pytest.raises(LockHeldError), output_lock(path):
            pass
    assert not lockfile.exists()
    with pytest.raises(RuntimeError), output_lock(path):
        raise RuntimeError("the run failed")
    with output_lock(path):  # released after an exception too
        write_forecast(path, make_template(), make_leads())
    assert sorted(os.listdir(path.parent)) == ["fc.nc"]


def test_lock_survives_a_replaced_lock_file(tmp_path, monkeypatch):
    """An acquirer whose locked file was unlinked by the previous holder starts over."""
    path = tmp_path / "fc.nc"
    real_flock = lock_mod.fcntl.flock
    calls = []

    def flock(fd, op):
        calls.append(op)
        if len(calls) == 1:  # the previous holder releases and removes the file right now
            os.unlink(lock_path(path))
        return real_flock(fd, op)

    lock_path(path).write_text("")
    monkeypatch.setattr(lock_mod.fcntl, "flock", flock)
    with output_lock(path) as lockfile:
        assert len(calls) == 2  # the first, on the unlinked file, was not trusted
        assert lockfile.read_text().split()[0] == str(os.getpid())


def test_lock_timing_is_immediate(tmp_path):
    """A held lock fails at once (cron runs must not pile up waiting)."""
    path = tmp_path / "fc.nc"
    with output_lock(path):
        start = time.monotonic()
        with pytest.raises(LockHeldError), output_lock(path):
            pass
        assert time.monotonic() - start < 1.0
