"""Issue 13, in process: bounded lead times (`[forecast] max_hours`), stale input (the age of the
newest frame, `max_input_age` / `--max-age`, `--reference-time`) and the CRS messages. Each
failure exits with its code, prints one line and leaves nothing behind; the previous forecast
stays as it was. The server's side (job time limit, non-JSON requests) is in test_serve.py."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pyproj
import pytest
import xarray as xr
from forecast_files import forecast_file
from typer.testing import CliRunner

from stforecast.cli.app import app
from stforecast.config import ForecastConfig
from stforecast.errors import ConfigError, InputError
from stforecast.forecasting.inputs import as_time, crs_difference, input_age
from stforecast.forecasting.plan import lead_steps
from stforecast.rundir.load import load_run

from runs import make_run

# The synthetic archive of `make_run`: 72 frames every 10 min, the newest at 11:50.
NEWEST = "2024-01-01T11:50:00Z"


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("plain"))


def run_with(src: Path, dest: Path, **forecast: object) -> Path:
    """A copy of run `src` whose recipe sets these `[forecast]` fields."""
    shutil.copytree(src, dest)
    recipe = dest / "recipe.toml"
    text = recipe.read_text()
    for key, value in forecast.items():
        text = re.sub(rf"(?m)^{key} = .*\n", "", text)
        text = text.replace("[forecast]\n", f"[forecast]\n{key} = {json.dumps(value)}\n")
    recipe.write_text(text)
    return dest


def cli(*args: str):
    return CliRunner().invoke(app, list(args))


def forecast(plain, *extra: str, run: Path | None = None):
    return cli("forecast", str(plain["archive"]), "--model", str(run or plain["run"]), *extra)


def one_error_line(res) -> str:
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "Traceback" not in res.output
    return lines[0]


def events(res) -> list[dict]:
    return [json.loads(line) for line in res.stdout.splitlines()]


# ------------------------------------------------------------------------------ bounded leads


@pytest.mark.parametrize("extra", [["--steps", "100000"], ["--hours", "30"], ["--hours", "inf"]])
def test_too_long_a_forecast_is_refused_before_anything_runs(plain, tmp_path, extra):
    previous = forecast_file(tmp_path / "f.nc")
    before = previous.read_bytes()
    res = forecast(plain, *extra, "--out", str(previous), "--log-json")
    assert res.exit_code == 2, res.output
    line = one_error_line(res)
    assert "max_hours = 24 h" in line and str(plain["run"] / "recipe.toml") in line
    assert "read" not in {e["stage"] for e in events(res)}  # refused before the inputs
    assert previous.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.nc"]  # no .lock, no .tmp


def test_max_hours_is_raised_in_the_runs_recipe(plain, tmp_path):
    run = run_with(plain["run"], tmp_path / "run", max_hours=26)
    out = tmp_path / "out"
    out.mkdir()
    res = forecast(plain, "--hours", "25", "--out", f"{out}/", "--quiet", run=run)
    assert res.exit_code == 0, res.output
    (written,) = out.iterdir()
    assert written.name.endswith("_P1DT1H.nc")
    with xr.open_dataset(written) as ds:
        assert ds.sizes["time"] == 150


def test_the_models_own_horizon_is_always_allowed(plain):
    run = load_run(plain["run"], device="cpu")
    horizon = run.contract.output_frames  # 3 leads of 10 min
    assert lead_steps(run, max_hours=0.01) == horizon
    assert lead_steps(run, steps=horizon, max_hours=0.01) == horizon
    with pytest.raises(ConfigError, match=re.escape("max_hours = 0.01 h")):
        lead_steps(run, steps=horizon + 1, max_hours=0.01)
    assert lead_steps(run, hours=24) == 144
    with pytest.raises(ConfigError, match=re.escape("24.5 hours is more than")):
        lead_steps(run, hours=24.5)


# ------------------------------------------------------------------------------ stale input


def test_stale_input_warns_and_is_logged(plain, tmp_path):
    res = forecast(plain, "--steps", "2", "--out", str(tmp_path / "f.nc"), "--log-json")
    assert res.exit_code == 0, res.output
    (line,) = res.stderr.strip().splitlines()  # the warning: --log-json has no summary line
    assert line.startswith(f"warning: the newest input frame ({NEWEST}) is ")
    assert "older than now (" in line and "at least one time step (PT10M)" in line
    read, written = events(res)[-2:]
    assert read["stage"] == "read" and written["stage"] == "written"
    for event in (read, written):
        assert event["stale"] is True and event["input_age_seconds"] > 86400 * 365
    assert written["warnings"] == [line.removeprefix("warning: ")]
    res = forecast(plain, "--steps", "2", "--out", str(tmp_path / "f.nc"), "--quiet")
    assert res.exit_code == 0 and res.stderr == "" and res.stdout == ""


def test_a_fresh_input_relative_to_the_reference_time_does_not_warn(plain, tmp_path):
    res = forecast(plain, "--steps", "2", "--out", str(tmp_path / "f.nc"), "--log-json",
                   "--reference-time", "2024-01-01T11:55Z")  # fmt: skip
    assert res.exit_code == 0, res.output
    assert res.stderr == ""
    read = next(e for e in events(res) if e["stage"] == "read")
    assert read["stale"] is False and read["input_age_seconds"] == 300.0
    assert read["reference_time"] == NEWEST


def test_no_frame_at_the_reference_time_forecasts_from_the_newest_and_warns(plain, tmp_path):
    res = forecast(plain, "--steps", "2", "--out", f"{tmp_path}/",
                   "--reference-time", "2024-01-01T12:00Z")  # fmt: skip
    assert res.exit_code == 0, res.output
    warning, summary = res.stderr.strip().splitlines()
    assert warning == (
        f"warning: the newest input frame ({NEWEST}) is PT10M older than the reference time "
        "2024-01-01T12:00:00Z, at least one time step (PT10M): later frames are late or missing"
    )
    assert summary.startswith(f"2 leads from {NEWEST}")
    assert [p.name for p in tmp_path.iterdir()] == ["rainrate_convlstm_20240101T1150Z_PT20M.nc"]


def test_a_past_reference_time_is_a_hindcast(plain, tmp_path):
    """Frames after the reference time are not used: the forecast is the one made at 06:00."""
    res = forecast(plain, "--steps", "2", "--out", f"{tmp_path}/",
                   "--reference-time", "2024-01-01T06:05:00+00:00")  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "warning" not in res.stderr  # 5 min old: within one time step
    assert [p.name for p in tmp_path.iterdir()] == ["rainrate_convlstm_20240101T0600Z_PT20M.nc"]


@pytest.mark.parametrize(
    ("extra", "code", "words"),
    [
        (["--max-age", "PT30M"], 3, ["older than now (", "more than max_input_age PT30M"]),
        (["--max-age", "1800", "--reference-time", "2024-01-01T12:30Z"], 3,
         ["is PT40M older than the reference time 2024-01-01T12:30:00Z",
          "more than max_input_age PT30M"]),
        (["--reference-time", "2023-12-31T23:00Z"], 3,
         ["no input frame at or before the reference time 2023-12-31T23:00:00Z"]),
        (["--max-age", "half an hour"], 2, ["max_input_age: 'half an hour' is not an ISO 8601"]),
        (["--max-age", "0"], 2, ["max_input_age"]),
        (["--reference-time", "noon"], 2, ["'noon' is not an ISO 8601 time"]),
    ],
)  # fmt: skip
def test_too_old_an_input_fails_and_writes_nothing(plain, tmp_path, extra, code, words):
    previous = forecast_file(tmp_path / "f.nc")
    before = previous.read_bytes()
    res = forecast(plain, "--steps", "2", "--out", str(previous), *extra)
    assert res.exit_code == code, res.output
    line = one_error_line(res)
    assert all(w in line for w in words), line
    if code == 3 and "--max-age" in extra:
        assert f"the newest input frame ({NEWEST})" in line
    assert previous.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.nc"]


def test_max_input_age_from_the_recipe_and_the_flag_replacing_it(plain, tmp_path):
    run = run_with(plain["run"], tmp_path / "run", max_input_age="PT1H")
    out = tmp_path / "out"
    out.mkdir()
    at = ["--steps", "2", "--out", f"{out}/"]
    res = forecast(plain, *at, "--reference-time", "2024-01-01T12:51Z", run=run)
    assert res.exit_code == 3 and "more than max_input_age PT1H:" in one_error_line(res)
    res = forecast(plain, *at, "--reference-time", "2024-01-01T12:50Z", run=run)
    assert res.exit_code == 0, res.output  # one hour exactly: allowed (with the warning)
    res = forecast(plain, *at, "--reference-time", "2024-01-01T12:51Z", "--max-age", "PT2H",
                   run=run)  # fmt: skip
    assert res.exit_code == 0, res.output
    assert [p.name for p in out.iterdir()] == ["rainrate_convlstm_20240101T1150Z_PT20M.nc"]


def test_input_age_and_times():
    newest = np.datetime64("2024-01-01T11:50:00")
    at = as_time("2024-01-01T13:50+02:00")
    assert at == np.datetime64("2024-01-01T11:50:00")
    assert input_age(newest, 600, reference=at) == (0.0, None)
    age, warning = input_age(newest, 600, reference=at + np.timedelta64(10, "m"))
    assert age == 600.0 and "at least one time step" in warning
    with pytest.raises(InputError, match="more than max_input_age PT5M"):
        input_age(newest, 600, reference=at + np.timedelta64(6, "m"), max_age=300)
    assert ForecastConfig(max_input_age="P1DT1H").max_input_age == 90000.0
    assert ForecastConfig(max_input_age=90).max_input_age == 90.0


# ------------------------------------------------------------------------------ CRS messages


def _undefined(proj: str) -> str:
    """A CRS as GDAL writes custom projections: WKT1 named "undefined"."""
    wkt = pyproj.CRS(proj).to_wkt("WKT1_GDAL")
    return re.sub(r'^PROJCS\["[^"]*"', 'PROJCS["undefined"', wkt)


AEQD = "+proj=aeqd +lat_0={} +lon_0=151 +x_0=0 +y_0=0 +datum=WGS84 +units=m +no_defs"


def _with_crs(wkt: str | None):
    def edit(ds: xr.Dataset) -> xr.Dataset:
        if wkt is None:
            ds = ds.drop_vars("crs")
            ds["rainrate"].attrs.pop("grid_mapping", None)
        else:
            ds["crs"].attrs = {"crs_wkt": wkt}
        return ds

    return edit


@pytest.fixture(scope="module")
def undefined_crs(tmp_path_factory):
    """A run trained on frames whose CRS is an "undefined" azimuthal equidistant projection."""
    return make_run(tmp_path_factory.mktemp("aeqd"), edit=_with_crs(_undefined(AEQD.format(-34))))


def test_two_undefined_crs_are_told_apart():
    a, b = (pyproj.CRS.from_wkt(_undefined(AEQD.format(lat))) for lat in (-35, -34))
    assert a.name == b.name == "undefined" and not a.equals(b)
    assert crs_difference(a, b) == (
        "CRS differs in Latitude of natural origin: input -35 degree, model -34 degree"
    )
    c = pyproj.CRS.from_wkt(_undefined("+proj=stere +lat_0=90 +lat_ts=60 +lon_0=10 +datum=WGS84"))
    assert "projection: input 'Azimuthal Equidistant', model 'Polar Stereographic" in (
        crs_difference(a, c)
    )
    assert crs_difference(pyproj.CRS("EPSG:3035"), pyproj.CRS("EPSG:4326")) == (
        "CRS differs: input EPSG:3035, model EPSG:4326"
    )


@pytest.mark.parametrize(
    ("wkt", "message"),
    [
        (_undefined(AEQD.format(-35)),
         "error: CRS differs in Latitude of natural origin: input -35 degree, model -34 degree"),
        (pyproj.CRS("EPSG:3035").to_wkt(),
         "error: CRS differs: input EPSG:3035, model 'undefined' (no EPSG code)"),
        (None, "error: the input has no CRS but the model's grid has one"),
    ],
)  # fmt: skip
def test_crs_mismatch_says_what_differs(undefined_crs, tmp_path, wkt, message):
    ds = _with_crs(wkt)(xr.load_dataset(undefined_crs["archive"]).isel(time=slice(-6, None)))
    source = tmp_path / "in.nc"
    ds.to_netcdf(source)
    previous = forecast_file(tmp_path / "f.nc")
    before = previous.read_bytes()
    res = cli("forecast", str(source), "--steps", "2", "--model", str(undefined_crs["run"]),
              "--out", str(previous))  # fmt: skip
    assert res.exit_code == 4, res.output
    assert one_error_line(res) == message
    assert previous.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.nc", "in.nc"]
