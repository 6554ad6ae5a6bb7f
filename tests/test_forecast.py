"""`stforecast.forecast` and `stforecast forecast`: values, layout, tiling, and each failure class
of the operational contract (exit code, one line, nothing written)."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import stat
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import xarray as xr
from forecast_files import forecast_file
from typer.testing import CliRunner

import stforecast
from stforecast import models
from stforecast.cli.app import app
from stforecast.data.synthetic import rain_cells
from stforecast.errors import InputError, ModelMismatchError
from stforecast.forecasting.plan import plan
from stforecast.forecasting.tiling import predict, tile_starts, tile_weights
from stforecast.io import open_frames
from stforecast.rundir.load import load_run

from runs import make_run


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("plain"))


@pytest.fixture(scope="module")
def cropped(tmp_path_factory):
    """Trained on 16 x 16 crops of the 32 x 32 grid: forecasts are tiled."""
    return make_run(tmp_path_factory.mktemp("cropped"), crop=16)


def cli(*args: str, env: dict | None = None):
    result = CliRunner().invoke(app, list(args), env=env)
    return result


def frames_of(path: Path) -> xr.DataArray:
    return open_frames([str(path)], variable="rainrate")


# ------------------------------------------------------------------------------ values


def test_forecast_equals_the_model_on_transformed_inputs(plain):
    run = load_run(plain["run"], device="cpu")
    da = frames_of(plain["archive"])
    ds = stforecast.forecast(da, run, steps=5)  # past the 3-frame training horizon
    # independent path: log1p by hand, the network's forward, expm1 by hand (the transform
    # clips at 0 both ways: rain is never negative)
    x = np.asarray(da.values[-4:], np.float32)
    filled = np.where(np.isfinite(x), np.log1p(np.clip(np.nan_to_num(x), 0, None)), 0.0)
    with torch.no_grad():
        y = run.net(torch.from_numpy(filled[None, :, None].astype(np.float32)), 5)[0, :, 0]
    expected = np.expm1(np.clip(y.numpy(), 0, None))
    expected[:, ~np.isfinite(x[-1])] = np.nan
    got = ds["rainrate"].values
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert np.isnan(got).any() and np.isfinite(got).any()  # the radar's range is kept


def test_forecast_layout(plain):
    da = frames_of(plain["archive"])
    ds = stforecast.forecast(da, str(plain["run"]), hours=1, device="cpu")
    ref = da["time"].values[-1]
    assert ds.sizes == {"time": 6, "y": 32, "x": 32}
    assert ds["forecast_reference_time"].values == ref
    np.testing.assert_array_equal(
        ds["time"].values, ref + np.arange(1, 7) * np.timedelta64(10, "m")
    )
    assert (ds["forecast_period"].values / np.timedelta64(1, "m")).tolist() == [
        10,
        20,
        30,
        40,
        50,
        60,
    ]
    np.testing.assert_array_equal(ds["x"].values, da["x"].values)
    np.testing.assert_array_equal(ds["y"].values, da["y"].values)
    var = ds["rainrate"]
    assert var.attrs["units"] == "mm h-1" and var.attrs["grid_mapping"] == "crs"
    assert "crs_wkt" in ds["crs"].attrs and ds.attrs["Conventions"].startswith("CF-1.10")
    prov = json.loads(ds.attrs["provenance"])
    card = json.loads((plain["run"] / "model.json").read_text())
    assert prov["model"]["weights_sha256"] == card["weights"]["best_sha256"]  # the selected
    assert prov["model"]["weights"].startswith("best validation (step ")
    assert [len(i["valid_times"]) for i in prov["inputs"]] == [4]
    assert len(prov["inputs"][0]["sha256"]) == 64 and prov["recipe_sha256"]


def test_hours_must_be_whole_steps(plain):
    da = frames_of(plain["archive"])
    with pytest.raises(ValueError, match="whole number"):
        stforecast.forecast(da, str(plain["run"]), hours=0.25, device="cpu")


def test_missing_frames_within_tolerance_are_interpolated(plain):
    from stforecast.config import ForecastConfig

    da = frames_of(plain["archive"])
    gap = da.isel(time=[i for i in range(da.sizes["time"]) if i != da.sizes["time"] - 3])
    with pytest.raises(InputError, match="no frame at"):
        stforecast.forecast(gap, str(plain["run"]), steps=2, device="cpu")
    p = plan(gap, str(plain["run"]), steps=2, device="cpu",
             options=ForecastConfig(allow_missing_frames=1))  # fmt: skip
    assert p.info["filled_frames"] == 1
    assert all(np.isfinite(lead["rainrate"]).any() for lead in p.leads)


# ------------------------------------------------------------------------------ tiles


def test_tile_layout_covers_the_grid_with_positive_weights():
    for size, tile in ((32, 16), (100, 16), (17, 16), (16, 16)):
        starts = tile_starts(size, tile, 0.5)
        assert starts[0] == 0 and starts[-1] == size - tile
        assert all(b - a <= tile // 2 for a, b in itertools.pairwise(starts))
    rows, cols = tile_starts(40, 16, 0.5), tile_starts(24, 16, 0.5)
    total = np.zeros((40, 24))
    for r, c, w in tile_weights((40, 24), (16, 16), rows, cols):
        assert w.min() > 0
        total[r : r + 16, c : c + 16] += w
    assert total.min() > 0.05


def test_tiled_forecast_of_a_cropped_model(cropped):
    run = load_run(cropped["run"], device="cpu")
    assert tuple(run.net.frame_size) == (16, 16)
    p = plan(frames_of(cropped["archive"]), run, steps=3)
    assert p.info["tiles"] == [16, 16]
    leads = list(p.leads)
    assert leads[0]["rainrate"].shape == (32, 32)


def test_tiles_have_no_seams_on_a_size_free_model():
    """Blending overlapping tiles of a size-free model reproduces the untiled field, up to what
    the zero padding at tile edges reaches through the recurrent receptive field; no seams."""
    torch.manual_seed(0)
    net = models.build(
        "convlstm", in_channels=1, frame_size=(16, 16), patch_size=2, hidden_channels=[8],
        kernel_size=3, norm="channel",
    ).eval()  # fmt: skip
    assert net.size_free
    yy, xx = np.mgrid[0:96, 0:96] / 48.0
    x = np.stack([np.sin(3 * xx + t / 4) * np.cos(2 * yy) for t in range(2)])[:, None]
    x = x.astype(np.float32)
    whole = np.stack(list(predict(net, x, 2)))
    tiled = np.stack(list(predict(net, x, 2, tile=(32, 32), overlap=0.5)))
    scale = np.abs(whole).max()
    diff = np.abs(whole - tiled)
    assert diff.max() < 0.02 * scale and diff.mean() < 1e-3 * scale
    # no seams: the tiled field's gradient across tile borders matches the untiled one
    for axis in (-1, -2):
        jump = np.abs(np.diff(tiled, axis=axis) - np.diff(whole, axis=axis))
        assert jump.max() < 0.02 * scale


def test_size_free_model_on_a_large_grid_runs_in_bounded_tiles(monkeypatch):
    """Past `WHOLE_PIXELS` a size-free model is tiled, one tile's pixels per call at most, so
    the rollout's memory is bounded by the tile, not the domain; below it runs whole."""
    from stforecast.forecasting import tiling

    net = models.build(
        "convlstm", in_channels=1, frame_size=(16, 16), patch_size=2, hidden_channels=[4],
        kernel_size=3, norm="channel", window=4,
    ).eval()  # fmt: skip
    assert tiling.tile_for(net, (1024, 1024)) is None  # the whole grid: cost without overlap
    assert tiling.tile_for(net, (2048, 1500)) == (1024, 1024)
    monkeypatch.setattr(tiling, "WHOLE_SIDE", 24)
    monkeypatch.setattr(tiling, "WHOLE_PIXELS", 24 * 24)
    assert tiling.tile_for(net, (20, 24)) is None
    assert tiling.tile_for(net, (40, 30)) == (24, 24)  # 24 is a multiple of patch x window
    calls, alive, most = [], [0], [0]
    real = tiling._torch_stream

    def spy(net_, device):
        inner = real(net_, device)

        def stream(frames, steps, guide=None):
            calls.append(frames.shape)
            alive[0] += 1
            most[0] = max(most[0], alive[0])
            yield from inner(frames, steps, guide)
            alive[0] -= 1

        return stream

    x = np.random.default_rng(0).random((3, 1, 40, 30)).astype(np.float32)
    tile = tiling.tile_for(net, (40, 30))
    monkeypatch.setattr(tiling, "WHOLE_PIXELS", 10**6)
    together = np.stack(list(predict(net, x, 2, tile=tile, batch=16)))  # one call, 6 tiles
    monkeypatch.setattr(tiling, "WHOLE_PIXELS", 24 * 24)
    monkeypatch.setattr(tiling, "_torch_stream", spy)
    leads = list(predict(net, x, 2, tile=tile, batch=16))
    assert [lead.shape for lead in leads] == [(1, 40, 30)] * 2
    assert len(calls) == 6 and all(c[0] * c[-2] * c[-1] <= 24 * 24 for c in calls)  # 1 tile
    assert most[0] == 1  # each call runs through the leads before the next: one state alive
    np.testing.assert_allclose(np.stack(leads), together, atol=1e-5)  # the same forecast


# ------------------------------------------------------------------------------ the command


def test_cli_netcdf_is_idempotent(plain, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    args = ["forecast", str(plain["archive"]), "--hours", "1", "--model", str(plain["run"])]
    first = cli(*args, "--out", f"{out}/", "--quiet")
    assert first.exit_code == 0, first.output
    files = sorted(out.iterdir())
    assert [f.name for f in files] == ["rainrate_convlstm_20240101T1150Z_PT1H.nc"]
    a = xr.load_dataset(files[0])
    second = cli(*args, "--out", f"{out}/", "--log-json")
    assert second.exit_code == 0
    events = [json.loads(line) for line in second.stdout.splitlines()]
    assert events[-1]["stage"] == "written" and events[-1]["output_file"] == str(files[0])
    assert {"read", "load model"} <= {e["stage"] for e in events}
    b = xr.load_dataset(files[0])
    np.testing.assert_array_equal(a["rainrate"].values, b["rainrate"].values)
    period = a["forecast_period"]
    assert period.attrs["units"] == "s" and period.values.tolist() == list(range(600, 3601, 600))
    assert sorted(p.name for p in out.iterdir()) == [files[0].name]  # no temp or lock leftovers


def test_cli_geotiff_and_model_from_environment(plain, tmp_path):
    out = tmp_path / "f.tif"
    env = {"STFORECAST_MODEL": str(plain["run"])}
    res = cli("forecast", str(plain["archive"]), "--steps", "4", "--format", "geotiff",
              "--out", str(out), env=env)  # fmt: skip
    assert res.exit_code == 0, res.output
    assert res.stdout.strip() == str(out)
    with rasterio.open(out) as src:
        assert src.count == 4
        assert src.descriptions[0] == "+PT10M"
        assert src.tags(1)["forecast_reference_time"].startswith("2024-01-01T11:50")


def _write(ds: xr.Dataset, path: Path) -> Path:
    ds.to_netcdf(path)
    return path


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory, plain):
    """One input per failure class, each otherwise like the training archive."""
    root = tmp_path_factory.mktemp("bad")
    good = xr.load_dataset(plain["archive"])
    last = good.isel(time=slice(-8, None))
    corrupt = root / "corrupt.nc"
    corrupt.write_bytes(b"CDF\x01" + os.urandom(300))
    wrong_units = last.copy()
    wrong_units["rainrate"].attrs["units"] = "K"
    fifteen = rain_cells(frames=12, size=32, step_minutes=15, seed=3, coverage_radius_km=14.0)
    coarse = rain_cells(frames=8, size=16, spacing_m=2000.0, seed=3)
    shifted_crs = last.copy()
    shifted_crs["crs"].attrs = {"grid_mapping_name": "latitude_longitude"}
    shifted_crs["crs"].attrs["crs_wkt"] = __import__("pyproj").CRS("EPSG:4326").to_wkt()
    return {
        "missing": (root / "nope.nc", 3),
        "corrupt": (corrupt, 3),
        "too few frames": (_write(last.isel(time=slice(-2, None)), root / "few.nc"), 3),
        "gap": (_write(last.isel(time=[0, 1, 2, 3, 5, 6, 7]), root / "gap.nc"), 3),
        "all missing": (_write(last.where(last.time != last.time[-1]), root / "nan.nc"), 3),
        "wrong grid": (_write(coarse, root / "coarse.nc"), 4),
        "wrong crs": (_write(shifted_crs, root / "crs.nc"), 4),
        "wrong time step": (_write(fifteen, root / "15min.nc"), 4),  # 5 min would be resampled
        "wrong units": (_write(wrong_units, root / "units.nc"), 4),
        "wrong variable": (_write(last.rename(rainrate="snow"), root / "var.nc"), 4),
    }


def test_a_finer_step_that_divides_the_models_is_subsampled(plain, tmp_path):
    """5-minute rain rates for a 10-minute model: every second frame, ending at the newest."""
    five = rain_cells(frames=12, size=32, step_minutes=5, seed=3, coverage_radius_km=14.0)
    path = tmp_path / "5min.nc"
    five.to_netcdf(path)
    run = load_run(plain["run"], device="cpu")
    p = plan(open_frames([str(path)]), run, steps=1, checksums=False)
    newest = five["time"].values[-1]
    assert p.info["reference_time"] == str(np.datetime_as_string(newest, unit="s")) + "Z"
    assert len(p.inputs) == 1 and next(p.leads)["rainrate"].shape == (32, 32)


@pytest.mark.parametrize(
    "case",
    [
        "missing",
        "corrupt",
        "too few frames",
        "gap",
        "all missing",
        "wrong grid",
        "wrong crs",
        "wrong time step",
        "wrong units",
        "wrong variable",
    ],
)
def test_cli_failure_classes_write_nothing(case, bad_inputs, plain, tmp_path):
    source, code = bad_inputs[case]
    previous = forecast_file(tmp_path / "f.nc")
    before = previous.read_bytes()
    res = cli("forecast", str(source), "--steps", "2", "--model", str(plain["run"]),
              "--out", str(previous))  # fmt: skip
    assert res.exit_code == code, (case, res.output)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "Traceback" not in res.output
    assert previous.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.nc"]


def test_cli_usage_errors(plain, tmp_path):
    # (without --model: the shipped radar nowcaster, tests/test_pretrained.py)
    res = cli("forecast", str(plain["archive"]), "--hours", "1", "--steps", "2",
              "--model", str(plain["run"]), "--out", str(tmp_path))  # fmt: skip
    assert res.exit_code == 2
    res = cli("forecast", str(plain["archive"]), "--model", str(tmp_path / "nothing"))
    assert res.exit_code == 3
    res = cli("forecast", str(plain["archive"]), "--model", str(plain["run"]),
              "--format", "grib", "--out", str(tmp_path))  # fmt: skip
    assert res.exit_code == 2
    assert list(tmp_path.iterdir()) == []


def test_debug_shows_the_traceback(plain, tmp_path):
    res = cli("forecast", str(tmp_path / "x.nc"), "--model", str(plain["run"]), "--debug")
    assert res.exit_code == 3 and "Traceback" in res.stderr


# ------------------------------------------------------------------------------ what --out replaces


@pytest.fixture
def devices_are_safe(monkeypatch):
    """Whatever the code under test does, no rename lands on a device node of the machine."""
    real_replace = os.replace

    def replace(src, dst, **kwargs):
        assert not os.path.realpath(dst).startswith("/dev/"), f"would replace {dst}"
        return real_replace(src, dst, **kwargs)

    monkeypatch.setattr(os, "replace", replace)


def _state(path: Path) -> tuple:
    """Type, inode, mtime, link target and (for a regular file) content, without opening
    anything else (a FIFO would block)."""
    st = os.lstat(path)
    link = os.readlink(path) if stat.S_ISLNK(st.st_mode) else None
    content = path.read_bytes() if stat.S_ISREG(st.st_mode) else None
    return stat.S_IFMT(st.st_mode), st.st_ino, st.st_mtime_ns, link, content


def _char_device(path: Path) -> Path:
    try:  # our own node for /dev/null's device: nothing of the machine's is at stake
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except (PermissionError, OSError):
        pytest.skip("making a device node needs root (CAP_MKNOD)")
    return path


def _unreplaceable(kind: str, root: Path, archive: Path) -> Path:
    """An output path with something at it that a forecast must not replace."""
    if kind == "text file":
        (root / "f.nc").write_text("notes, not a forecast\n")
        return root / "f.nc"
    if kind == "text file, no suffix":
        (root / "notes").write_text("notes, not a forecast\n")
        return root / "notes"
    if kind == "fifo":
        os.mkfifo(root / "fifo")
        return root / "fifo"
    if kind == "character device":
        return _char_device(root / "null")
    if kind == "link to a text file":
        (root / "notes.txt").write_text("notes\n")
        (root / "latest.nc").symlink_to("notes.txt")
        return root / "latest.nc"
    if kind == "link to /dev/null":
        (root / "null.nc").symlink_to("/dev/null")
        return root / "null.nc"
    if kind == "dangling link":
        (root / "gone.nc").symlink_to(root / "nothing.nc")
        return root / "gone.nc"
    if kind == "netcdf that is not a forecast":  # an input archive stforecast wrote itself
        shutil.copy2(archive, root / "archive.nc")
        return root / "archive.nc"
    if kind == "text file with the forecast's name":
        (root / "out").mkdir()
        (root / "out" / "rainrate_convlstm_20240101T1150Z_PT20M.nc").write_text("notes\n")
        return Path(f"{root / 'out'}/")
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind",
    [
        "text file",
        "text file, no suffix",
        "fifo",
        "character device",
        "link to a text file",
        "link to /dev/null",
        "dangling link",
        "netcdf that is not a forecast",
        "text file with the forecast's name",
    ],
)
def test_out_replaces_only_a_forecast(kind, plain, tmp_path, devices_are_safe):
    """Issue 13: `--out` over anything but a stforecast forecast exits 2, one line, and leaves
    it (type, content, mtime) and its directory as they were."""
    root = tmp_path / "root"
    root.mkdir()
    out = _unreplaceable(kind, root, plain["archive"])
    listing = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    before = {p: _state(root / p) for p in listing}
    res = cli("forecast", str(plain["archive"]), "--steps", "2", "--model", str(plain["run"]),
              "--out", str(out) + ("/" if kind.endswith("name") else ""))  # fmt: skip
    assert res.exit_code == 2, (kind, res.output)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "not replaced" in lines[0] and "Traceback" not in res.output
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*")) == listing  # nothing new
    assert {p: _state(root / p) for p in listing} == before
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_out_through_a_link_replaces_the_forecast_it_points_to(plain, tmp_path):
    target = forecast_file(tmp_path / "f_1200.nc")
    (tmp_path / "latest.nc").symlink_to("f_1200.nc")
    old_inode = target.stat().st_ino
    res = cli("forecast", str(plain["archive"]), "--steps", "2", "--model", str(plain["run"]),
              "--out", str(tmp_path / "latest.nc"))  # fmt: skip
    assert res.exit_code == 0, res.output
    assert res.stdout.strip() == str(target)  # the file written
    assert os.readlink(tmp_path / "latest.nc") == "f_1200.nc"  # the link is kept
    assert target.stat().st_ino != old_inode  # replaced by a rename
    with xr.open_dataset(tmp_path / "latest.nc") as ds:
        assert ds.sizes["time"] == 2 and ds.sizes["x"] == 32
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f_1200.nc", "latest.nc"]


def test_out_without_suffix_is_a_file_of_the_format(plain, tmp_path):
    args = ["forecast", str(plain["archive"]), "--steps", "2", "--model", str(plain["run"])]
    for fmt, magic in (("netcdf", b"\x89HDF"), ("geotiff", b"II*\x00")):
        out = tmp_path / f"latest_{fmt}"
        for _ in range(2):  # the second run replaces the first one's forecast
            res = cli(*args, "--format", fmt, "--out", str(out))
            assert res.exit_code == 0, res.output
            assert out.read_bytes()[:4] == magic
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest_geotiff", "latest_netcdf"]


def test_out_ending_in_a_slash_is_a_directory(plain, tmp_path):
    res = cli("forecast", str(plain["archive"]), "--steps", "2", "--model", str(plain["run"]),
              "--out", f"{tmp_path / 'later'}/")  # fmt: skip
    assert res.exit_code == 3 and "does not exist" in res.stderr
    assert list(tmp_path.iterdir()) == []


def test_lock_held_by_another_process_exits_5(plain, tmp_path):
    out = tmp_path / "f.nc"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\nfrom stforecast.io.lock import output_lock\n"
         f"with output_lock({str(out)!r}):\n    print('held', flush=True)\n    time.sleep(60)\n"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        res = cli("forecast", str(plain["archive"]), "--steps", "2", "--model",
                  str(plain["run"]), "--out", str(out))  # fmt: skip
        assert res.exit_code == 5, res.output
        assert "lock" in res.stderr and not out.exists()
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.1)  # the holder died: its lock is taken over
    res = cli("forecast", str(plain["archive"]), "--steps", "2", "--model", str(plain["run"]),
              "--out", str(out))  # fmt: skip
    assert res.exit_code == 0 and out.exists()


def test_moving_mnist_runs_cannot_forecast(plain):
    card = json.loads((plain["run"] / "model.json").read_text())
    card["input"] = {"input_frames": 10, "output_frames": 10}
    from stforecast.rundir.load import check_contract

    with pytest.raises(ModelMismatchError, match="Moving MNIST"):
        check_contract(card, "run")


def test_an_abandoned_forecast_leaves_autograd_on(plain):
    """A cancelled job drops its lead generator half-way; the thread must still train."""
    run = load_run(plain["run"], device="cpu")
    x = np.zeros((4, 1, 32, 32), np.float32)
    leads = predict(run.net, x, 5)
    next(leads)
    assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
    del leads


def test_a_grid_without_coordinates_is_not_georeferenced(plain, tmp_path):
    """KNMI's layout: a CRS in the file but no x/y. The forecast keeps x/y as pixel indices and
    must not claim positions in that CRS (a GIS would put the grid at the CRS's origin)."""
    from stforecast.config import ForecastConfig
    from stforecast.forecasting.template import forecast_template
    from stforecast.io.write import write_forecast

    ds = xr.load_dataset(plain["archive"]).isel(time=slice(-6, None)).drop_vars(["x", "y", "crs"])
    del ds["rainrate"].attrs["grid_mapping"]
    ds.attrs["projection"] = "+proj=stere +lat_0=90 +lon_0=0 +lat_ts=60 +a=6378137 +b=6356752"
    ds.to_netcdf(tmp_path / "knmi_like.nc")
    da = open_frames([str(tmp_path / "knmi_like.nc")], variable="rainrate")
    assert "Stereographic" in da.attrs["crs_wkt"]  # the reader still knows the file's CRS
    run = load_run(plain["run"], device="cpu")
    template = forecast_template(run, da, 2, ["rainrate"], "mm h-1", [], ForecastConfig())
    assert "crs" not in template and "grid_mapping" not in template["rainrate"].attrs
    assert template.attrs["source_crs_wkt"] == da.attrs["crs_wkt"]
    assert template["x"].attrs["units"] == "1" and "pixels" in template["x"].attrs["long_name"]
    leads = iter([{"rainrate": np.ones((32, 32), np.float32)}] * 2)
    write_forecast(tmp_path / "f.nc", template, leads, "netcdf")
    with xr.open_dataset(tmp_path / "f.nc") as out:
        assert "crs" not in out.variables and "grid_mapping" not in out["rainrate"].attrs
        assert "not georeferenced" in out.attrs["comment"]
    leads = iter([{"rainrate": np.ones((32, 32), np.float32)}] * 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no NotGeoreferencedWarning on the user's terminal
        write_forecast(tmp_path / "f.tif", template, leads, "geotiff")
    with rasterio.open(tmp_path / "f.tif") as src:
        assert src.crs is None and src.count == 2


def _free_text_accumulation(ds: xr.Dataset) -> xr.Dataset:
    """The archive as KNMI writes it: mm per 10 min, units in words."""
    ds = ds.copy()
    ds["rainrate"] = ds["rainrate"] / 6.0
    ds["rainrate"].attrs = {**ds["rainrate"].attrs, "units": "mm accumulated over 10 min"}
    return ds


@pytest.fixture(scope="module")
def declared(tmp_path_factory):
    """Trained on an archive whose units are free text, declared by `source_units`."""
    return make_run(tmp_path_factory.mktemp("declared"), edit=_free_text_accumulation,
                    data={"source_units": "mm", "units": "mm/h"})  # fmt: skip


def test_declared_source_units_convert_in_prepare_and_forecast(declared, plain, tmp_path):
    manifest = json.loads((declared["store"] / "manifest.json").read_text())
    contract = manifest["contract"]
    assert contract["units"] == "mm h-1" and contract["processing"]["source_units"] == "mm"
    stored = xr.open_zarr(declared["store"])["frames"]
    raw = xr.load_dataset(declared["archive"])["rainrate"].values
    got = np.expm1(stored.isel(time=5).values.squeeze())  # log1p of mm/h in the store
    wet = np.isfinite(raw[5]) & (raw[5] > 0)
    assert wet.any()
    np.testing.assert_allclose(got[wet], raw[5][wet] * 6.0, rtol=1e-5)  # mm per 10 min -> mm/h
    out = tmp_path / "f.nc"
    res = cli("forecast", str(declared["archive"]), "--steps", "2", "--model",
              str(declared["run"]), "--out", str(out))  # fmt: skip
    assert res.exit_code == 0, res.output
    with xr.open_dataset(out) as ds:
        assert ds["rainrate"].attrs["units"] == "mm h-1"
    # the same words without the declaration cannot be converted: a model without it refuses
    res = cli("forecast", str(declared["archive"]), "--steps", "2", "--model", str(plain["run"]),
              "--out", str(tmp_path / "g.nc"))  # fmt: skip
    assert res.exit_code == 4 and "cannot be converted" in res.stderr


def test_source_units_must_be_convertible():
    from stforecast.config import data_config
    from stforecast.errors import ConfigError

    with pytest.raises((ConfigError, ValueError), match="source_units"):
        data_config(sources=["x.nc"], source_units="mm accumulated over 10 min")


def _with_temperature(ds: xr.Dataset) -> xr.Dataset:
    ds = ds.copy()
    ds["temp"] = 280.0 + ds["rainrate"].fillna(0.0)
    ds["temp"].attrs = {"units": "K", "long_name": "air temperature", "grid_mapping": "crs"}
    return ds


@pytest.fixture(scope="module")
def two_channels(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("channels"), edit=_with_temperature,
                    data={"variable": ["rainrate", "temp"]})  # fmt: skip


def test_channels_keep_their_own_units(two_channels, tmp_path):
    card = json.loads((two_channels["run"] / "model.json").read_text())
    assert card["input"]["channel_units"] == ["mm h-1", "K"]
    out = tmp_path / "f.nc"
    res = cli("forecast", str(two_channels["archive"]), "--steps", "2", "--model",
              str(two_channels["run"]), "--out", str(out))  # fmt: skip
    assert res.exit_code == 0, res.output
    with xr.open_dataset(out) as ds:
        assert ds["rainrate"].attrs["units"] == "mm h-1" and ds["temp"].attrs["units"] == "K"
        assert ds["temp"].attrs["long_name"] == "air temperature"
    celsius = xr.load_dataset(two_channels["archive"])
    celsius["temp"] = celsius["temp"] - 273.15
    celsius["temp"].attrs["units"] = "degC"
    celsius.to_netcdf(tmp_path / "celsius.nc")
    res = cli("forecast", str(tmp_path / "celsius.nc"), "--steps", "2", "--model",
              str(two_channels["run"]), "--out", str(tmp_path / "g.nc"))  # fmt: skip
    assert res.exit_code == 4 and "'temp' are 'degC', the model's 'K'" in res.stderr
    assert not (tmp_path / "g.nc").exists()
