"""Synthetic data: the IDX reader, Moving MNIST (test set and training stream), the rain-cell
archive and its CF layout, atomic writes, and the `synthetic` commands."""

from __future__ import annotations

import gzip
import itertools
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import typer
import xarray as xr
from pyproj import CRS
from typer.testing import CliRunner

from stforecast.cli.synthetic import synthetic
from stforecast.data import synthetic as syn
from stforecast.errors import ConfigError, InputError

from conftest import shared

runner = CliRunner()
FREE = 64 - 28  # free range of a digit's top-left corner on the standard canvas


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of an array, written here by hand from the format's description."""
    codes = {"u1": 0x08, "i1": 0x09, "i2": 0x0B, "i4": 0x0C, "f4": 0x0D, "f8": 0x0E}
    code = codes[array.dtype.str[1:]]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def blocks(*values: int) -> np.ndarray:
    """Solid 28×28 "digits", one per value: their position and overlap are exact in a frame."""
    return np.stack([np.full((28, 28), v, dtype=np.uint8) for v in values])


@pytest.fixture(scope="module")
def fake_digits() -> np.ndarray:
    """Fifty random blob digits (no files needed)."""
    rng = np.random.default_rng(7)
    digits = np.zeros((50, 28, 28), dtype=np.uint8)
    yy, xx = np.mgrid[:28, :28]
    for d in digits:
        cy, cx, ry, rx = (
            rng.uniform(10, 18),
            rng.uniform(10, 18),
            rng.uniform(4, 9),
            rng.uniform(3, 9),
        )
        d[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1] = rng.integers(120, 256)
    return digits


# ------------------------------------------------------------------------------------------------
# IDX reader
# ------------------------------------------------------------------------------------------------


def test_read_idx_real_mnist():
    folder = shared("mnist")
    images = syn.read_idx(folder / "t10k-images-idx3-ubyte.gz")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert images.min() == 0 and images.max() == 255
    assert images[:, 0, 0].max() == 0  # the MNIST border is blank
    labels = syn.read_idx(folder / "t10k-labels-idx1-ubyte.gz")
    assert labels.shape == (10000,) and set(np.unique(labels)) == set(range(10))


@pytest.mark.parametrize("dtype", ["u1", "i2", "i4", "f4", "f8"])
@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_round_trip(tmp_path, dtype, compress):
    array = (np.arange(2 * 3 * 4).reshape(2, 3, 4) * 3 - 7).astype(dtype)
    if dtype == "u1":
        array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    data = idx_bytes(array)
    path = tmp_path / "tiny.idx"
    path.write_bytes(gzip.compress(data) if compress else data)
    back = syn.read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.dtype.isnative
    np.testing.assert_array_equal(back, array)
    back[0, 0, 0] = 1  # a writable copy, not a view of the file's bytes


@pytest.mark.parametrize(
    "mangle, message",
    [
        (lambda b: b[:-5], "truncated IDX file"),
        (lambda b: b + b"\0", "corrupt IDX file"),
        (lambda b: b[:10], "truncated IDX header"),
        (lambda b: b"\x01" + b[1:], "not an IDX file"),
        (lambda b: b[:2] + b"\x42" + b[3:], "not an IDX file"),
        (lambda b: gzip.compress(b)[:-12], "corrupt or truncated gzip"),
        (lambda b: b"", "not an IDX file"),
    ],
)
def test_read_idx_rejects_damaged_files(tmp_path, mangle, message):
    path = tmp_path / "bad-images.idx.gz"
    path.write_bytes(mangle(idx_bytes(np.zeros((3, 28, 28), dtype=np.uint8))))
    with pytest.raises(InputError, match=message) as info:
        syn.read_idx(path)
    assert str(path) in str(info.value)
    assert info.value.exit_code == 3


def test_read_idx_missing_file_and_labels_as_images(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        syn.read_idx(tmp_path / "absent.gz")
    labels = tmp_path / "labels.idx"
    labels.write_bytes(idx_bytes(np.arange(10, dtype=np.uint8)))
    with pytest.raises(InputError, match="expected MNIST images"):
        syn.load_mnist_images(labels)


# ------------------------------------------------------------------------------------------------
# Moving MNIST
# ------------------------------------------------------------------------------------------------


def test_moving_mnist_shape_dtype_and_determinism(fake_digits):
    a = syn.moving_mnist(fake_digits, 4, seed=3)
    assert a.shape == (4, 20, 64, 64) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, syn.moving_mnist(fake_digits, 4, seed=3))
    assert not np.array_equal(a, syn.moving_mnist(fake_digits, 4, seed=4))
    b = syn.moving_mnist(fake_digits, 2, seq_len=7, size=48, n_digits=3, seed=0)
    assert b.shape == (2, 7, 48, 48)
    with pytest.raises(ConfigError, match="n_sequences"):
        syn.moving_mnist(fake_digits, 0, seed=0)
    with pytest.raises(ConfigError, match="smaller than the digits"):
        syn.moving_mnist(fake_digits, 1, size=20, seed=0)
    with pytest.raises(ConfigError, match="uint8"):
        syn.moving_mnist(fake_digits.astype(np.float32), 1, seed=0)


def corners(frames: np.ndarray) -> np.ndarray:
    """Top-left corner (row, col) of a single solid block in each frame: (N, T, 2)."""
    rows = frames.any(axis=3).argmax(axis=2)
    cols = frames.any(axis=2).argmax(axis=2)
    return np.stack([rows, cols], axis=-1)


def test_digits_stay_inside_the_canvas_at_constant_speed():
    frames = syn.moving_mnist(blocks(255), 200, n_digits=1, seed=1)
    # the whole block is visible in every frame: never clipped by the canvas
    assert ((frames > 0).sum(axis=(2, 3)) == 28 * 28).all()
    pos = corners(frames)
    assert pos.min() >= 0 and pos.max() <= FREE
    # speed 0.1 of the free range per frame (3.6 px), up to truncation, away from the edges
    step = np.diff(pos, axis=1)
    free = ((pos[:, 1:] > 0) & (pos[:, 1:] < FREE) & (pos[:, :-1] > 0) & (pos[:, :-1] < FREE)).all(
        axis=-1
    )
    speed = np.hypot(*np.moveaxis(step, -1, 0))[free]
    assert abs(speed.mean() - 0.1 * FREE) < 0.3
    assert speed.max() < 0.1 * FREE + 1.5


def test_digits_bounce_off_the_edges():
    """Velocity components change sign only when the digit touches the edge it moved towards."""
    frames = syn.moving_mnist(blocks(255), 100, n_digits=1, seed=2)
    pos = corners(frames)
    bounces = 0
    for seq in pos:
        for axis in (0, 1):
            p = seq[:, axis]
            moves = [(t, d) for t, d in enumerate(np.diff(p)) if d != 0]
            for (t1, d1), (_, d2) in itertools.pairwise(moves):
                if np.sign(d1) != np.sign(d2):
                    bounces += 1
                    assert p[t1 + 1] == (FREE if d1 > 0 else 0), (seq, axis)
    assert bounces > 50  # 72 px of travel in a 36 px range: most sequences bounce


def test_digits_are_combined_by_maximum():
    same = syn.moving_mnist(blocks(100), 100, seed=5)
    assert set(np.unique(same)) == {0, 100}  # overlaps stay 100 (a sum would give 200)
    overlap = (same > 0).sum(axis=(2, 3)) < 2 * 28 * 28
    assert overlap.any()
    mixed = syn.moving_mnist(blocks(100, 200), 100, seed=5)
    assert set(np.unique(mixed)) == {0, 100, 200}


def test_test_set_and_training_stream_never_share_digits_or_sequences():
    values = np.arange(1, 21) * 10  # digit i is a block of value 10 (i + 1)
    digits = blocks(*values)
    train_pool, test_pool = syn.split_mnist_digits(digits)
    assert sorted(test_pool[:, 0, 0]) == [10, 60, 110, 160]  # every fifth digit
    assert not set(train_pool[:, 0, 0]) & set(test_pool[:, 0, 0])

    test = syn.moving_mnist_test(digits, 50)
    np.testing.assert_array_equal(test, syn.moving_mnist_test(digits, 50))
    assert set(np.unique(test)) - {0} <= {10, 60, 110, 160}


def test_moving_mnist_test_from_real_digits():
    digits = syn.load_mnist_images(shared("mnist") / "t10k-images-idx3-ubyte.gz")
    train, test = syn.split_mnist_digits(digits)
    assert len(train) == 8000 and len(test) == 2000
    frames = syn.moving_mnist_test(digits, 8)
    assert frames.shape == (8, 20, 64, 64) and frames.dtype == np.uint8
    assert frames.max() == 255
    np.testing.assert_array_equal(frames, syn.moving_mnist_test(digits, 8))


def test_import_needs_no_torch():
    code = (
        "import sys\n"
        "import stforecast.data.synthetic\n"
        "import stforecast.cli.synthetic\n"
        "assert 'torch' not in sys.modules\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


# ------------------------------------------------------------------------------------------------
# Rain cells
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rain() -> xr.Dataset:
    return syn.rain_cells()


def test_rain_cells_cf_layout(rain):
    assert rain.attrs["Conventions"] == "CF-1.10"
    for name in ("title", "source", "history", "institution"):
        assert rain.attrs[name]
    r = rain["rainrate"]
    assert r.dims == ("time", "y", "x") and r.shape == (288, 64, 64) and r.dtype == np.float32
    assert r.attrs["units"] == "mm h-1" and r.attrs["standard_name"] == "rainfall_rate"
    assert r.attrs["long_name"] and r.attrs["grid_mapping"] == "crs"
    for axis in ("x", "y"):
        c = rain[axis]
        assert c.attrs["standard_name"] == f"projection_{axis}_coordinate"
        assert c.attrs["units"] == "m"
        assert set(np.abs(np.diff(c.values))) == {1000.0}  # 1 km
    assert rain.y.values[0] > rain.y.values[-1]  # north-up rows
    assert "crs_wkt" in rain["crs"].attrs
    assert rain["crs"].attrs["grid_mapping_name"] == "lambert_azimuthal_equal_area"
    assert CRS.from_cf(rain["crs"].attrs) == CRS.from_epsg(syn.RAIN_CELLS_EPSG)
    assert 49.0 < float(rain.lat.mean()) < 51.0 and 7.0 < float(rain.lon.mean()) < 9.0


def test_rain_cells_values_are_realistic(rain):
    r = rain["rainrate"].values
    assert not np.isnan(r).any() and r.min() >= 0.0
    assert 20.0 < r.max() < 200.0  # peaks of tens of mm/h
    assert (r < 1.0).mean() > 0.85  # most of the grid dry or light
    assert 0.1 < (r > 0.1).mean() < 0.5
    assert (r == 0).mean() > 0.4  # dry is exactly 0, as radar products report it


def test_rain_cells_time_axis():
    ds = syn.rain_cells(frames=30, step_minutes=5, start="2023-06-01T12:30")
    steps = np.diff(ds.time.values)
    assert (steps == np.timedelta64(5, "m")).all()
    assert ds.time.values[0] == np.datetime64("2023-06-01T12:30")
    assert ds.time.encoding["units"].startswith("minutes since 2023-06-01")


def test_rain_cells_are_deterministic_and_extendable(rain):
    short = syn.rain_cells(frames=40)
    np.testing.assert_array_equal(short.rainrate.values, rain.rainrate.values[:40])
    other = syn.rain_cells(frames=40, seed=1)
    assert not np.array_equal(other.rainrate.values, short.rainrate.values)


def test_rain_cells_generation_is_fast():
    syn.rain_cells(frames=2)  # imports
    start = time.perf_counter()
    syn.rain_cells()
    assert time.perf_counter() - start < 2.0


def best_shift(a: np.ndarray, b: np.ndarray, reach: int = 8) -> tuple[int, int]:
    """(drow, dcol) maximising the correlation of b shifted back onto a."""
    n0, n1 = a.shape
    best, arg = -2.0, (0, 0)
    for di in range(-reach, reach + 1):
        for dj in range(-reach, reach + 1):
            pa = a[max(0, -di) : n0 - max(0, di), max(0, -dj) : n1 - max(0, dj)]
            pb = b[max(0, di) : n0 - max(0, -di), max(0, dj) : n1 - max(0, -dj)]
            if pa.std() == 0 or pb.std() == 0:
                continue
            c = ((pa - pa.mean()) * (pb - pb.mean())).mean() / (pa.std() * pb.std())
            if c > best:
                best, arg = c, (di, dj)
    return arg


def test_rain_cells_motion_is_coherent():
    # 24 km/h east, 12 km/h south: per 10 min 4 km east (+4 columns) and 2 km south (+2 rows)
    ds = syn.rain_cells(frames=144, motion_kmh=(24.0, -12.0), motion_variability=0.0)
    r = ds.rainrate.values
    shifts = [best_shift(r[k], r[k + 1]) for k in range(0, 143, 3) if (r[k] > 0.1).mean() > 0.1]
    assert len(shifts) > 10
    assert tuple(np.median(shifts, axis=0)) == (2.0, 4.0)
    assert (np.abs(np.array(shifts) - [2, 4]).max(axis=1) <= 1).mean() > 0.8


def test_rain_cells_extrapolation_beats_persistence(rain):
    """Learnable: moving the last frame with the motion seen in the last hour beats persistence."""
    r, margin = rain.rainrate.values, 12
    inner = (slice(margin, -margin),) * 2
    starts = [k for k in range(6, len(r) - 3, 6) if (r[k] > 0.1).mean() > 0.1]
    motion = {  # median displacement per frame over the last hour
        k: np.median([best_shift(r[k - j - 1], r[k - j], 6) for j in range(5)], axis=0)
        for k in starts
    }
    for lead, most in ((1, 0.5), (3, 0.8)):
        moved_mse = persistence_mse = 0.0
        for k, v in motion.items():
            di, dj = np.rint(v * lead).astype(int)
            moved = np.roll(r[k], (di, dj), axis=(0, 1))  # the margin hides the wrap
            truth = r[k + lead][inner]
            moved_mse += ((moved[inner] - truth) ** 2).mean()
            persistence_mse += ((r[k][inner] - truth) ** 2).mean()
        assert moved_mse < most * persistence_mse, (lead, moved_mse / persistence_mse)


def test_rain_cells_coverage_and_bad_arguments():
    ds = syn.rain_cells(frames=3, size=(40, 48), coverage_radius_km=20)
    r = ds.rainrate.values
    assert r.shape == (3, 40, 48)
    assert np.isnan(r[:, 0, 0]).all() and not np.isnan(r[:, 20, 24]).any()
    assert (np.isnan(r).all(axis=0) == np.isnan(r).any(axis=0)).all()  # a fixed mask
    for kwargs, message in [
        ({"frames": 0}, "frames"),
        ({"size": 4}, "size"),
        ({"step_minutes": 0}, "step_minutes"),
        ({"start": "not a date"}, "start"),
        ({"seed": -1}, "seed"),
        ({"coverage_radius_km": 0}, "coverage_radius_km"),
    ]:
        with pytest.raises(ConfigError, match=message):
            syn.rain_cells(**kwargs)


def test_write_rain_cells_round_trip(tmp_path):
    path = syn.write_rain_cells(tmp_path / "sub" / "cells.nc", frames=12, coverage_radius_km=30)
    expected = syn.rain_cells(frames=12, coverage_radius_km=30)
    with xr.open_dataset(path) as ds:
        assert ds.attrs["Conventions"] == "CF-1.10"
        assert CRS.from_cf(ds["crs"].attrs) == CRS.from_epsg(3035)
        assert CRS.from_wkt(ds["crs"].attrs["crs_wkt"]) == CRS.from_epsg(3035)
        assert ds["rainrate"].attrs["grid_mapping"] == "crs"
        assert ds["rainrate"].attrs["units"] == "mm h-1"
        assert ds.time.encoding["units"].startswith("minutes since")
        np.testing.assert_array_equal(ds.time.values, expected.time.values)
        np.testing.assert_array_equal(ds.x.values, expected.x.values)
        np.testing.assert_array_equal(ds.y.values, expected.y.values)
        np.testing.assert_array_equal(ds.rainrate.values, expected.rainrate.values)  # NaN == NaN
        assert np.isnan(ds.rainrate.values).any()
        assert "written by stforecast" in ds.attrs["history"]
    assert [p.name for p in path.parent.iterdir()] == ["cells.nc"]  # no temporary left


def test_writes_are_atomic_and_refuse_to_overwrite(tmp_path, monkeypatch):
    path = tmp_path / "cells.nc"
    path.write_text("precious")
    with pytest.raises(ConfigError, match="already exists"):
        syn.write_rain_cells(path, frames=2)
    assert path.read_text() == "precious"
    syn.write_rain_cells(path, frames=2, overwrite=True)
    with xr.open_dataset(path) as ds:
        assert ds.sizes["time"] == 2

    def broken(self, *args, **kwargs):
        Path(args[0]).write_bytes(b"half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(xr.Dataset, "to_netcdf", broken)
    target = tmp_path / "new.nc"
    with pytest.raises(InputError, match="No space left"):
        syn.write_rain_cells(target, frames=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cells.nc"]

    npy = syn.write_npy(tmp_path / "a.npy", np.arange(4, dtype=np.uint8))
    np.testing.assert_array_equal(np.load(npy), np.arange(4))
    with pytest.raises(ConfigError, match="already exists"):
        syn.write_npy(npy, np.zeros(1))


# ------------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------------


def app() -> typer.Typer:
    """The sub-app mounted as the lead does in cli/app.py."""
    root = typer.Typer()

    @root.callback()
    def _root() -> None:
        """Test root."""

    root.add_typer(synthetic, name="synthetic")
    return root


def one_error_line(result, code: int, message: str) -> None:
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert "Traceback" not in result.output


def test_cli_rain_cells(tmp_path):
    out = tmp_path / "rain.nc"
    args = ["synthetic", "rain-cells", "--out", str(out), "--frames", "12", "--size", "32"]
    result = runner.invoke(app(), [*args, "--step-minutes", "5", "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.stdout
    with xr.open_dataset(out) as ds:
        assert ds.rainrate.shape == (12, 32, 32)
        assert (np.diff(ds.time.values) == np.timedelta64(5, "m")).all()
    one_error_line(runner.invoke(app(), args), 2, "already exists")
    assert runner.invoke(app(), [*args, "--overwrite"]).exit_code == 0
    bad = ["synthetic", "rain-cells", "--out", str(tmp_path / "x.nc"), "--frames", "0"]
    one_error_line(runner.invoke(app(), bad), 2, "frames must be a positive integer")
    assert not (tmp_path / "x.nc").exists()


def test_cli_moving_mnist(tmp_path, fake_digits):
    mnist = tmp_path / "images.idx.gz"
    mnist.write_bytes(gzip.compress(idx_bytes(fake_digits)))
    out = tmp_path / "mm.npy"
    args = ["moving-mnist", "--mnist", str(mnist), "--out", str(out), "--sequences", "3"]
    result = runner.invoke(synthetic, [*args, "--seed", "9"])
    assert result.exit_code == 0, result.output
    frames = np.load(out)
    assert frames.shape == (3, 20, 64, 64) and frames.dtype == np.uint8
    np.testing.assert_array_equal(frames, syn.moving_mnist_test(fake_digits, 3, seed=9))
    one_error_line(runner.invoke(synthetic, args), 2, "already exists")

    other = tmp_path / "other.npy"
    missing = ["moving-mnist", "--mnist", str(tmp_path / "no.gz"), "--out", str(other)]
    one_error_line(runner.invoke(synthetic, missing), 3, "no such file")
    mnist.write_bytes(gzip.compress(idx_bytes(fake_digits))[:-20])
    truncated = ["moving-mnist", "--mnist", str(mnist), "--out", str(other)]
    one_error_line(runner.invoke(synthetic, truncated), 3, "images.idx.gz: corrupt or truncated")
    mnist.write_bytes(idx_bytes(fake_digits))
    zero = ["moving-mnist", "--mnist", str(mnist), "--out", str(other), "--sequences", "0"]
    one_error_line(runner.invoke(synthetic, zero), 2, "n_sequences")
    assert not other.exists()
