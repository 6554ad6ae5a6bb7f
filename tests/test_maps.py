"""Maps a forecaster can read: km/degree axes, a graticule computed with pyproj, coastlines from
files already on the machine (never downloaded), the last observation beside the forecast, and
one palette with its unit on the colour bar for `stforecast plot` and the report."""

from __future__ import annotations

import json
import socket
import sys
import urllib.request

import numpy as np
import pyproj
import pytest
import xarray as xr
from matplotlib.figure import Figure

import stforecast.viz.quicklook as plot_mod
from stforecast.errors import InputError
from stforecast.evaluation.figures import sample_figure
from stforecast.viz import coastlines
from stforecast.viz.maps import crossing, graticule, map_grid, map_layers
from stforecast.viz.palette import RAIN_LEVELS, display_scale, rain_threshold
from stforecast.viz.quicklook import open_forecast, quicklook

CRS = pyproj.CRS.from_epsg(3035)


def _projected(n: int = 3, size: int = 64, step: float = 4000.0, units: str = "mm h-1"):
    """A forecast-like dataset on EPSG:3035 around 8° E, 50° N (y descending), with a `crs`
    grid-mapping variable as the writers make it."""
    x0, y0 = CRS_CENTRE
    x = x0 + (np.arange(size) - size / 2 + 0.5) * step
    y = y0 - (np.arange(size) - size / 2 + 0.5) * step
    t0 = np.datetime64("2024-01-01T12:00", "ns")
    period = (np.arange(1, n + 1) * np.timedelta64(10, "m")).astype("timedelta64[ns]")
    values = np.random.default_rng(0).gamma(0.6, 2.0, (n, size, size)).astype(np.float32)
    attrs = {"units": units, "grid_mapping": "crs", "long_name": "rain rate"}
    return xr.Dataset(
        {
            "rain": (("time", "y", "x"), values, attrs),
            "crs": ((), np.int32(0), {**CRS.to_cf(), "crs_wkt": CRS.to_wkt()}),
        },
        coords={
            "time": t0 + period,
            "forecast_period": ("time", period),
            "forecast_reference_time": t0,
            "x": ("x", x, {"units": "m"}),
            "y": ("y", y, {"units": "m"}),
        },
    )


CRS_CENTRE = pyproj.Transformer.from_crs(4326, CRS, always_xy=True).transform(8.0, 50.0)


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Nothing here may reach the network: any attempt fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[:1]}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.delenv(coastlines.COASTLINES_ENV, raising=False)


# ------------------------------------------------------------------------------ grid, graticule


def test_projected_grid_in_km_and_graticule_against_pyproj():
    ds = _projected(size=48)
    grid = map_grid(ds["rain"], ds)
    assert grid is not None and grid.metres == 1.0 and not grid.geographic
    (left, _right, _bottom, top), origin = grid.extent()
    assert origin == "upper"  # y descends: row 0 north
    assert left == pytest.approx((ds.x.values[0] - 2000) / 1000)
    assert top == pytest.approx((ds.y.values[0] + 2000) / 1000)
    lines = graticule(grid)
    to_lonlat = pyproj.Transformer.from_crs(CRS, 4326, always_xy=True)
    meridians = [line for line in lines if line.kind == "meridian"]
    parallels = [line for line in lines if line.kind == "parallel"]
    # A 192 km square around 8° E, 50° N: meridians and parallels every 0.5°.
    assert [m.value for m in meridians] == [7.0, 7.5, 8.0, 8.5, 9.0]
    assert [p.value for p in parallels] == [49.5, 50.0, 50.5]
    for line in lines:
        lon, lat = to_lonlat.transform(line.x, line.y)
        along = lon if line.kind == "meridian" else lat
        np.testing.assert_allclose(along, line.value, atol=1e-7)
    # The 8° E meridian crosses the bottom edge where pyproj puts 8° E on that edge.
    eight = next(m for m in meridians if m.value == 8.0)
    x = crossing(eight, "bottom", grid)
    lon, _lat = to_lonlat.transform(x, grid.bounds()[1])
    assert lon == pytest.approx(8.0, abs=1e-3)


def test_lat_lon_grid_in_degrees_without_graticule():
    lat = np.arange(58.0, 49.9, -0.25)
    lon = np.arange(-10.0, 2.01, 0.25)
    da = xr.DataArray(
        np.zeros((1, lat.size, lon.size)),
        dims=("time", "latitude", "longitude"),
        coords={"latitude": lat, "longitude": ("longitude", lon, {"units": "degrees_east"})},
    )
    grid = map_grid(da)
    assert grid is not None and grid.geographic and grid.axis_unit == "°"
    (left, right, bottom, top), _ = grid.extent()
    assert (left, right, bottom, top) == pytest.approx((-10.125, 2.125, 49.875, 58.125))
    assert graticule(grid) == []  # the axes are the graticule


def test_a_grid_without_coordinates_is_an_image():
    da = xr.DataArray(np.zeros((2, 8, 8)), dims=("time", "y", "x"))
    assert map_grid(da) is None
    assert map_layers(None).graticule == []


# ------------------------------------------------------------------------------ coastlines


def _geojson(path, lonlat: list[tuple[float, float]]) -> None:
    feature = {"type": "Feature", "geometry": {"type": "LineString", "coordinates": lonlat}}
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))


def test_coastlines_from_a_geojson_file_projected_with_pyproj(tmp_path, monkeypatch):
    coast = tmp_path / "coast.geojson"
    _geojson(coast, [(7.0, 49.5), (8.0, 50.0), (9.0, 50.5)])
    ds = _projected()
    grid = map_grid(ds["rain"], ds)
    monkeypatch.setenv(coastlines.COASTLINES_ENV, str(tmp_path))
    layers = map_layers(grid)
    assert layers.note == f"coastlines: {tmp_path.name}"
    assert len(layers.coasts) == 1
    x, y = pyproj.Transformer.from_crs(4326, CRS, always_xy=True).transform(
        [7.0, 8.0, 9.0], [49.5, 50.0, 50.5]
    )
    np.testing.assert_allclose(layers.coasts[0][0], x)
    np.testing.assert_allclose(layers.coasts[0][1], y)
    assert map_layers(grid, "none").coasts == []  # switched off
    with pytest.raises(InputError, match="no such coastline"):
        map_layers(grid, tmp_path / "missing.shp")


def _natural_earth(root, name: str = "coastline", category: str = "physical") -> None:
    """A tiny shapefile where cartopy keeps Natural Earth's (made here, not Natural Earth's)."""
    shapefile = pytest.importorskip("shapefile")
    folder = root / "shapefiles" / "natural_earth" / category
    folder.mkdir(parents=True)
    with shapefile.Writer(str(folder / f"ne_10m_{name}"), shapeType=shapefile.POLYLINE) as w:
        w.field("name", "C")
        w.line([[[7.0, 49.5], [8.0, 50.0], [9.0, 50.5]]])
        w.record("a line")


def test_natural_earth_files_cartopy_already_has_without_download(tmp_path, monkeypatch):
    cartopy = pytest.importorskip("cartopy")
    from cartopy.io import Downloader

    def no_download(self, *args, **kwargs):
        raise AssertionError("cartopy was asked to download")

    monkeypatch.setattr(Downloader, "acquire_resource", no_download)
    monkeypatch.setitem(cartopy.config, "pre_existing_data_dir", tmp_path / "pre")
    monkeypatch.setitem(cartopy.config, "data_dir", tmp_path / "data")
    ds = _projected()
    grid = map_grid(ds["rain"], ds)
    # Nothing on disk: no coastlines, and no download attempted.
    assert coastlines.natural_earth_file("10m", "physical", "coastline") is None
    layers = map_layers(grid)
    assert layers.coasts == [] and layers.note == ""
    # The coastline in cartopy's data directory: read with cartopy's reader.
    _natural_earth(tmp_path / "data")
    found = coastlines.natural_earth_file("10m", "physical", "coastline")
    assert found == tmp_path / "data/shapefiles/natural_earth/physical/ne_10m_coastline.shp"
    layers = map_layers(grid)
    assert layers.note == "coastlines: Natural Earth 10m" and len(layers.coasts) == 1
    x, _y = pyproj.Transformer.from_crs(4326, CRS, always_xy=True).transform(8.0, 50.0)
    assert x == pytest.approx(layers.coasts[0][0][1])


def test_without_cartopy_the_graticule_alone(monkeypatch):
    monkeypatch.setitem(sys.modules, "cartopy", None)  # `import cartopy` raises ImportError
    assert coastlines.natural_earth_file("10m", "physical", "coastline") is None
    ds = _projected()
    layers = map_layers(map_grid(ds["rain"], ds))
    assert layers.coasts == [] and layers.graticule


# ------------------------------------------------------------------------------ the pictures


@pytest.fixture
def drawn(monkeypatch):
    """The figures `quicklook` saves, kept for inspection."""
    figures: list[Figure] = []
    original = Figure.savefig

    def keep(self, *args, **kwargs):
        figures.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    return figures


def _colour_bar_labels(fig: Figure) -> list[str]:
    return [ax.get_ylabel() for ax in fig.axes if not ax.images and ax.get_ylabel()]


def test_plot_axes_in_km_graticule_and_unit_on_the_colour_bar(tmp_path, drawn):
    ds = _projected(units="kg m-2 s-1")
    ds["rain"].values[:] = 3.0 / 3600  # 3 mm/h
    quicklook(ds, tmp_path / "q.png", observed=None)
    (fig,) = drawn
    assert "rain rate [mm/h]" in _colour_bar_labels(fig)
    maps = [ax for ax in fig.axes if ax.images]
    assert len(maps) == 3
    x0, _x1 = maps[0].get_xlim()
    assert x0 == pytest.approx((ds.x.values[0] - 2000) / 1000)  # km, not metres
    assert any("°E" in t.get_text() for t in maps[0].texts)  # graticule labels
    image = maps[0].images[0]
    assert list(image.norm.boundaries) == list(RAIN_LEVELS)
    np.testing.assert_allclose(image.get_array(), 3.0, rtol=1e-5)  # shown in mm/h
    assert any("EPSG:3035" in t.get_text() for t in fig.texts)  # the note under the maps


def test_the_last_observation_beside_the_forecast(tmp_path, drawn, monkeypatch):
    archive = _projected(n=4)
    archive = archive.assign_coords(time=archive.time.values - np.timedelta64(30, "m"))
    archive = archive.drop_vars(["forecast_period", "forecast_reference_time"])
    archive["rain"].attrs = {"units": "mm", "grid_mapping": "crs"}  # mm per 10 min
    archive["rain"].values[:] = np.arange(4)[:, None, None] * 1.0  # 0, 1, 2, 3 mm
    path = tmp_path / "archive.nc"
    archive.to_netcdf(path)
    forecast = _projected()
    forecast.attrs["provenance"] = json.dumps(
        {"inputs": [{"path": str(path), "valid_times": ["2024-01-01T12:00:00Z"]}]}
    )
    # The frame at the reference time (12:00, 2 mm in 10 min) as a rate: 12 mm/h.
    quicklook(forecast, tmp_path / "auto.png")
    maps = [ax for ax in drawn[-1].axes if ax.images]
    assert len(maps) == 4 and maps[0].get_title().startswith("observed")
    np.testing.assert_allclose(maps[0].images[0].get_array(), 12.0, rtol=1e-5)
    # Flipped rows and an explicit source: the same frame on the forecast's grid.
    flipped = tmp_path / "flipped.nc"
    archive.isel(y=slice(None, None, -1)).to_netcdf(flipped)
    quicklook(forecast, tmp_path / "given.gif", observed=str(flipped))
    maps = [ax for ax in drawn[-1].axes if ax.images]
    assert maps[0].get_title().startswith("observed\n2024-01-01 12:00")
    # Provenance paths relative to the forecast file (as the writers make them), read back
    # from another working directory.
    (tmp_path / "out").mkdir()
    forecast.attrs["provenance"] = json.dumps(
        {"inputs": [{"path": "../archive.nc", "valid_times": ["2024-01-01T12:00:00Z"]}]}
    )
    forecast.to_netcdf(tmp_path / "out" / "f.nc")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    quicklook(open_forecast(tmp_path / "out" / "f.nc"), tmp_path / "relative.png")
    maps = [ax for ax in drawn[-1].axes if ax.images]
    assert len(maps) == 4
    np.testing.assert_allclose(maps[0].images[0].get_array(), 12.0, rtol=1e-5)
    # Gone from the disk: no observation, no error; asked for and unreadable: an error.
    path.unlink()
    quicklook(forecast, tmp_path / "gone.png")
    assert len([ax for ax in drawn[-1].axes if ax.images]) == 3
    with pytest.raises(InputError):
        quicklook(forecast, tmp_path / "x.png", observed=str(tmp_path / "nothing.nc"))


def test_plot_and_report_share_one_palette(drawn, tmp_path):
    rng = np.random.default_rng(2)
    frames = rng.gamma(0.5, 4.0, (7, 16, 16))
    sample = {
        "inputs": frames[:4],
        "truth": frames[4:],
        "forecasts": {"model": frames[4:] * 0.8},
        "lead_minutes": [10, 20, 30],
        "units": "mm h-1",
    }
    fig = sample_figure(sample, grid={"shape": [16, 16], "spacing_metres": 2000.0})
    panel = next(ax for ax in fig.axes if ax.images)
    quicklook(_projected(), tmp_path / "q.png", observed=None)
    plot_image = next(ax for ax in drawn[-1].axes if ax.images).images[0]
    report_image = panel.images[0]
    assert list(report_image.norm.boundaries) == list(plot_image.norm.boundaries)
    assert report_image.cmap.colors == plot_image.cmap.colors
    assert report_image.cmap.get_under() == pytest.approx(plot_image.cmap.get_under())
    assert report_image.cmap.get_bad() == pytest.approx(plot_image.cmap.get_bad())
    assert "mm/h" in _colour_bar_labels(fig)
    assert "error [mm/h]" in _colour_bar_labels(fig)
    assert panel.get_xlim() == pytest.approx((0.0, 32.0))  # km from the corner: 16 × 2 km


def test_one_notion_of_rain():
    assert rain_threshold("mm h-1") == pytest.approx(0.1)
    assert rain_threshold("kg m-2 s-1") == pytest.approx(0.1 / 3600)
    assert rain_threshold("mm") == pytest.approx(0.1)
    assert rain_threshold("K") is None
    _scale, shown, unit = display_scale(np.array([1 / 3600]), "kg m-2 s-1")
    assert unit == "mm/h" and shown[0] == pytest.approx(1.0)
    assert display_scale(np.array([270.0, 280.0]), "K")[2] == "K"


def test_a_failed_plot_draw_is_not_left_behind(tmp_path, monkeypatch):
    def broken(tmp, picture):
        raise RuntimeError("disk full")

    monkeypatch.setattr(plot_mod, "_gif", broken)
    with pytest.raises(RuntimeError):
        quicklook(_projected(), tmp_path / "q.gif", observed=None)
    assert list(tmp_path.iterdir()) == []
