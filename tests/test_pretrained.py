"""The shipped radar nowcaster (`stforecast/pretrained/radar`): it loads with its card on the
CPU, is the default of `forecast` for precipitation on any grid (BOM: 0.5 km, 10-min depths,
its Albers equal-area grid; KNMI: 1 km, 5-min depths, polar stereographic) and writes the forecast
on the input's grid, refuses a temperature input with one line, is listed by `models`, and the
wheel carries it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import stforecast
from stforecast import pretrained

from conftest import shared

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "stforecast"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "STFORECAST_MODEL"}
    return env


def test_the_shipped_weights_load_with_their_card_on_the_cpu():
    assert "radar" in pretrained.names()
    net, card = stforecast.load_model("radar")
    assert card["pretrained"]["recipe"] == "recipes/radar.toml"
    assert card["input"]["accepts"] == ["rate", "accumulation", "reflectivity"]
    assert card["input"]["store"] is None  # nothing of the machine it was trained on
    assert all("/" not in c["path"] for c in card["training"]["data_checksums"])
    assert sum(p.numel() for p in net.parameters()) == card["architecture"]["parameters"]
    assert next(net.parameters()).device.type == "cpu"
    assert card["blending"]["first_lead"] == 1  # blended with the extrapolation from lead 1
    assert {a["name"] for a in card["input"]["archives"]} == {"bom", "knmi", "fmi"}
    size = (pretrained.HERE / "radar" / "model.safetensors").stat().st_size
    assert size < 10e6


def test_default_forecast_of_a_bom_input_is_on_its_grid(tmp_path):
    pytest.importorskip("pysteps")  # the shipped model is guided by S-PROG
    bom = sorted(shared("radar-bom-66-20201031").glob("*.nc"))[60:66]  # it rains at 10:00
    out = tmp_path / "bom.nc"
    res = subprocess.run([*CLI, "forecast", *map(str, bom), "--out", str(out), "--quiet"],
                         capture_output=True, text=True, env=_env(), cwd=tmp_path)  # fmt: skip
    assert res.returncode == 0, res.stderr
    ds = xr.open_dataset(out)
    src = xr.open_dataset(bom[-1])
    name = next(n for n in ds.data_vars if ds[n].ndim == 3)
    assert "CF-1.10" in ds.attrs["Conventions"]
    km = 1000.0 if src["x"].attrs.get("units") == "km" else 1.0  # written in metres
    np.testing.assert_allclose(ds["x"].values, km * src["x"].values)  # the input's own grid
    np.testing.assert_allclose(ds["y"].values, km * src["y"].values)
    assert ds[name].sizes["time"] == 6
    assert ds[name].attrs["units"] == src["precipitation"].attrs["units"]  # the input's units
    assert json.loads(ds.attrs["provenance"])["model"]["pretrained"] == "radar"
    field = ds[name].values
    assert np.nanmax(field) > 0.1 and np.all(field[np.isfinite(field)] >= 0)


def test_default_forecast_of_a_knmi_input_through_the_api():
    pytest.importorskip("pysteps")
    raw = xr.open_dataset(shared("radar-knmi-20100826") / "knmi_rap5min_20100826.nc")
    rain = raw["precipitation"].isel(time=slice(40, 56), y=slice(200, 600), x=slice(160, 560))
    import pyproj

    stere = pyproj.CRS.from_proj4(  # KNMI's polar stereographic grid
        "+proj=stere +lat_0=90 +lon_0=0 +lat_ts=60 +a=6378137 +b=6356752 +x_0=0 +y_0=0"
    ).to_wkt()
    rain = rain.assign_coords(
        x=("x", 1000.0 * np.arange(rain.sizes["x"]) + 500.0),
        y=("y", -3650000.0 - 1000.0 * np.arange(rain.sizes["y"])),
    )
    rain.attrs = {"units": "mm", "crs_wkt": stere}  # 5-minute depths, 1 km
    ds = stforecast.forecast(rain, hours=1)  # no model: the shipped one
    name = next(n for n in ds.data_vars if n != "crs")
    assert ds[name].shape == (6, 400, 400)  # an hour at 10 min, on the KNMI grid
    np.testing.assert_array_equal(ds["x"].values, rain["x"].values)
    assert ds[name].attrs["units"] == "mm"
    assert np.nanmax(ds[name].values) > 0.01


def test_a_temperature_input_exits_with_one_line(tmp_path):
    era5 = shared("era5-t2m-uk-201903")
    res = subprocess.run([*CLI, "forecast", str(era5), "--out", str(tmp_path / "t.nc")],
                         capture_output=True, text=True, env=_env())  # fmt: skip
    assert res.returncode == 4, res.stderr
    assert res.stderr.count("\n") == 1
    assert "precipitation only" in res.stderr and "--model" in res.stderr
    assert not list(tmp_path.iterdir())


def test_models_lists_the_shipped_model():
    res = subprocess.run([*CLI, "models"], capture_output=True, text=True, env={**_env(),
                         "COLUMNS": "200"})  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "shipped models" in res.stdout and "radar" in res.stdout and "knmi" in res.stdout


def test_the_wheel_holds_the_shipped_model(tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path), "-q"], capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    wheel = next(tmp_path.glob("stforecast-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "stforecast/pretrained/radar/model.safetensors" in names
    assert "stforecast/pretrained/radar/model.json" in names
    assert wheel.stat().st_size < 15e6


def _tuning_recipe(tmp_path: Path, extra: list[str]):
    from stforecast.config import load_recipe
    from stforecast.data.synthetic import write_rain_cells

    rain = write_rain_cells(tmp_path / "rain.nc", frames=60, size=64, seed=5)
    return load_recipe(ROOT / "recipes" / "quickstart.toml", [
        f'data.sources=["{rain}"]', "data.units=mm/h", "model.options.norm=channel",
        "model.options.window=4", "model.options.guidance=sprog", "train.max_steps=2",
        "train.max_time=600", "train.val_every=2", "train.val_batches=1",
        "train.checkpoint_every=2", "train.tensorboard=false", "train.device=cpu",
        "train.batch_size=2", *extra,
    ])  # fmt: skip


def test_fine_tuning_starts_from_the_shipped_weights_and_changes_them(tmp_path):
    pytest.importorskip("pysteps")
    import torch

    from stforecast.rundir.load import load_model
    from stforecast.training import train
    from stforecast.training.datasets import build_datasets

    cfg = _tuning_recipe(tmp_path, ["train.init=radar", "train.select=loss"])
    train(cfg, tmp_path / "run", data=build_datasets(cfg, cache_dir=tmp_path / "cache"))
    shipped, _ = load_model("radar")
    tuned, card = load_model(tmp_path / "run", weights="final")
    assert card["hyperparameters"]["init"] == "radar"
    a, b = shipped.state_dict(), tuned.state_dict()
    moved = [k for k in a if not torch.equal(a[k], b[k])]
    assert moved  # two steps of AdamW at 5e-3 move the weights ...
    change = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert change < 0.05  # ... a little: they started from the shipped ones, not at random


def test_fine_tuning_refuses_another_architecture(tmp_path):
    from stforecast.errors import ConfigError
    from stforecast.models.registry import build_from_config
    from stforecast.training import warmstart

    cfg = _tuning_recipe(tmp_path, ["model.hidden_channels=[16, 16]"])
    net = build_from_config(cfg.model.model_dump() | {"in_channels": 1, "frame_size": (64, 64)})
    with pytest.raises(ConfigError, match=r"train\.init: radar is a cms_lstm"):
        warmstart.load(net, "radar")


def test_a_general_model_answers_in_the_inputs_units():
    from stforecast.forecasting.regrid import _answer
    from stforecast.forecasting.template import answered

    rate = np.array([[0.0, 1.0, 6.0]], np.float32)  # mm/h
    zr = (200.0, 1.6)
    dbz = _answer(rate, {"from": "mm h-1", "units": "dBZ", "step_seconds": 600, "zr": zr})
    assert dbz[0, 1] == pytest.approx(10 * np.log10(200.0), abs=1e-4)  # Z = 200 R^1.6 at 1 mm/h
    depth = _answer(rate, {"from": "mm h-1", "units": "mm", "step_seconds": 600, "zr": zr})
    np.testing.assert_allclose(depth, [[0.0, 1 / 6, 1.0]], rtol=1e-6)  # mm per 10-min step
    attrs = answered({"units": "mm h-1", "long_name": "rate", "grid_mapping": "crs"}, "mm")
    assert attrs["units"] == "mm" and attrs["cell_methods"] == "time: sum"
    assert attrs["grid_mapping"] == "crs"


def test_names_resolve_to_the_package_unless_a_path_is_there(tmp_path, monkeypatch):
    from stforecast.forecasting.client import job_for

    assert pretrained.resolve("radar") == pretrained.HERE / "radar"
    assert pretrained.resolve("nothing") == Path("nothing")  # reported missing by the caller
    monkeypatch.chdir(tmp_path)
    (tmp_path / "radar").mkdir()
    assert pretrained.resolve("radar") == Path("radar")  # a directory beside the user wins
    monkeypatch.chdir(ROOT)
    job = job_for(["a.nc"], None, "out/")  # the server job of `forecast --socket`, no model
    assert job["model"] == str(pretrained.HERE / "radar")
