"""ODIM_H5 input (OPERA composites and images, one file per frame): values, grid, CRS and times
from fixtures written after the v2.3 specification; `prepare` and `forecast` on a directory of
them; archives in date folders; the errors of files that are HDF5 but not ODIM."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pyproj
import pytest
import xarray as xr
from typer.testing import CliRunner

from stforecast.cli.app import app
from stforecast.errors import InputError
from stforecast.io import open_frames

from odim_files import LAEA, STERE, corners, write_odim  # isort: skip

T0 = dt.datetime(2020, 10, 31, 12, 0)
STEP = dt.timedelta(minutes=5)


def cli(*args: str):
    return CliRunner().invoke(app, list(args))


def dbzh_codes(ny: int = 30, nx: int = 40, shift: int = 0) -> np.ndarray:
    """uint8 codes: a band of echo moving east, undetect (0) around it, nodata (255) in a corner."""
    raw = np.zeros((ny, nx), np.uint8)
    raw[5:20, 5 + shift : 20 + shift] = 100 + np.arange(15, dtype=np.uint8)[None, :]
    raw[-4:, -4:] = 255
    return raw


def frames(folder: Path, n: int = 8, **kw) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    times = [T0 + k * STEP for k in range(n)]
    return [
        write_odim(folder / f"comp_{when:%Y%m%d%H%M}.h5", dbzh_codes(shift=k), when, **kw)
        for k, when in enumerate(times)
    ]


# ------------------------------------------------------------------------------ values and grid


@pytest.mark.parametrize("projdef", [LAEA, STERE], ids=["laea", "stereographic"])
def test_dbzh_composite_values_grid_crs_and_time(tmp_path, projdef):
    (path,) = frames(tmp_path, n=1, projdef=projdef, scale=2000.0)
    da = open_frames(path)
    assert da.name == "DBZH" and da.dims == ("time", "y", "x") and da.shape == (1, 30, 40)
    assert da.attrs["units"] == "dBZ"
    values = da.values[0]
    raw = dbzh_codes()
    valid = (raw != 0) & (raw != 255)
    np.testing.assert_allclose(values[valid], 0.5 * raw[valid] - 32.0)  # gain and offset
    assert np.isnan(values[raw == 255]).all()  # nodata: no coverage
    assert (values[raw == 0] == -32.0).all()  # undetect: no echo, the dBZ floor
    assert da["time"].values[0] == np.datetime64(T0)  # the nominal time
    # the grid: cell centres inside the corners projected with pyproj, north-up
    proj = pyproj.Proj(projdef)
    where = corners(projdef, 40, 30, 2000.0)
    x0, y0 = proj(where["LL_lon"], where["LL_lat"])
    x1, y1 = proj(where["UR_lon"], where["UR_lat"])
    np.testing.assert_allclose(da["x"].values, x0 + 2000.0 * (np.arange(40) + 0.5), atol=1e-3)
    np.testing.assert_allclose(da["y"].values, y1 - 2000.0 * (np.arange(30) + 0.5), atol=1e-3)
    assert da["x"].values[-1] + 1000.0 == pytest.approx(x1, abs=1e-3)
    assert da["y"].values[-1] - 1000.0 == pytest.approx(y0, abs=1e-3)
    assert pyproj.CRS.from_wkt(da.attrs["crs_wkt"]) == pyproj.CRS.from_user_input(projdef)
    a, b, c, d, e, f = da.attrs["transform"]
    assert (a, b, d, e) == (2000.0, 0.0, 0.0, -2000.0)
    assert c == pytest.approx(x0, abs=1e-3) and f == pytest.approx(y1, abs=1e-3)


def test_rate_undetect_is_zero_and_nodata_nan(tmp_path):
    raw = np.full((30, 40), 150, np.uint16)
    raw[0, :] = 0  # undetect
    raw[1, :] = 65535  # nodata
    path = write_odim(tmp_path / "rate.h5", raw, T0, quantity="RATE", gain=0.01, offset=0.0,
                      nodata=65535, undetect=0, obj="IMAGE")  # fmt: skip
    da = open_frames(path)
    assert da.name == "RATE" and da.attrs["units"] == "mm/h"
    values = da.values[0]
    assert (values[0] == 0.0).all() and np.isnan(values[1]).all()
    np.testing.assert_allclose(values[2:], 1.5, rtol=1e-6)


def test_acrr_is_valid_at_the_end_of_its_period(tmp_path):
    raw = np.full((30, 40), 20, np.uint16)
    end = T0 + dt.timedelta(hours=1)
    path = write_odim(tmp_path / "acrr.h5", raw, end, quantity="ACRR", gain=0.1, offset=0.0,
                      nodata=65535, undetect=0, period=dt.timedelta(hours=1),
                      nominal=T0)  # fmt: skip
    da = open_frames(path)
    assert da.attrs["units"] == "mm" and da["time"].values[0] == np.datetime64(end)
    np.testing.assert_allclose(da.values[0], 2.0, rtol=1e-6)


def test_a_directory_of_frames_is_a_stack_and_quality_fields_are_not_picked(tmp_path):
    quality = {"QIND": np.full((30, 40), 200, np.uint8)}
    frames(tmp_path, n=4, extra=quality)
    da = open_frames(tmp_path)
    assert da.name == "DBZH" and da.sizes["time"] == 4 and da.attrs["time_step"] == 300
    np.testing.assert_array_equal(
        da["time"].values, [np.datetime64(T0 + k * STEP) for k in range(4)]
    )
    assert open_frames(tmp_path, variable="QIND").name == "QIND"


def test_two_precipitation_quantities_ask_for_a_choice(tmp_path):
    write_odim(tmp_path / "two.h5", dbzh_codes(), T0, extra={"RATE": dbzh_codes()})
    with pytest.raises(InputError, match=r"several data variables.*DBZH, RATE"):
        open_frames(tmp_path / "two.h5")
    assert open_frames(tmp_path / "two.h5", variable="RATE").name == "RATE"


def test_gzipped_odim_reads_the_same(tmp_path):
    (path,) = frames(tmp_path / "plain", n=1)
    packed = tmp_path / (path.name + ".gz")
    with open(path, "rb") as src, gzip.open(packed, "wb") as dst:
        shutil.copyfileobj(src, dst)
    np.testing.assert_array_equal(open_frames(packed).values, open_frames(path).values)


def test_netcdf_reading_loads_neither_h5py_nor_gdal(tmp_path):
    path = tmp_path / "one.nc"
    xr.Dataset(
        {"rain": (("time", "y", "x"), np.zeros((2, 3, 4), np.float32))},
        coords={"time": np.array(["2020-01-01T00:00", "2020-01-01T00:05"], "datetime64[ns]")},
    ).to_netcdf(path)
    code = (
        "import sys; from stforecast.io import open_frames; "
        f"open_frames({str(path)!r}).values; "
        "print([m for m in ('h5py', 'rasterio') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------------------ errors


def test_hdf5_that_is_not_odim_is_exit_3_naming_the_format(tmp_path, odim_run):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f.attrs["Conventions"] = np.bytes_("MyLab-1.0")
        f.create_dataset("profile", data=np.arange(5.0))
    named = r"other\.h5: HDF5 \(Conventions 'MyLab-1.0'; neither ODIM_H5 nor NetCDF-4\)"
    with pytest.raises(InputError, match=named):
        open_frames(path)
    forecast = ["forecast", str(path), "--model", str(odim_run), "--out", f"{tmp_path}/"]
    for command in (["prepare", str(path), "--out", str(tmp_path / "s")], forecast):
        res = cli(*command)
        assert res.exit_code == 3, (command, res.output)
        assert "neither ODIM_H5 nor NetCDF-4" in res.stderr and "available: none" not in res.stderr


def test_truncated_odim_is_named(tmp_path):
    (path,) = frames(tmp_path, n=1)
    path.write_bytes(path.read_bytes()[:1500])
    with pytest.raises(InputError, match=r"comp_\d+\.h5: not a readable HDF5 file"):
        open_frames(tmp_path)


def test_polar_volume_says_what_is_read(tmp_path):
    path = write_odim(tmp_path / "pvol.h5", dbzh_codes(), T0, obj="PVOL")
    with pytest.raises(InputError, match=r"PVOL.*polar.*COMP and IMAGE"):
        open_frames(path)


def test_missing_projdef_and_wrong_size(tmp_path):
    (path,) = frames(tmp_path, n=1)
    with h5py.File(path, "a") as f:
        f["where"].attrs["xsize"] = np.int64(41)
    with pytest.raises(InputError, match="xsize"):
        open_frames(path)
    with h5py.File(path, "a") as f:
        del f["where"].attrs["projdef"]
    with pytest.raises(InputError, match="projdef"):
        open_frames(path)


# ------------------------------------------------------------------------------ date folders


def test_date_folders_need_recursion_and_say_so(tmp_path):
    for k in range(3):
        when = T0 + k * dt.timedelta(days=1)
        day = tmp_path / f"{when:%Y/%m/%d}"
        day.mkdir(parents=True)
        write_odim(day / f"comp_{when:%Y%m%d%H%M}.h5", dbzh_codes(), when)
    with pytest.raises(InputError, match=r"holds folders: 2020.*--recursive.*\*\*"):
        open_frames(tmp_path)
    assert open_frames(tmp_path, recursive=True).sizes["time"] == 3
    assert open_frames(str(tmp_path / "**" / "*.h5")).sizes["time"] == 3
    res = cli("prepare", str(tmp_path), "--out", str(tmp_path / "store"))
    assert res.exit_code == 3 and "--recursive" in res.stderr
    res = cli("prepare", str(tmp_path), "--recursive", "--out", str(tmp_path / "store"),
              "--input-frames", "1", "--output-frames", "1", "--quiet")  # fmt: skip
    assert res.exit_code == 0, res.output
    manifest = json.loads((tmp_path / "store" / "manifest.json").read_text())
    assert manifest["time"]["frames"] == 3 and manifest["config"]["recursive"] is True
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="nor its subdirectories"):
        open_frames(empty, recursive=True)


# ------------------------------------------------------------------------------ prepare, forecast


def test_prepare_a_directory_of_eight_frames(tmp_path):
    frames(tmp_path / "odim", n=8)
    store = tmp_path / "store"
    res = cli("prepare", str(tmp_path / "odim"), "--out", str(store), "--input-frames", "2",
              "--output-frames", "1", "--units", "mm/h", "--quiet")  # fmt: skip
    assert res.exit_code == 0, res.output
    ds = xr.open_zarr(store)
    assert ds.sizes["time"] == 8 and ds["frames"].shape[-2:] == (30, 40)
    values = ds["frames"].values
    assert np.isfinite(values).all() and values.min() == 0.0  # undetect: exactly 0 mm/h


@pytest.fixture(scope="module")
def odim_run(tmp_path_factory) -> Path:
    """A run trained on 24 ODIM RATE frames (32 x 32), through prepare and train."""
    from runs import train_tiny

    root = tmp_path_factory.mktemp("odim_run")
    yy, xx = np.mgrid[0:32, 0:32]
    (root / "odim").mkdir()
    for k in range(24):
        blob = 8.0 * np.exp(-((yy - 16) ** 2 + (xx - 4 - k) ** 2) / 30.0)
        raw = np.round(blob / 0.01).astype(np.uint16)
        raw[:2, :2] = 65535
        write_odim(root / "odim" / f"rate_{(T0 + k * STEP):%Y%m%d%H%M}.h5", raw, T0 + k * STEP,
                   quantity="RATE", gain=0.01, offset=0.0, nodata=65535, undetect=0,
                   projdef=STERE, scale=1000.0)  # fmt: skip
    return train_tiny([str(root / "odim")], root)


def test_forecast_from_odim_frames_writes_a_cf_file(tmp_path, odim_run):
    out = tmp_path / "out"
    out.mkdir()
    res = cli("forecast", str(odim_run.parent / "odim"), "--model", str(odim_run),
              "--out", f"{out}/", "--steps", "2", "--device", "cpu", "--quiet")  # fmt: skip
    assert res.exit_code == 0, res.output
    (written,) = out.iterdir()
    ds = xr.open_dataset(written)
    assert ds.attrs["Conventions"].startswith("CF-1.10") and ds.sizes["time"] == 2
    var = ds["RATE"]
    assert var.attrs["grid_mapping"] == "crs" and var.shape == (2, 32, 32)
    assert pyproj.CRS.from_wkt(ds["crs"].attrs["crs_wkt"]) == pyproj.CRS.from_user_input(STERE)
    assert ds["forecast_reference_time"].values == np.datetime64(T0 + 23 * STEP)
    ds.close()


def test_forecast_recursive_reads_date_folders(tmp_path, odim_run):
    for path in sorted((odim_run.parent / "odim").iterdir()):
        hour = tmp_path / "archive" / f"2020/10/31/{path.name[-7:-5]}"
        hour.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, hour / path.name)
    args = ["forecast", str(tmp_path / "archive"), "--model", str(odim_run), "--out",
            f"{tmp_path}/", "--steps", "1", "--device", "cpu", "--quiet"]  # fmt: skip
    res = cli(*args)
    assert res.exit_code == 3 and "--recursive" in res.stderr, res.output
    res = cli(*args, "--recursive")
    assert res.exit_code == 0, res.output
    assert len(list(tmp_path.glob("*.nc"))) == 1
