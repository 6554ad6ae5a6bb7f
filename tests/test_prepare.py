"""`prepare` end to end: store contents against the input, transform fitted on train only,
windows, coverage, manifest, atomicity, error classes, the CLI and the training Dataset."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pyproj
import pytest
import torch
import xarray as xr

from stforecast.config import data_config
from stforecast.data.dataset import WindowDataset
from stforecast.data.prepare import prepare
from stforecast.data.store import open_store, read_manifest
from stforecast.errors import ConfigError, InputError

from conftest import shared

CRS = pyproj.CRS.from_epsg(32633)


def archive(path, n=30, ny=8, nx=10, step_min=10, holes=True, drop=(), seed=0):
    """A small CF NetCDF of rain rates (mm/h) with a time dimension and a grid mapping."""
    rng = np.random.default_rng(seed)
    times = pd.date_range("2021-06-01", periods=n, freq=f"{step_min}min")
    keep = [i for i in range(n) if i not in drop]
    values = rng.gamma(0.5, 2.0, size=(n, ny, nx)).astype("f4")
    if holes:
        values[:, 0, :3] = np.nan  # a corner without coverage
    ds = xr.Dataset(
        {"rain": (("time", "y", "x"), values[keep], {"units": "mm/h", "grid_mapping": "crs"})},
        coords={
            "time": times[keep],
            "y": ("y", 5000.0 - 1000.0 * np.arange(ny), {"units": "m"}),
            "x": ("x", 300000.0 + 1000.0 * np.arange(nx), {"units": "m"}),
        },
    )
    ds["crs"] = xr.DataArray(0, attrs={"crs_wkt": CRS.to_wkt(), **CRS.to_cf()})
    ds.to_netcdf(path)
    return values, times


def cfg(path, **fields):
    base = dict(sources=[str(path)], input_frames=3, output_frames=2, chunk_frames=4)
    return data_config(None, **{**base, **fields})


def test_store_holds_the_transformed_frames(tmp_path):
    values, times = archive(tmp_path / "a.nc")
    manifest = prepare(cfg(tmp_path / "a.nc", transform="zscore"), tmp_path / "store")
    ds, m = open_store(tmp_path / "store")
    assert m == manifest
    train = values[:21]  # 70 % of 30 frames
    mean, std = np.nanmean(train.astype("f8")), np.nanstd(train.astype("f8"))
    p = manifest["contract"]["transform"]["params"]
    assert p["mean"] == pytest.approx(mean, rel=1e-9) and p["std"] == pytest.approx(std, rel=1e-6)
    frames = ds["frames"].values[:, 0]
    valid = np.isfinite(values)
    np.testing.assert_allclose(frames[valid], ((values - mean) / std)[valid], rtol=1e-5, atol=1e-6)
    fill = manifest["contract"]["missing"]["fill_value_normalised"]
    assert fill == pytest.approx((0.0 - mean) / std)
    assert np.allclose(frames[~valid], fill)
    assert np.array_equal(ds["coverage"].values, valid)
    assert manifest["missing"]["frames_with_missing"] == 30
    assert ds["split"].values.tolist() == [0] * 21 + [1] * 4 + [2] * 5
    assert np.array_equal(ds["time"].values, times.values)


def test_manifest_contract(tmp_path):
    archive(tmp_path / "a.nc", drop=(12,))
    m = prepare(cfg(tmp_path / "a.nc", transform="log1p"), tmp_path / "store")
    assert m["sources"][0]["path"].endswith("a.nc") and len(m["sources"][0]["sha256"]) == 64
    c = m["contract"]  # the data contract (stforecast.data.contract), one section
    assert c["variable"] == "rain" and c["units"] == "mm/h"
    assert c["transform"] == {"name": "log1p", "options": c["transform"]["options"], "params": {}}
    assert pyproj.CRS(c["grid"]["crs_wkt"]) == CRS and c["grid"]["shape"] == [8, 10]
    t = m["time"]
    assert (c["time_step_seconds"], c["time_step_iso"], t["frames"]) == (600, "PT10M", 29)
    assert t["gaps"] == [
        {"after": "2021-06-01T01:50:00Z", "before": "2021-06-01T02:10:00Z", "missing_frames": 1}
    ]
    assert len(t["segments"]) == 2
    w = m["windows"]
    assert (c["input_frames"], c["output_frames"]) == (3, 2)
    for starts in w["starts"].values():  # no window spans the gap (after frame index 11)
        assert all(not (s <= 11 < s + 4) for s in starts)
    assert sum(m["split"]["frames"].values()) == 29
    assert json.loads((tmp_path / "store" / "manifest.json").read_text()) == m


def test_time_range_split_and_stride(tmp_path):
    archive(tmp_path / "a.nc")
    split = {
        "train": ["2021-06-01T00:00", "2021-06-01T03:00"],
        "test": ["2021-06-01T03:30", "2021-06-01T05:00"],
    }
    m = prepare(cfg(tmp_path / "a.nc", split=split, stride=2), tmp_path / "s")
    assert m["split"]["frames"] == {"train": 18, "validation": 0, "test": 9}
    assert m["windows"]["starts"]["train"] == [0, 2, 4, 6, 8, 10, 12]
    assert m["windows"]["starts"]["test"] == [21, 23, 25]
    assert m["split"]["bounds"]["test"] == ["2021-06-01T03:30:00Z", "2021-06-01T05:00:00Z"]


def test_dataset_reads_windows_lazily_with_reproducible_augmentation(tmp_path):
    archive(tmp_path / "a.nc")
    prepare(cfg(tmp_path / "a.nc"), tmp_path / "s")
    ds, m = open_store(tmp_path / "s")
    data = WindowDataset(tmp_path / "s", "train")
    assert len(data) == m["windows"]["counts"]["train"]
    item = data[3]
    s = m["windows"]["starts"]["train"][3]
    frames = torch.from_numpy(ds["frames"].values)
    assert torch.equal(item["inputs"], frames[s : s + 3])
    assert torch.equal(item["targets"], frames[s + 3 : s + 5])
    assert item["coverage"].shape == (5, 1, 8, 10)
    aug = WindowDataset(tmp_path / "s", "train", crop=(4, 6), flip=True, seed=1)
    a, b = aug[2], aug[2]
    assert a["inputs"].shape == (3, 1, 4, 6) and torch.equal(a["inputs"], b["inputs"])
    aug.set_epoch(1)
    shapes = {tuple(aug[i]["targets"].shape) for i in range(len(aug))}
    assert shapes == {(2, 1, 4, 6)}
    with pytest.raises(ConfigError, match="larger than the grid"):
        WindowDataset(tmp_path / "s", "train", crop=20)
    with pytest.raises(ConfigError, match="unknown split"):
        WindowDataset(tmp_path / "s", "dev")


def test_failures_leave_nothing_behind(tmp_path):
    archive(tmp_path / "a.nc", n=6)
    with pytest.raises(InputError, match="fewer frames than one window"):
        prepare(cfg(tmp_path / "a.nc", input_frames=5, output_frames=5), tmp_path / "s")
    archive(tmp_path / "b.nc")
    ds = xr.open_dataset(tmp_path / "b.nc").load()
    ds["rain"][7] = np.nan
    ds.to_netcdf(tmp_path / "c.nc")
    with pytest.raises(InputError, match="2021-06-01T01:10:00Z has no valid value"):
        prepare(cfg(tmp_path / "c.nc"), tmp_path / "s")
    with pytest.raises(ConfigError, match="transform"):
        prepare(cfg(tmp_path / "b.nc", transform="sqrt"), tmp_path / "s")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.nc", "b.nc", "c.nc"]


def test_existing_store_is_kept_unless_overwrite(tmp_path):
    archive(tmp_path / "a.nc")
    prepare(cfg(tmp_path / "a.nc"), tmp_path / "s")
    before = read_manifest(tmp_path / "s")
    with pytest.raises(ConfigError, match="already exists"):
        prepare(cfg(tmp_path / "a.nc", transform="log1p"), tmp_path / "s")
    assert read_manifest(tmp_path / "s") == before
    after = prepare(cfg(tmp_path / "a.nc", transform="log1p"), tmp_path / "s", overwrite=True)
    assert after["contract"]["transform"]["name"] == "log1p"
    assert read_manifest(tmp_path / "s") == after
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.nc", "s"]


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "stforecast", "prepare", *args], capture_output=True, text=True
    )


def test_cli_sources_and_recipe(tmp_path):
    archive(tmp_path / "a.nc")
    out = run_cli(
        str(tmp_path / "a.nc"),
        "--out",
        str(tmp_path / "s"),
        "--input-frames",
        "3",
        "--output-frames",
        "2",
        "--transform",
        "log1p",
        "--quiet",
    )
    assert out.returncode == 0, out.stderr
    assert read_manifest(tmp_path / "s")["contract"]["transform"]["name"] == "log1p"
    recipe = tmp_path / "r.toml"
    recipe.write_text('[data]\nsources = ["a.nc"]\ninput_frames = 4\noutput_frames = 2\n')
    out = run_cli(str(recipe), "--set", "data.stride=3", "--out", str(tmp_path / "r"))
    assert out.returncode == 0, out.stderr
    m = read_manifest(tmp_path / "r")
    assert m["windows"]["stride"] == 3 and m["contract"]["input_frames"] == 4
    assert "windows 4+2" in out.stdout


def test_cli_warns_about_empty_splits(tmp_path):
    archive(tmp_path / "a.nc")
    recipe = tmp_path / "r.toml"
    recipe.write_text(
        '[data]\nsources = ["a.nc"]\ninput_frames = 3\noutput_frames = 2\n'
        "split.fractions = [0.9, 0.1, 0.0]\n"
    )
    out = run_cli(str(recipe), "--out", str(tmp_path / "s"), "--quiet")
    assert out.returncode == 0, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 2 and out.stdout == ""
    assert lines[0].startswith("warning: no validation windows (3 frames in that split, 5 per")
    assert lines[1].startswith("warning: no test windows (0 frames") and "evaluate" in lines[1]


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["missing/*.nc"], 3, "matches nothing"),
        (["{a}", "--transform", "cube"], 2, "cube"),
        (["{a}", "--input-frames", "40"], 3, "fewer frames than one window"),
        (["{a}", "--input-frames", "0"], 2, "input_frames"),
    ],
)
def test_cli_errors_exit_with_one_line(tmp_path, args, code, message):
    archive(tmp_path / "a.nc")
    args = [a.replace("{a}", str(tmp_path / "a.nc")) for a in args]
    out = run_cli(*args, "--out", str(tmp_path / "s"), "--quiet")
    assert out.returncode == code, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], out.stderr
    assert not (tmp_path / "s").exists() and not list(tmp_path.glob(".s.*"))


def test_bom_day_with_time_range_split(tmp_path):
    folder = shared("radar-bom-66-20201031")
    split = {
        "train": ["2020-10-31T00:00", "2020-10-31T07:00"],
        "validation": ["2020-10-31T07:00", "2020-10-31T09:00"],
        "test": ["2020-10-31T09:00", "2020-10-31T12:30"],
    }
    fields = dict(
        units="mm/h",
        coarsen=4,
        transform="log1p",
        input_frames=6,
        output_frames=6,
        split=split,
        chunk_frames=16,
    )
    m = prepare(data_config(None, sources=[str(folder)], **fields), tmp_path / "bom")
    c = m["contract"]
    assert m["time"]["frames"] == 144 and c["time_step_seconds"] == 600
    assert c["grid"]["shape"] == [128, 128] and c["units"] in ("mm/h", "mm h-1")
    assert m["split"]["frames"] == {"train": 42, "validation": 12, "test": 21}
    assert m["windows"]["counts"] == {"train": 31, "validation": 1, "test": 10}
    assert len(m["sources"]) == 144
    ds, _ = open_store(tmp_path / "bom")
    rain = np.expm1(ds["frames"].isel(time=slice(6, 78)).values)  # 01:00 - 12:50: it rains
    assert rain.max() > 10 and (rain >= 0).all()


def frame_file(path, minute, ny=6, nx=6, x0=0.0, value=1.0):
    """One frame per file, time as a scalar variable (the BOM layout)."""
    ds = xr.Dataset(
        {"rain": (("y", "x"), np.full((ny, nx), value, "f4"), {"units": "mm/h"})},
        coords={"y": np.arange(ny) * 1000.0, "x": x0 + np.arange(nx) * 1000.0},
    )
    ds["valid_time"] = xr.DataArray(
        np.datetime64("2021-06-01T00:00", "ns") + np.timedelta64(minute, "m")
    )
    ds.to_netcdf(path)


def frames_dir(tmp_path, minutes=range(0, 100, 10)):
    folder = tmp_path / "frames"
    folder.mkdir(exist_ok=True)
    for m in minutes:
        frame_file(folder / f"f{m:03d}.nc", m, value=1.0 + m)
    return folder


def corrupt(folder):
    good = (folder / "f050.nc").read_bytes()
    (folder / "f050.nc").write_bytes(good[: len(good) // 2])
    return "f050.nc"


def other_grid(folder):
    frame_file(folder / "f050.nc", 50, x0=500.0)
    return "f050.nc"


def duplicate(folder):
    frame_file(folder / "f200.nc", 50)
    return "2021-06-01T00:50"


def all_missing(folder):
    frame_file(folder / "f050.nc", 50, value=np.nan)
    return "2021-06-01T00:50:00Z has no valid value"


@pytest.mark.parametrize(
    "make, extra, code, message",
    [
        (None, ["--variable", "snow"], 3, "rain"),  # lists what is there
        (corrupt, [], 3, None),
        (other_grid, [], 3, None),
        (duplicate, [], 3, None),
        (all_missing, [], 3, None),
        (None, ["--input-frames", "8", "--output-frames", "8"], 3, "fewer frames"),
        (None, ["--transform", "sqrt"], 2, "sqrt"),
        (None, ["--set", "data.colour=1"], 2, "colour"),
    ],
    ids=["variable", "corrupt", "grid", "duplicate", "all-missing", "few", "transform", "option"],
)
def test_bad_input_exit_codes_one_line_nothing_left(tmp_path, make, extra, code, message):
    folder = frames_dir(tmp_path)
    if make is not None:
        message = make(folder)
    base = ["--input-frames", "2", "--output-frames", "1"]
    out = run_cli(str(folder), *base, *extra, "--out", str(tmp_path / "s"), "--quiet")
    assert out.returncode == code, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    assert message in lines[0], lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames"]


def test_missing_path_and_empty_glob(tmp_path):
    for source, message in ((tmp_path / "nope.nc", "no such file"), (tmp_path / "*.nc", "")):
        out = run_cli(str(source), "--out", str(tmp_path / "s"), "--quiet")
        assert out.returncode == 3 and str(source.name) in out.stderr and message in out.stderr
        assert len(out.stderr.strip().splitlines()) == 1


def test_channels_get_their_own_fill_values_and_units(tmp_path):
    """WFDE5 as four channels (55 % sea is missing): a fill per channel, each channel's units."""
    sources = [str(shared("wfde5-gb-201701"))]
    names = ["Tair", "pr", "Qair", "Wind"]
    cfg_ = data_config(sources=sources, variable=names, fill_value=[273.15, 0.0, 0.004, 0.0],
                       input_frames=4, output_frames=4, transform="zscore")  # fmt: skip
    m = prepare(cfg_, tmp_path / "s")
    c = m["contract"]
    assert c["missing"]["fill_value"] == [273.15, 0.0, 0.004, 0.0]
    assert c["channel_units"] == ["K", "kg m-2 s-1", "kg kg-1", "m s-1"]
    params = c["transform"]["params"]
    fills = [273.15, 0.0, 0.004, 0.0]
    want = [(f - p["mean"]) / p["std"] for f, p in zip(fills, params, strict=True)]
    np.testing.assert_allclose(c["missing"]["fill_value_normalised"], want, rtol=1e-6)
    with pytest.raises(ConfigError, match="fill_value: 2 values for 4 channel"):
        prepare(cfg_.model_copy(update={"fill_value": [0.0, 0.0]}), tmp_path / "t")
    assert not (tmp_path / "t").exists()
