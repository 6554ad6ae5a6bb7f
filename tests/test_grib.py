"""GRIB2 and other GDAL rasters through the GeoTIFF path: GRIB2 fixtures written with rasterio's
GRIB driver (GDAL creates GRIB2 by copy, which rasterio does for drivers without Create), plain
and gzipped, one file per frame like NOAA MRMS `PrecipRate`; time from `GRIB_VALID_TIME`, units
from `GRIB_UNIT`. No third-party data."""

from __future__ import annotations

import datetime as dt
import gzip
import shutil
from pathlib import Path

import numpy as np
import pyproj
import pytest
import rasterio
from affine import Affine
from typer.testing import CliRunner

from stforecast.cli.app import app
from stforecast.errors import InputError
from stforecast.io import open_frames

T0 = dt.datetime(2020, 10, 31, 12, 0, tzinfo=dt.timezone.utc)
STEP = dt.timedelta(minutes=2)  # MRMS PrecipRate's step
# GRIB2 product template 4.0: category, number, generating process, ..., hours as the time unit,
# forecast time 0, surface 102 (height above sea level): MRMS's local table 209-6-1 PrecipRate.
MRMS = {"DISCIPLINE": "209", "PDS_PDTN": "0",
        "PDS_TEMPLATE_ASSEMBLED_VALUES": "6 1 2 0 0 0 0 1 0 102 0 0 255 0 0"}  # fmt: skip


def rain(k: int, ny: int = 20, nx: int = 30) -> np.ndarray:
    yy, xx = np.mgrid[0:ny, 0:nx]
    values = (10.0 * np.exp(-((yy - 10) ** 2 + (xx - 5 - k) ** 2) / 20.0)).astype(np.float32)
    values[0, :3] = np.nan  # no coverage: a GRIB bitmap
    return values


def write_grib(path: Path, values: np.ndarray, when: dt.datetime) -> Path:
    ids = (f"CENTER=161 SUBCENTER=0 MASTER_TABLE=2 SIGNF_REF_TIME=3 "
           f"REF_TIME={when:%Y-%m-%dT%H:%M:%SZ} PROD_STATUS=0 TYPE=0")  # fmt: skip
    profile = dict(driver="GRIB", width=values.shape[1], height=values.shape[0], count=1,
                   dtype="float32", crs="EPSG:4326", IDS=ids, **MRMS,
                   transform=Affine(0.01, 0.0, -100.0, 0.0, -0.01, 40.0))  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(values, 1)
    return path


def gzipped(path: Path) -> Path:
    packed = path.with_name(path.name + ".gz")
    with open(path, "rb") as src, gzip.open(packed, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return packed


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    """Four MRMS-like frames, `MRMS_PrecipRate_00.00_YYYYMMDD-HHMMSS.grib2`, and their `.gz`."""
    root = tmp_path_factory.mktemp("mrms")
    (root / "plain").mkdir()
    (root / "gz").mkdir()
    for k in range(4):
        when = T0 + k * STEP
        name = f"MRMS_PrecipRate_00.00_{when:%Y%m%d-%H%M%S}.grib2"
        path = write_grib(root / "plain" / name, rain(k), when)
        shutil.move(gzipped(path), root / "gz" / (name + ".gz"))
    return root


def test_grib2_values_time_units_and_grid(archive):
    da = open_frames(archive / "plain")
    assert da.name == "band_data" and da.shape == (4, 20, 30)
    assert da.attrs["units"] == "mm/hr" and da.attrs["long_name"] == "Radar Precipitation Rate"
    expected = [np.datetime64((T0 + k * STEP).replace(tzinfo=None)) for k in range(4)]
    np.testing.assert_array_equal(da["time"].values, expected)
    assert da.attrs["time_step"] == 120
    for k in range(4):  # GRIB packs with a precision of its own: close, not equal
        np.testing.assert_allclose(da.values[k], rain(k), atol=1e-3, equal_nan=True)
    assert np.isnan(da.values[:, 0, :3]).all()
    np.testing.assert_allclose(da["x"].values, -100.0 + 0.01 * (np.arange(30) + 0.5))
    np.testing.assert_allclose(da["y"].values, 40.0 - 0.01 * (np.arange(20) + 0.5))
    assert pyproj.CRS.from_wkt(da.attrs["crs_wkt"]) == pyproj.CRS.from_epsg(4326)
    assert da["x"].attrs["standard_name"] == "longitude"


def test_gzipped_grib_reads_the_same(archive):
    plain, packed = open_frames(archive / "plain"), open_frames(archive / "gz")
    np.testing.assert_array_equal(plain["time"].values, packed["time"].values)
    np.testing.assert_array_equal(plain.values, packed.values)
    assert all(s.endswith(".grib2.gz") for s in packed.attrs["sources"])
    one = sorted((archive / "gz").iterdir())[0]
    assert open_frames(one).sizes["time"] == 1  # a named .gz file, and a glob of them
    assert open_frames(str(archive / "gz" / "*.gz")).sizes["time"] == 4


def test_prepare_reads_mrms_frames_and_converts_units(archive, tmp_path):
    store = tmp_path / "store"
    res = CliRunner().invoke(app, ["prepare", str(archive / "gz"), "--out", str(store),
                                   "--input-frames", "1", "--output-frames", "1",
                                   "--units", "mm/h", "--quiet"])  # fmt: skip
    assert res.exit_code == 0, res.output


def test_a_file_of_no_known_format_says_what_it_looks_like(tmp_path):
    junk = tmp_path / "frame.bin"
    junk.write_bytes(bytes(range(7, 71)))
    with pytest.raises(InputError, match=r"frame\.bin: neither NetCDF nor GeoTIFF.*signature"):
        open_frames(junk)
    bad = tmp_path / "cut.grib2"
    bad.write_bytes(b"GRIB" + bytes(20))
    with pytest.raises(InputError, match=r"cut\.grib2: not a readable GRIB"):
        open_frames(bad)
    packed = tmp_path / "broken.grib2.gz"
    packed.write_bytes(b"\x1f\x8b" + bytes(10))
    with pytest.raises(InputError, match=r"broken\.grib2\.gz: a damaged gzip"):
        open_frames(packed)
