"""Several archives, one training set (`data.archives`, `data.spacing`, `data.time_step`): two
small synthetic archives of different grids, CRSs, spacings and time steps, prepared into one
store, trained on for two steps, and forecast from; plus the real BOM + KNMI archives."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyproj
import pytest
import xarray as xr
import zarr

from stforecast.config import Recipe, data_config, load_recipe
from stforecast.data.contract import DataContract
from stforecast.data.dataset import WindowDataset
from stforecast.data.prepare import prepare
from stforecast.data.spacing import cell_metres, to_spacing
from stforecast.data.store import read_manifest
from stforecast.data.timestep import to_time_step
from stforecast.errors import ConfigError, InputError

ALBERS = "+proj=aea +lat_1=-32 +lat_2=-35 +lat_0=-33 +lon_0=151 +units=m"
STEREO = "+proj=stere +lat_0=90 +lon_0=0 +lat_ts=60 +a=6378137 +b=6356752 +units=m"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _write(path: Path, values: np.ndarray, *, dx: float, step: int, start: str, proj: str,
           units: str, y0: float = 0.0) -> Path:  # fmt: skip
    n, ny, nx = values.shape
    times = np.datetime64(start) + np.arange(n) * np.timedelta64(step, "s")
    x = dx * (np.arange(nx) + 0.5)
    y = y0 - dx * (np.arange(ny) + 0.5)
    axis = {"units": "m"}
    ds = xr.Dataset(
        {
            "precipitation": (("time", "y", "x"), values.astype("f4"),
                              {"units": units, "grid_mapping": "proj"}),
            "proj": ((), 0, pyproj.CRS.from_proj4(proj).to_cf()),
        },
        coords={
            "time": times,
            "y": ("y", y, {"standard_name": "projection_y_coordinate", **axis}),
            "x": ("x", x, {"standard_name": "projection_x_coordinate", **axis}),
        },
    )  # fmt: skip
    ds.to_netcdf(path)
    return path


@pytest.fixture(scope="module")
def archives(tmp_path_factory) -> dict[str, Path]:
    """`a`: 0.5 km Albers, 10-min accumulations (kg m-2), 40 x 48, 30 frames; `b`: 1 km polar
    stereographic, 5-min accumulations (mm), 30 x 36, 60 frames, the first 4 rows NaN."""
    root = tmp_path_factory.mktemp("archives")
    rng = np.random.default_rng(0)
    a = rng.gamma(0.5, 1.0, (30, 40, 48))
    b = rng.gamma(0.5, 0.3, (60, 30, 36))
    b[:, :4] = np.nan
    return {
        "a": _write(root / "a.nc", a, dx=500.0, step=600, start="2020-10-31T00:00",
                    proj=ALBERS, units="kg m-2", y0=10_000.0),
        "b": _write(root / "b.nc", b, dx=1000.0, step=300, start="2010-08-26T00:00",
                    proj=STEREO, units="mm", y0=-3.6e6),
        "root": root,
    }  # fmt: skip


def _cfg(archives: dict[str, Path], **more):
    fields = {
        "archives": [
            {"name": "a", "sources": [str(archives["a"])]},
            {"name": "b", "sources": [str(archives["b"])]},
        ],
        "spacing": 2000,
        "time_step": "10min",
        "units": "mm/h",
        "transform": "log1p",
        "input_frames": 2,
        "output_frames": 2,
        "split": {"fractions": [0.6, 0.2, 0.2]},
    }
    fields.update(more)
    return data_config(None, **fields)


@pytest.fixture(scope="module")
def store(archives) -> Path:
    out = archives["root"] / "store"
    prepare(_cfg(archives), out)
    return out


# ------------------------------------------------------------------------------ the recipe


def test_recipe_forms(tmp_path):
    assert data_config(None, time_step="10min").time_step == 600
    assert data_config(None, time_step="PT5M").time_step == 300
    assert data_config(None, time_step=900).time_step == 900
    with pytest.raises(ConfigError, match="time_step"):
        data_config(None, time_step="ten minutes")
    with pytest.raises(ConfigError, match="not both"):
        data_config(None, sources=["x.nc"], archives=[{"sources": ["y.nc"]}])
    with pytest.raises(ConfigError, match="spacing replaces"):
        data_config(None, sources=["x.nc"], spacing=2000, coarsen=2)
    recipe = tmp_path / "r.toml"
    recipe.write_text(
        '[data]\nspacing = 2000\ntime_step = "10min"\n'
        '[[data.archives]]\nname = "bom"\nsources = ["bom/*.nc"]\n'
        '[[data.archives]]\nname = "knmi"\nsources = ["knmi"]\nsource_units = "mm"\n'
        "pixel_size = 1000\n"
    )
    data = load_recipe(recipe).data
    assert [a.name for a in data.archives] == ["bom", "knmi"]
    assert data.archives[0].sources == [str(tmp_path / "bom/*.nc")]  # relative to the recipe
    assert data.archives[1].pixel_size == 1000


# ------------------------------------------------------------------------------ time and grid


def _stack(values, step: int, units: str) -> xr.DataArray:
    n = len(values)
    times = np.datetime64("2020-01-01T00:00") + np.arange(n) * np.timedelta64(step, "s")
    data = np.asarray(values, np.float32)[:, None, None] * np.ones((1, 2, 2), np.float32)
    return xr.DataArray(data, dims=("time", "y", "x"), coords={"time": times},
                        attrs={"units": units, "time_step": step})  # fmt: skip


def test_accumulations_are_summed_rates_subsampled():
    five = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]  # 00:00 ... 00:30 every 5 min
    summed = to_time_step(_stack(five, 300, "mm"), 600)
    # model frames every 10 min back from the newest (00:30): 00:30 = 00:25 + 00:30, ...
    assert summed["time"].dt.strftime("%H:%M").values.tolist() == ["00:10", "00:20", "00:30"]
    assert summed.values[:, 0, 0].tolist() == [2 + 3, 4 + 5, 6 + 7]
    assert summed.attrs["time_resampling"] == "sum" and summed.attrs["time_step"] == 600
    rates = to_time_step(_stack(five, 300, "mm/h"), 600)
    assert rates.values[:, 0, 0].tolist() == [1.0, 3.0, 5.0, 7.0]  # 00:00, 00:10, 00:20, 00:30
    assert rates.attrs["time_resampling"] == "subsample"
    dbz = to_time_step(_stack(five, 300, "dBZ"), 900)
    assert dbz.values[:, 0, 0].tolist() == [1.0, 4.0, 7.0]  # 00:00, 00:15, 00:30
    gap = _stack(five, 300, "mm").drop_isel(time=3)  # 00:15 missing: the 00:20 sum is left out
    assert to_time_step(gap, 600)["time"].dt.strftime("%H:%M").values.tolist() == [
        "00:10",
        "00:30",
    ]
    with pytest.raises(InputError, match="not a divisor"):
        to_time_step(_stack(five, 300, "mm"), 420)


def test_spacing_block_mean_and_area_resampling(archives):
    from stforecast.io import open_frames

    a = open_frames([str(archives["a"])])
    assert cell_metres(a) == (500.0, 500.0)
    coarse = to_spacing(a, 2000)  # a whole ratio: 4 x 4 block mean
    assert coarse.sizes["y"] == 10 and coarse.sizes["x"] == 12
    block = a.values[0, :4, :4].mean()
    np.testing.assert_allclose(coarse.values[0, 0, 0], block, rtol=1e-5)
    assert coarse.attrs["transform"][0] == 2000.0
    odd = to_spacing(a, 1250)  # 2.5 cells: area-weighted, whole output cells only
    assert odd.sizes["x"] == 19 and odd.attrs["transform"][0] == pytest.approx(1250.0)
    v = a.values[0]
    weights = np.array([1, 1, 0.5])
    first = (weights[:, None] * v[:3, :3] * weights[None, :]).sum() / weights.sum() ** 2
    np.testing.assert_allclose(odd.values[0, 0, 0], first, rtol=1e-5)
    flat = to_spacing(a * 0 + 3.0, 1250)
    np.testing.assert_allclose(flat.values, 3.0, rtol=1e-6)


def test_grid_without_coordinates_needs_pixel_size():
    da = xr.DataArray(np.ones((2, 4, 4), np.float32), dims=("time", "y", "x"),
                      coords={"x": ("x", np.arange(4) + 0.5,
                                    {"long_name": "x in pixels (no coordinates in the file)"}),
                              "y": ("y", np.arange(4) + 0.5)},
                      attrs={"transform": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]})  # fmt: skip
    with pytest.raises(ConfigError, match="pixel_size"):
        to_spacing(da, 2000)
    assert to_spacing(da, 2000, pixel_size=1000).sizes["x"] == 2


# ------------------------------------------------------------------------------ the store


def test_two_archive_store(store, archives):
    m = read_manifest(store)
    assert m["format_version"] == 3
    per = {a["name"]: a for a in m["archives"]}
    # a: 30 frames at 10 min; b: 60 frames at 5 min -> 30 sums at 10 min. 0.6/0.2/0.2 of 30
    # frames = 18/6/6; windows of 4 frames: 15/3/3 in each archive
    for name in ("a", "b"):
        assert per[name]["time"]["frames"] == 30
        assert per[name]["split"]["frames"] == {"train": 18, "validation": 6, "test": 6}
        assert per[name]["windows"] == {"train": 15, "validation": 3, "test": 3}
    assert m["windows"]["counts"] == {"train": 30, "validation": 6, "test": 6}
    assert {a for a, _ in m["windows"]["starts"]["validation"]} == {0, 1}  # both archives
    assert per["a"]["grid"]["shape"] == [10, 12] and per["b"]["grid"]["shape"] == [15, 18]
    group = zarr.open_group(str(store), mode="r")
    cov_b = np.asarray(group["b"]["coverage"][:])
    assert not cov_b[:, :2].any() and cov_b[:, 2:].all()  # rows 0-3 NaN at 1 km -> 2 rows
    assert np.asarray(group["a"]["coverage"][:]).all()
    contract = DataContract.from_manifest(m)
    assert [a.name for a in contract.archives] == ["a", "b"]
    assert [a.time_resampling for a in contract.archives] == ["none", "sum"]
    assert [a.time_step_seconds for a in contract.archives] == [600, 300]
    assert contract.processing.spacing == 2000 and contract.time_step_seconds == 600
    assert contract.archives[1].native.shape == (30, 36)
    # b at 10 min, in mm/h: the sum of two 5-min depths x 6, block-averaged over 2 x 2 cells
    raw = xr.open_dataset(archives["b"])["precipitation"].values
    frames = np.asarray(group["b"]["frames"][:])
    expected = (raw[0] + raw[1]) * 6.0  # the first 10-min frame ends at 00:05
    expected = expected[4:8, 6:8].reshape(2, 2, 1, 2).mean(axis=(1, 3))[:, 0]
    got = np.expm1(frames[0, 0, 2:4, 3])  # log1p undone
    np.testing.assert_allclose(got, expected, rtol=1e-4)


def test_crops_across_archives(store):
    assert len(WindowDataset(store, "train", crop=10)) == 30
    with pytest.raises(ConfigError, match="smallest archive 10x12"):
        WindowDataset(store, "train", crop=11)
    with pytest.raises(ConfigError, match=r"train\.crop"):
        WindowDataset(store, "train")
    item = WindowDataset(store, "validation", crop=8)[5]
    assert int(item["archive"]) == 1 and item["inputs"].shape == (2, 1, 8, 8)


def test_single_archive_form_unchanged(archives, tmp_path):
    cfg = data_config(None, sources=[str(archives["a"])], input_frames=2, output_frames=2)
    assert prepare(cfg, tmp_path / "s")["format_version"] == 2


def test_a_step_that_does_not_divide_is_refused(archives, tmp_path):
    with pytest.raises(ConfigError, match="does not divide"):
        prepare(_cfg(archives, time_step=420), tmp_path / "s")


# ------------------------------------------------------------------------------ train, forecast


@pytest.fixture(scope="module")
def run(store, archives) -> Path:
    from stforecast.training import train
    from stforecast.training.datasets import build_datasets

    recipe = Recipe.model_validate({
        "data": {"store": str(store)},
        "model": {"name": "convlstm", "patch_size": 2, "hidden_channels": [4]},
        "train": {"batch_size": 2, "max_steps": 2, "val_every": 2, "val_batches": 1,
                  "checkpoint_every": 2, "crop": 8, "device": "cpu", "tensorboard": False},
    })  # fmt: skip
    out = archives["root"] / "run"
    train(recipe, out, data=build_datasets(recipe))
    return out


def test_card_lists_every_archive(run):
    card = json.loads((run / "model.json").read_text())
    assert [a["name"] for a in card["input"]["archives"]] == ["a", "b"]
    assert card["input"]["processing"]["spacing"] == 2000


def test_forecast_from_a_finer_step_on_the_input_grid(run, archives, tmp_path):
    from stforecast.forecasting import forecast_to_file
    from stforecast.forecasting.inputs import checked_inputs, frame_values
    from stforecast.io import open_frames
    from stforecast.rundir.load import load_run

    frames = open_frames([str(archives["b"])])  # 5-min frames for a 10-min model
    model = load_run(run, device="cpu")
    inputs = checked_inputs(frames, model)
    values = frame_values(inputs, model.input_frames)
    raw = xr.open_dataset(archives["b"])["precipitation"].values
    newest = (raw[-2] + raw[-1]) * 6.0  # mm per 10 min -> mm/h
    np.testing.assert_allclose(values[-1, 0, 2, 0], newest[4:6, 0:2].mean(), rtol=1e-4)
    out = forecast_to_file([str(archives["b"])], model, tmp_path / "f.nc", steps=2,
                           now="2010-08-26T04:55")  # fmt: skip
    ds = xr.open_dataset(out["output_file"])
    b = xr.open_dataset(archives["b"])
    assert ds["precipitation"].shape == (2, 30, 36)  # the input's own 1 km grid
    np.testing.assert_allclose(ds["x"].values, b["x"].values)
    np.testing.assert_allclose(ds["y"].values, b["y"].values)
    assert json.loads(ds.attrs["geotransform"])[0] == 1000.0
    assert ds.attrs["model_spacing_metres"] == 2000.0
    field = ds["precipitation"].values
    assert np.isnan(field[:, :4]).all() and np.isfinite(field[:, 4:]).all()


def test_hindcast_on_a_finer_archive(run, archives):
    from stforecast.evaluation.cases import hindcast_cases
    from stforecast.rundir.load import load_run

    model = load_run(run, device="cpu")
    cases, total, _ = hindcast_cases(model, [str(archives["b"])], steps=2,
                                     start="2010-08-26T04:05", end="2010-08-26T04:30")  # fmt: skip
    cases = list(cases)
    assert total == len(cases) == 3  # 04:05, 04:15, 04:25: on the 10-min frames
    assert cases[0].truth.shape == (2, 15, 18) and cases[0].model.shape == (2, 15, 18)
    assert np.isfinite(cases[0].truth[:, 2:]).all()


# ------------------------------------------------------------------------------ real data


@pytest.mark.skipif(not (SHARED / "radar-knmi-20100826").is_dir(), reason="no ../shared/data")
def test_real_bom_and_knmi_at_2_km(tmp_path):
    bom = sorted((SHARED / "radar-bom-66-20201031").glob("*.nc"))[:16]
    cfg = data_config(
        None,
        archives=[
            {"name": "bom", "sources": [str(p) for p in bom]},
            {"name": "knmi", "sources": [str(SHARED / "radar-knmi-20100826")],
             "source_units": "mm", "pixel_size": 1000, "crop_pixels": [300, 460, 300, 460]},
        ],
        spacing=2000, units="mm/h", input_frames=2, output_frames=2,
        split={"fractions": [0.5, 0.25, 0.25]},
    )  # fmt: skip
    m = prepare(cfg, tmp_path / "s")
    per = {a["name"]: a for a in m["archives"]}
    assert per["bom"]["grid"]["shape"] == [128, 128]  # 512 x 0.5 km -> 2 km
    assert per["knmi"]["grid"]["shape"] == [80, 80]  # 160 x 1 km -> 2 km
    assert per["bom"]["time"]["frames"] == 16 and per["knmi"]["time"]["frames"] == 46
    contract = DataContract.from_manifest(m)
    assert [a.time_resampling for a in contract.archives] == ["none", "sum"]
    assert all(per[n]["windows"]["validation"] > 0 for n in per)


def test_a_recipe_of_archives_is_prepared_into_the_cache(archives, tmp_path):
    from stforecast.training.datasets import build_datasets, describe

    recipe = Recipe.model_validate({
        "data": _cfg(archives).model_dump(mode="json"),
        "model": {"name": "convlstm", "patch_size": 2, "hidden_channels": [4]},
        "train": {"crop": 8, "device": "cpu"},
    })  # fmt: skip
    assert describe(recipe)["frame_size"] == (8, 8)
    data = build_datasets(recipe, cache_dir=tmp_path)
    assert len(data.train) == 30 and len(data.validation) == 6
    assert [a.name for a in data.contract.archives] == ["a", "b"]


@pytest.mark.skipif(not (SHARED / "radar-fmi-geotiff-20160928").is_dir(), reason="no shared data")
def test_real_fmi_reflectivity_at_2_km(tmp_path):
    """FMI: 250.004 m cells, dBZ every 5 min -> mm/h, subsampled to 10 min, 8 x 8 block mean."""
    files = sorted((SHARED / "radar-fmi-geotiff-20160928").glob("*.tif"))[:8]
    cfg = data_config(
        None, sources=[str(p) for p in files], spacing=2000, time_step=600, units="mm/h",
        crop_bbox=[200000, 6700000, 300000, 6800000], input_frames=1, output_frames=1,
        split={"fractions": [0.5, 0.25, 0.25]},
    )  # fmt: skip
    m = prepare(cfg, tmp_path / "s")
    (archive,) = m["archives"]
    assert archive["grid"]["shape"] == [50, 50] and archive["time"]["frames"] == 4
    assert m["contract"]["archives"][0]["time_resampling"] == "subsample"
    assert m["contract"]["archives"][0]["grid"]["transform"][0] == pytest.approx(2000, rel=1e-4)


# ------------------------------------------------------------------------------ a held-out archive


def _held_out(path: Path, values: np.ndarray, variable: str = "rain") -> Path:
    """A KNMI-like archive none of the model's: no x/y coordinates, free-text units, 5 min."""
    n = values.shape[0]
    times = np.datetime64("2016-09-28T12:00") + np.arange(n) * np.timedelta64(300, "s")
    ds = xr.Dataset(
        {variable: (("time", "y", "x"), values.astype("f4"), {"units": "mm in 5 minutes"})},
        coords={"time": times},
    )
    ds.to_netcdf(path)
    return path


def test_hindcast_on_an_archive_declared_as_a_data_archives_entry(run, archives):
    """`evaluate --archive` / `archive=`: what a held-out archive's files do not say (units
    in words, no coordinates, another variable name, a crop), as `[[data.archives]]` says it."""
    from stforecast.evaluation.cases import hindcast_cases
    from stforecast.rundir.load import load_run

    rng = np.random.default_rng(1)
    raw = rng.gamma(0.5, 0.3, (40, 24, 28))
    path = _held_out(archives["root"] / "held_out.nc", raw)
    model = load_run(run, device="cpu")
    with pytest.raises(InputError, match="precipitation"):  # not the model's variable name
        hindcast_cases(model, [str(path)], steps=2)
    declared = {"variable": "rain", "source_units": "mm", "pixel_size": 1000,
                "crop_pixels": [4, 24, 0, 24]}  # fmt: skip
    with pytest.raises(ConfigError, match="pixel_size"):  # no coordinates, no pixel size
        partial = {k: declared[k] for k in ("variable", "source_units")}
        list(hindcast_cases(model, [str(path)], steps=2, archive=partial)[0])
    cases, total, _ = hindcast_cases(model, [str(path)], steps=2, archive=declared)
    cases = list(cases)
    assert total == len(cases) == 20 - 2 - 2 + 1  # 10-min frames, 2 in and 2 out
    assert cases[0].truth.shape == (2, 10, 12)  # 20 x 24 pixels of 1 km -> 2 km
    # 10-min frames end at 12:05, 12:15, ... (each two 5-min depths summed); the first case's
    # first truth frame is the third, in mm/h, block-averaged over 2 x 2 pixels of the crop
    depth = (raw[4] + raw[5])[4:24, :24] * 6.0
    np.testing.assert_allclose(cases[0].truth[0], depth.reshape(10, 2, 12, 2).mean(axis=(1, 3)),
                               rtol=1e-5)  # fmt: skip
    with pytest.raises(ConfigError, match="pixel_sise"):
        hindcast_cases(model, [str(path)], steps=2, archive={"pixel_sise": 1000})
    with pytest.raises(ConfigError, match="do not apply"):
        hindcast_cases(model, [str(path)], steps=2, archive={"split": {}})


def test_evaluate_command_takes_archive_declarations(run, archives, tmp_path):
    from typer.testing import CliRunner

    from stforecast.cli.app import app

    path = _held_out(archives["root"] / "held_out_cli.nc",
                     np.random.default_rng(2).gamma(0.5, 0.3, (24, 20, 24)))  # fmt: skip
    res = CliRunner().invoke(app, [
        "evaluate", str(path), "--model", str(run), "--out", str(tmp_path / "ev"), "--steps", "2",
        "--device", "cpu", "--baselines", "persistence", "--quiet",
        "--archive", "variable=rain", "--archive", "source_units=mm",
        "--archive", "pixel_size=1000",
    ])  # fmt: skip
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert doc["data"]["archive"] == {"variable": "rain", "source_units": "mm", "pixel_size": 1000}
    assert doc["cases"] == 12 - 4 + 1
    res = CliRunner().invoke(app, ["evaluate", str(path), "--model", str(run), "--quiet",
                                   "--archive", "pixel_size"])  # fmt: skip
    assert res.exit_code == 2 and "field=value" in res.output
