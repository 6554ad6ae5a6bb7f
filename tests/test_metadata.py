"""Publishable forecast files: what a catalogue, a GIS and the IOOS compliance checker read in a
forecast of every input format (NetCDF stack, NetCDF per frame, GeoTIFF, ODIM_H5, GRIB2).

The CF-1.10 and ACDD-1.3 suites run at every priority (`criteria="strict"`); what they still
report is listed below with the reason, and nothing else may appear."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from pathlib import Path

import netCDF4
import numpy as np
import pyproj
import pytest
import rasterio
import xarray as xr
from affine import Affine
from forecast_files import make_leads, make_template
from odim_files import STERE, write_odim
from pydantic import ValidationError

from stforecast.config import ForecastConfig
from stforecast.errors import ConfigError
from stforecast.forecasting.job import forecast_to_file
from stforecast.forecasting.plan import plan
from stforecast.forecasting.template import forecast_template
from stforecast.io import open_frames
from stforecast.io.target import is_forecast
from stforecast.io.write import write_forecast
from stforecast.rundir.load import load_run

from runs import make_run, train_tiny

# Not applicable: a forecast is a 2-D field at the surface, with no vertical coordinate.
VERTICAL = {
    "geospatial_vertical_min", "geospatial_vertical_max", "geospatial_vertical_positive",
    "geospatial_vertical_units", "geospatial_vertical_resolution",
    "geospatial_bounds_vertical_crs",
}  # fmt: skip
# Known only to whoever publishes the forecast: written when the recipe gives them
# (`[forecast] attributes`, `institution`, `license`, `references`) or the input has them.
ONLY_IF_GIVEN = {
    "acknowledgement", "id", "naming_authority", "creator_name", "creator_url", "creator_email",
    "creator_type", "creator_institution", "publisher_name", "publisher_url", "publisher_email",
    "publisher_type", "publisher_institution", "project", "program", "contributor_name",
    "contributor_role", "platform", "platform_vocabulary", "instrument", "instrument_vocabulary",
    "keywords_vocabulary", "metadata_link", "license", "references", "institution",
}  # fmt: skip
# False positive on a projected grid without `latlon`: ACDD's checker takes a variable with
# axis Y (X) for latitude (longitude) and compares its metres with the degrees of
# geospatial_lat_min/max (lon); with `latlon = true` it finds `lat`/`lon` and they match.
PROJECTED_EXTENTS = {"geospatial_lat_extents_match", "geospatial_lon_extents_match"}

PUBLISHER = {
    "acknowledgement": "test suite", "id": "stforecast-test-nowcast",
    "naming_authority": "org.example", "creator_name": "Nowcasting team",
    "creator_url": "https://example.org/nowcasting", "creator_email": "nowcast@example.org",
    "creator_type": "group", "creator_institution": "Example Met Service",
    "publisher_name": "Example Met Service", "publisher_url": "https://example.org",
    "publisher_email": "data@example.org", "publisher_type": "institution",
    "publisher_institution": "Example Met Service", "project": "stforecast tests",
    "program": "tests", "contributor_name": "stforecast", "contributor_role": "software",
    "platform": "weather radar network", "platform_vocabulary": "none (free text)",
    "instrument": "weather radar", "instrument_vocabulary": "none (free text)",
    "keywords_vocabulary": "none (free text)", "metadata_link": "https://example.org/meta",
}  # fmt: skip
FULL = ForecastConfig(
    latlon=True, institution="Example Met Service", license="CC-BY-4.0",
    references="https://example.org/method", attributes=PUBLISHER,
)  # fmt: skip

T0 = dt.datetime(2020, 10, 31, 12, 0)


def _publishable(ds: xr.Dataset) -> xr.Dataset:
    ds.attrs.update(licence="CC-BY-SA-4.0 (input)", references="doi:10.0000/input")
    return ds


def _geotiffs(archive: Path, folder: Path) -> None:
    """The archive's frames as one GeoTIFF each, with a met service's tags."""
    folder.mkdir()
    with xr.open_dataset(archive) as ds:
        rain, wkt = ds["rainrate"].load(), ds["crs"].attrs["crs_wkt"]
    x, y = rain["x"].values, rain["y"].values
    transform = Affine(1000.0, 0.0, x[0] - 500.0, 0.0, -1000.0, y[0] + 500.0)
    for frame in rain.isel(time=slice(-40, None)):
        when = np.datetime_as_string(frame["time"].values, unit="m").replace(":", "")
        profile = dict(driver="GTiff", width=x.size, height=y.size, count=1, dtype="float32",
                       crs=wkt, transform=transform, nodata=-9999.0)  # fmt: skip
        with rasterio.open(folder / f"rain_{when.replace('-', '')}.tif", "w", **profile) as dst:
            dst.write(np.where(np.isfinite(frame.values), frame.values, -9999.0), 1)
            dst.set_band_unit(1, "mm h-1")
            dst.update_tags(valid_time=f"{when}Z", institution="GeoTIFF Met Service",
                            licence="CC0-1.0")  # fmt: skip


def _odim(folder: Path) -> None:
    """24 ODIM ACRR composites (mm per 5 min) on a polar stereographic grid."""
    folder.mkdir()
    yy, xx = np.mgrid[0:32, 0:32]
    for k in range(24):
        when = T0 + k * dt.timedelta(minutes=5)
        blob = 0.8 * np.exp(-((yy - 16) ** 2 + (xx - 4 - k) ** 2) / 30.0)
        raw = np.round(blob / 0.01).astype(np.uint16)
        raw[:2, :2] = 65535
        write_odim(folder / f"acrr_{when:%Y%m%d%H%M}.h5", raw, when, quantity="ACRR",
                   gain=0.01, offset=0.0, nodata=65535, undetect=0, projdef=STERE,
                   scale=1000.0)  # fmt: skip


def _grib(folder: Path) -> None:
    """24 MRMS-like GRIB2 rain rates (2 min, EPSG:4326), written as test_grib does."""
    from test_grib import rain, write_grib

    folder.mkdir()
    for k in range(24):
        when = (T0 + k * dt.timedelta(minutes=2)).replace(tzinfo=dt.timezone.utc)
        write_grib(folder / f"MRMS_PrecipRate_00.00_{when:%Y%m%d-%H%M%S}.grib2",
                   rain(k % 12), when)  # fmt: skip


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> dict[str, tuple[list[str], Path]]:
    """Input format -> (sources, a run trained on that format)."""
    root = tmp_path_factory.mktemp("formats")
    stack = make_run(root / "stack", edit=_publishable, steps=2)
    frames = root / "frames"
    frames.mkdir()
    with xr.open_dataset(stack["archive"]) as ds:
        for k in range(ds.sizes["time"] - 6, ds.sizes["time"]):
            one = ds.isel(time=[k])
            when = np.datetime_as_string(one["time"].values[0], unit="m").replace(":", "")
            one.to_netcdf(frames / f"rain_{when.replace('-', '')}.nc")
    _geotiffs(stack["archive"], root / "tif")
    _odim(root / "odim")
    _grib(root / "grib")
    return {
        "netcdf-stack": ([str(stack["archive"])], stack["run"]),
        "netcdf-frames": ([str(frames)], stack["run"]),
        "geotiff": ([str(root / "tif")], train_tiny([str(root / "tif")], root / "tif_run")),
        "odim": ([str(root / "odim")], train_tiny([str(root / "odim")], root / "odim_run")),
        "grib": ([str(root / "grib")], train_tiny([str(root / "grib")], root / "grib_run")),
    }


def forecast(case, out: Path, options: ForecastConfig | None = None, fmt: str = "netcdf"):
    sources, run = case
    p = plan(open_frames(sources), load_run(run, device="cpu"), steps=2, options=options)
    return write_forecast(out, p.template, p.leads, fmt)


def problems(path: Path, tmp_path: Path, monkeypatch) -> tuple[set[str], list]:
    """What the CF-1.10 and ACDD-1.3 suites report at any priority: the missing attributes'
    names and the other failing checks' names, and every message (for the assertion's text)."""
    runner = pytest.importorskip("compliance_checker.runner")
    from compliance_checker.cf import util

    def offline(*args, **kwargs):  # a table other than the packaged one: no download in tests
        raise OSError("offline")

    monkeypatch.setattr(util, "download_cf_standard_name_table", offline)
    runner.CheckSuite.load_all_available_checkers()
    if not {"cf:1.10", "acdd:1.3"} <= set(runner.CheckSuite.checkers):
        pytest.skip("this compliance-checker has no cf:1.10 or acdd:1.3 suite")
    names, messages = set(), []
    for suite in ("cf:1.10", "acdd:1.3"):
        out = tmp_path / f"{path.name}.{suite.replace(':', '_')}.json"
        runner.ComplianceChecker.run_checker(
            str(path), [suite], verbose=0, criteria="strict", output_filename=str(out),
            output_format="json",
        )  # fmt: skip
        report = json.loads(out.read_text())[suite]
        for priority in ("high", "medium", "low"):
            for item in report[f"{priority}_priorities"]:
                if item["value"][0] >= item["value"][1]:
                    continue
                messages.append((suite, priority, item["name"], item["msgs"]))
                missing = [
                    re.match(r"(?:Attr )?([\w/]+) (?:is )?not present", m) for m in item["msgs"]
                ]
                if item["name"] == "Global Attributes" or item["name"].endswith("_is_iso"):
                    names |= {m.group(1).split("/")[-1] for m in missing if m}
                    if all(missing):
                        continue
                names.add(item["name"])
    return names, messages


# ------------------------------------------------------------------------------ compliance


@pytest.mark.parametrize("fmt", ["netcdf-stack", "netcdf-frames", "geotiff", "odim", "grib"])
def test_every_input_format_gives_a_compliant_forecast(fmt, cases, tmp_path, monkeypatch):
    path = forecast(cases[fmt], tmp_path / "f.nc", FULL)
    names, messages = problems(path, tmp_path, monkeypatch)
    assert names == VERTICAL, messages


def test_a_default_recipe_leaves_out_only_what_it_cannot_know(cases, tmp_path, monkeypatch):
    path = forecast(cases["odim"], tmp_path / "f.nc")
    names, messages = problems(path, tmp_path, monkeypatch)
    assert names - VERTICAL <= ONLY_IF_GIVEN | PROJECTED_EXTENTS, messages
    path = forecast(cases["grib"], tmp_path / "g.nc")  # lon/lat: its extents match
    names, messages = problems(path, tmp_path, monkeypatch)
    assert names - VERTICAL <= ONLY_IF_GIVEN, messages


# ------------------------------------------------------------------------------ what is written


def test_the_inputs_attributes_are_carried_and_the_recipe_wins(cases, tmp_path):
    with xr.open_dataset(forecast(cases["netcdf-stack"], tmp_path / "a.nc")) as ds:
        assert ds.attrs["institution"] == "stforecast project (synthetic data, not an observation)"
        assert ds.attrs["license"] == "CC-BY-SA-4.0 (input)"  # the input's `licence`
        assert ds.attrs["references"] == "doi:10.0000/input"
        source = ds.attrs["source"]
        assert re.fullmatch(
            r"stforecast \S+, model convlstm; input: stforecast .*rain-cell.*", source
        )
    mine = ForecastConfig(institution="Mine", license="MIT", source="radar composite",
                          attributes={"creator_name": "Me"})  # fmt: skip
    with xr.open_dataset(forecast(cases["netcdf-frames"], tmp_path / "b.nc", mine)) as ds:
        assert (ds.attrs["institution"], ds.attrs["license"]) == ("Mine", "MIT")
        assert ds.attrs["source"].endswith("model convlstm; input: radar composite")
        assert ds.attrs["creator_name"] == "Me" and "publisher_name" not in ds.attrs
    with pytest.raises(ConfigError, match="provenance is computed by stforecast"):
        forecast(cases["netcdf-stack"], tmp_path / "c.nc",
                 ForecastConfig(attributes={"provenance": "mine"}))  # fmt: skip


def test_acdd_time_and_space(cases, tmp_path):
    with xr.open_dataset(forecast(cases["netcdf-stack"], tmp_path / "f.nc", FULL)) as ds:
        attrs = ds.attrs
        assert attrs["Conventions"] == "CF-1.10, ACDD-1.3"
        assert attrs["time_coverage_start"] == str(ds["time"].values[0])[:19] + "Z"
        assert (attrs["time_coverage_duration"], attrs["time_coverage_resolution"]) == (
            "PT10M", "PT10M")  # fmt: skip
        assert attrs["geospatial_lat_min"] == pytest.approx(float(ds["lat"].min()))
        assert attrs["geospatial_lon_max"] == pytest.approx(float(ds["lon"].max()))
        assert attrs["geospatial_bounds_crs"] == "EPSG:4326"
        assert attrs["geospatial_bounds"].startswith("POLYGON ((")
        assert ds["forecast_period"].attrs["units"] == "s"
        assert "cell_methods" not in ds["rainrate"].attrs  # rain rates as observed


def test_latlon_of_a_projected_grid(cases, tmp_path):
    path = forecast(cases["odim"], tmp_path / "f.nc", ForecastConfig(latlon=True))
    with netCDF4.Dataset(path) as nc:
        var = nc["ACRR"]
        assert var.coordinates == "forecast_reference_time forecast_period lat lon"
        assert (nc["lat"].standard_name, nc["lat"].units) == ("latitude", "degrees_north")
        assert (nc["lon"].standard_name, nc["lon"].units) == ("longitude", "degrees_east")
        x, y = np.meshgrid(nc["x"][:], nc["y"][:])
        crs = pyproj.CRS.from_wkt(nc["crs"].crs_wkt)
        lon, lat = pyproj.Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(x, y)
        np.testing.assert_allclose(nc["lat"][:], lat, atol=1e-5)
        np.testing.assert_allclose(nc["lon"][:], lon, atol=1e-5)
    with netCDF4.Dataset(forecast(cases["odim"], tmp_path / "g.nc")) as nc:
        assert "lat" not in nc.variables  # only when asked
    with netCDF4.Dataset(
        forecast(cases["grib"], tmp_path / "h.nc", ForecastConfig(latlon=True))
    ) as nc:
        assert "lat" not in nc.variables and nc["y"].standard_name == "latitude"  # it is already


def test_accumulations_have_cell_methods_and_time_bounds(cases, tmp_path):
    path = forecast(cases["odim"], tmp_path / "f.nc")
    with xr.open_dataset(path) as ds:
        var = ds["ACRR"]
        assert var.attrs["cell_methods"] == "time: sum" and var.attrs["units"] == "mm"
        assert var.attrs["standard_name"] == "lwe_thickness_of_precipitation_amount"
        assert ds["time"].attrs["bounds"] == "time_bnds"
        bounds = ds["time_bnds"].values
        np.testing.assert_array_equal(bounds[:, 1], ds["time"].values)
        np.testing.assert_array_equal(bounds[0, 0], ds["forecast_reference_time"].values)
        assert (np.diff(bounds, axis=1) == np.timedelta64(5, "m")).all()
    # a rate made from amounts per step is the mean rate over the step
    sources, run_dir = cases["netcdf-stack"]
    run = load_run(run_dir, device="cpu")
    da = open_frames(sources)
    template = forecast_template(run, da, 2, ["rainrate"], "mm", [], ForecastConfig())
    assert template["rainrate"].attrs["cell_methods"] == "time: mean"


def test_a_raster_variable_is_named_by_its_quantity(cases, tmp_path):
    sources, run = cases["geotiff"]
    out = tmp_path / "out"
    out.mkdir()
    summary = forecast_to_file(sources, run, f"{out}/", steps=2, device="cpu", fmt_name="geotiff")
    path = Path(summary["output_file"])
    assert path.name.startswith("precipitation_rate_convlstm_")
    with rasterio.open(path) as src:
        tags = src.tags()
        assert tags["variable"] == "precipitation_rate"
        assert tags["standard_name"] == "lwe_precipitation_rate"
        assert (tags["institution"], tags["license"]) == ("GeoTIFF Met Service", "CC0-1.0")
        assert float(tags["geospatial_lat_min"]) < float(tags["geospatial_lat_max"])


def test_variable_name_of_the_recipe(cases, tmp_path):
    path = forecast(cases["grib"], tmp_path / "f.nc", ForecastConfig(variable_name="rr"))
    with xr.open_dataset(path) as ds:
        assert [n for n in ds.data_vars if n != "crs"] == ["rr"]
    for bad in ("1x", "rain rate", "a-b", ""):
        with pytest.raises(ValidationError):
            ForecastConfig(variable_name=bad)
    with pytest.raises(ValidationError):
        ForecastConfig(attributes={"not a name": "x"})
    for taken, match in (("time", "is taken"), (["a", "b"], "2 name")):
        with pytest.raises(ConfigError, match=match):
            forecast(cases["grib"], tmp_path / "g.nc", ForecastConfig(variable_name=taken))


def _strings(value) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [value] if isinstance(value, str) else []


@pytest.mark.parametrize("fmt", ["netcdf", "geotiff", "cog"])
def test_no_absolute_paths_in_a_forecast_file(fmt, cases, tmp_path, tmp_path_factory):
    out = tmp_path / "deep" / "out"
    out.mkdir(parents=True)
    path = forecast(cases["netcdf-frames"], out / "f.nc" if fmt == "netcdf" else out / "f.tif",
                    fmt=fmt)  # fmt: skip
    if fmt == "netcdf":
        with netCDF4.Dataset(path) as nc:
            texts = [str(nc.getncattr(k)) for k in nc.ncattrs()]
            texts += [str(v.getncattr(k)) for v in nc.variables.values() for k in v.ncattrs()]
            prov = json.loads(nc.provenance)
    else:
        with rasterio.open(path) as src:
            texts = list(src.tags().values()) + [
                v for b in src.indexes for v in src.tags(b).values()
            ]
            prov = json.loads(src.tags()["provenance"])
    base = str(tmp_path_factory.getbasetemp())  # where the inputs, the run and the file are
    assert not [t for t in texts if base in t]
    assert not [t for t in _strings(prov) if base in t or os.path.isabs(t)]
    inputs = [path.parent / i["path"] for i in prov["inputs"]]
    assert len(inputs) == 4 and all(p.is_file() for p in inputs)  # relative to the file
    assert (path.parent / prov["model"]["run"]).resolve() == cases["netcdf-frames"][1].resolve()


# ------------------------------------------------------------------------------ COG


def test_cloud_optimized_geotiff(cases, tmp_path):
    big = make_template(n=3, ny=600, nx=700)
    path = write_forecast(tmp_path / "big.tif", big, make_leads(3, ny=600, nx=700), "cog")
    with rasterio.open(path) as src:
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert src.profile["tiled"] and src.block_shapes[0] == (256, 256)
        assert src.overviews(1) == [2, 4]  # down to one 256-pixel tile
        assert src.descriptions == ("+PT10M", "+PT20M", "+PT30M")
        assert src.tags(3)["valid_time"] == "2024-05-01T12:30:00Z"
        assert src.tags()["TIFFTAG_SOFTWARE"].startswith("stforecast")
        assert src.nodata == -9999.0 and np.isnan(src.read(1, masked=True).filled(np.nan)[0, 0])
    assert is_forecast(path)  # the next run may replace it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.tif"]  # no temporary left
    cogeo = pytest.importorskip("rio_cogeo.cogeo")
    valid, errors, warnings = cogeo.cog_validate(str(path))
    assert valid and not errors and not warnings, (errors, warnings)
    # a forecast of the engine as a COG, through the job (`[forecast] format = "cog"`)
    sources, run = cases["netcdf-stack"]
    out = tmp_path / "out"
    out.mkdir()
    summary = forecast_to_file(sources, run, f"{out}/", steps=2, device="cpu", fmt_name="cog")
    assert summary["output_file"].endswith(".tif") and cogeo.cog_validate(summary["output_file"])[0]


def test_a_failed_cog_leaves_nothing(tmp_path):
    previous = write_forecast(tmp_path / "f.tif", make_template(n=2, ny=8, nx=10),
                              make_leads(2, ny=8, nx=10), "cog")  # fmt: skip
    before = previous.read_bytes()

    def failing():
        yield from make_leads(1, ny=8, nx=10)
        raise RuntimeError("model died")

    with pytest.raises(RuntimeError, match="model died"):
        write_forecast(previous, make_template(n=2, ny=8, nx=10), failing(), "cog")
    assert previous.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.tif"]
