"""Synthetic data sets: Moving MNIST (regenerated) and an embedded archive of advected rain cells.

Both exist so that the whole pipeline can run, be tested and be benchmarked without downloads:

- **Moving MNIST** (Srivastava et al. 2015) is the benchmark of the video-prediction papers. Its
  standard test file is not available here, so it is regenerated from the MNIST digits with the
  standard generator, with a fixed seed for the test set and an independent stream for training
  (see `moving_mnist_test` and `split_mnist_digits` for why they cannot overlap).
- **Rain cells** (`rain_cells`) is the project's default data set: a CF-1.10 radar-like archive of
  rain rate in mm/h on a real projected grid, whose motion is coherent enough for a model that sees
  one hour of frames to beat persistence.

Nothing here imports torch, so reading IDX files and making rain cells stay light (the command
line imports this module for `stforecast synthetic rain-cells`).
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stforecast.errors import ConfigError, InputError

if TYPE_CHECKING:
    import xarray as xr


__all__ = [
    "MOVING_MNIST_STEP",
    "MOVING_MNIST_TEST_SEED",
    "RAIN_CELLS_EPSG",
    "load_mnist_images",
    "moving_mnist",
    "moving_mnist_test",
    "rain_cells",
    "read_idx",
    "split_mnist_digits",
    "write_npy",
    "write_rain_cells",
]

# --------------------------------------------------------------------------------------------
# IDX files (the MNIST distribution format)
# --------------------------------------------------------------------------------------------

# Type code (third byte of the magic number) -> big-endian numpy dtype, as the IDX format defines.
_IDX_DTYPES: dict[int, str] = {
    0x08: ">u1",
    0x09: ">i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (gzip-compressed or not, told by its content) into a native-order array.

    The header is checked strictly (zero bytes, known type code, declared sizes against the bytes
    present) because a truncated download otherwise turns into silently wrong digits. Any problem
    raises `InputError` naming the file.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, expected an IDX file") from None
    except OSError as err:
        raise InputError(f"{path}: cannot read ({err.strerror or err})") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise InputError(f"{path}: corrupt or truncated gzip data ({err})") from None
    if len(raw) < 4:
        raise InputError(f"{path}: not an IDX file (only {len(raw)} bytes)")
    code, ndim = raw[2], raw[3]
    if raw[:2] != b"\x00\x00" or code not in _IDX_DTYPES or ndim == 0:
        raise InputError(f"{path}: not an IDX file (magic number 0x{raw[:4].hex()})")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise InputError(f"{path}: truncated IDX header ({len(raw)} of {header} bytes)")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_DTYPES[code])
    count = math.prod(shape)
    expected, present = count * dtype.itemsize, len(raw) - header
    if present != expected:
        what = "truncated" if present < expected else "corrupt"
        raise InputError(
            f"{path}: {what} IDX file: the header declares {'x'.join(map(str, shape))} values of "
            f"{dtype.name} ({expected} bytes) but {present} bytes follow"
        )
    data = np.frombuffer(raw, dtype=dtype, count=count, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))  # a writable copy in native byte order


def load_mnist_images(path: str | os.PathLike[str]) -> np.ndarray:
    """Read MNIST images `(N, 28, 28)` uint8 from an IDX file, refusing e.g. the labels file."""
    images = read_idx(path)
    if images.ndim != 3 or images.dtype != np.uint8 or images.shape[0] == 0:
        raise InputError(
            f"{path}: expected MNIST images (N, 28, 28) uint8, got shape {images.shape} "
            f"{images.dtype.name} (a labels file?)"
        )
    return images


# --------------------------------------------------------------------------------------------
# Moving MNIST
# --------------------------------------------------------------------------------------------

# Speed of every digit: this fraction of the free range (canvas - digit) per frame, as in the
# standard generator (64 - 28 = 36 pixels, so 3.6 pixels per frame).
MOVING_MNIST_STEP = 0.1

# Seed of the regenerated test set: the arXiv number of Srivastava et al. 2015 (1502.04681).
MOVING_MNIST_TEST_SEED = 150204681

# Every `_TEST_STRIDE`-th digit of the MNIST test file (indices 0, 5, 10, ...) is reserved for the
# test set; the other 80 % feed the training stream.
_TEST_STRIDE = 5

# Sequences rendered at once: bounds the temporary index arrays to ~ 30 MB.
_RENDER_CHUNK = 256


def split_mnist_digits(digits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split the MNIST test digits into (training, test) pools, disjoint by construction.

    Every fifth digit (indices 0, 5, 10, ...) goes to the test pool (2,000 of 10,000), the rest to
    training. A stride rather than a block because the MNIST test file is ordered by writer group
    (its first 5,000 digits come from the cleaner NIST writers), and both pools should see both.
    """
    digits = np.asarray(digits)
    mask = np.zeros(len(digits), dtype=bool)
    mask[::_TEST_STRIDE] = True
    if mask.all() or not mask.any():
        raise ConfigError(f"need at least {_TEST_STRIDE} digits to split, got {len(digits)}")
    return digits[~mask], digits[mask]


def _check_digits(digits: np.ndarray, size: int) -> np.ndarray:
    digits = np.asarray(digits)
    if digits.ndim != 3 or digits.shape[0] == 0:
        raise ConfigError(f"digits must be an array (N, h, w) with N >= 1, got {digits.shape}")
    if digits.dtype != np.uint8:
        raise ConfigError(f"digits must be uint8 (0..255) as read from MNIST, got {digits.dtype}")
    if max(digits.shape[1:]) > size:
        raise ConfigError(f"canvas size {size} is smaller than the digits {digits.shape[1:]}")
    return digits


def _check_counts(n_sequences: int, seq_len: int, n_digits: int) -> None:
    for name, value in (("n_sequences", n_sequences), ("seq_len", seq_len), ("n_digits", n_digits)):
        if int(value) != value or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")


def _trajectories(
    rng: np.random.Generator, n: int, n_digits: int, seq_len: int
) -> tuple[np.ndarray, np.ndarray]:
    """Positions in [0, 1] of the free range, (n, seq_len, n_digits) each for rows and columns.

    Start uniform in the unit square, direction uniform on the circle, constant speed
    `MOVING_MNIST_STEP`. A digit that reaches an edge stops there for that frame and its velocity
    component across the edge changes sign: the bounce of the standard generator. The first frame
    is already one step from the drawn start, also as there.
    """
    pos = rng.random((2, n, n_digits))
    angle = rng.random((n, n_digits)) * (2.0 * np.pi)
    vel = np.stack([np.sin(angle), np.cos(angle)]) * MOVING_MNIST_STEP
    out = np.empty((seq_len, 2, n, n_digits))
    for t in range(seq_len):
        pos = pos + vel
        hit = (pos <= 0.0) | (pos >= 1.0)
        pos = np.clip(pos, 0.0, 1.0)
        vel = np.where(hit, -vel, vel)
        out[t] = pos
    return out[:, 0].transpose(1, 0, 2), out[:, 1].transpose(1, 0, 2)


def _generate(
    digits: np.ndarray,
    n: int,
    rng: np.random.Generator,
    *,
    seq_len: int,
    size: int,
    n_digits: int,
) -> np.ndarray:
    """Sequences (n, seq_len, size, size) uint8 from a generator: trajectories, digits, render."""
    dh, dw = digits.shape[1:]
    rows, cols = _trajectories(rng, n, n_digits, seq_len)
    top = (rows * (size - dh)).astype(np.intp)  # truncation, as the standard generator
    left = (cols * (size - dw)).astype(np.intp)
    choice = rng.integers(0, len(digits), size=(n, n_digits))
    out = np.zeros((n, seq_len, size, size), dtype=np.uint8)
    di = np.arange(dh)[:, None]
    dj = np.arange(dw)[None, :]
    for lo in range(0, n, _RENDER_CHUNK):
        hi = min(n, lo + _RENDER_CHUNK)
        seq = np.arange(lo, hi)[:, None, None, None]
        step = np.arange(seq_len)[None, :, None, None]
        for k in range(n_digits):
            # Within one digit slot no two pastes share a (sequence, frame), so a gathered
            # read-max-write is exact; slots are applied one after another: pixel-wise maximum.
            r = top[lo:hi, :, k, None, None] + di
            c = left[lo:hi, :, k, None, None] + dj
            patch = digits[choice[lo:hi, k]][:, None]
            out[seq, step, r, c] = np.maximum(out[seq, step, r, c], patch)
    return out


def moving_mnist(
    digits: np.ndarray,
    n_sequences: int,
    *,
    seq_len: int = 20,
    size: int = 64,
    n_digits: int = 2,
    seed: int,
) -> np.ndarray:
    """Moving MNIST sequences `(N, T, size, size)` uint8 with the standard generator.

    Each sequence draws `n_digits` digits from `digits` (uniformly, with replacement), a start in
    the free range and a direction; every digit moves at `MOVING_MNIST_STEP` of the free range per
    frame, bounces off the edges and the digits are combined by pixel-wise maximum. The result is a
    pure function of the arguments (numpy's PCG64 seeded with `seed`). Divide by 255 for [0, 1].
    """
    _check_counts(n_sequences, seq_len, n_digits)
    digits = _check_digits(digits, size)
    if int(seed) != seed or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    rng = np.random.default_rng(seed)
    return _generate(digits, n_sequences, rng, seq_len=seq_len, size=size, n_digits=n_digits)


def moving_mnist_test(
    digits: np.ndarray,
    n: int = 10000,
    *,
    seed: int = MOVING_MNIST_TEST_SEED,
    seq_len: int = 20,
    size: int = 64,
    n_digits: int = 2,
) -> np.ndarray:
    """The regenerated Moving MNIST test set `(n, T, 64, 64)` uint8: "Moving MNIST (regenerated)".

    `digits` is the whole MNIST test file (10,000 digits; the 60,000 training digits are not
    available here). Only its test pool (`split_mnist_digits`: every fifth digit) is used, with
    `seed` = `MOVING_MNIST_TEST_SEED`, so the test set is fixed and shares no digit with the
    training stream. Unlike the original `mnist_test_seq.npy`, which is `(T, N, 64, 64)`, the
    sequence axis comes first.
    """
    _, test_digits = split_mnist_digits(digits)
    return moving_mnist(test_digits, n, seq_len=seq_len, size=size, n_digits=n_digits, seed=seed)


# --------------------------------------------------------------------------------------------
# Rain cells
# --------------------------------------------------------------------------------------------

# ETRS89-extended / LAEA Europe, the pan-European equal-area grid (EUMETNET OPERA composites and
# many national radar products use an equal-area projection).
RAIN_CELLS_EPSG = 3035
# Centre of the default domain in EPSG:3035 metres: about 8.0° E, 50.0° N (Rhine-Main, Germany).
_CENTRE_XY = (4_178_000.0, 2_990_000.0)

_SPINUP_H = 4.0  # cells are born from this many hours before the first frame: no empty start
_MARGIN_KM = 50.0  # births also this far outside the domain, so that cells drift in
_BIRTH_RATE = 1.4e-4  # cells per km² per hour, before the diurnal modulation
_DIURNAL_MIN, _DIURNAL_AMP = 0.6, 0.9  # birth-rate factor: night minimum, afternoon excess
_DIURNAL_PEAK_H = 15.0  # convection peaks in the afternoon (hour of the `start` clock)
_SHIELD, _SHIELD_WIDTH = 0.1, 2.5  # stratiform shield: fraction of the peak, width / core
_DRY_BELOW = 0.05  # mm/h: below this a radar reports no rain
_TEXTURE_PERIOD_KM = 256  # the multiplicative texture field is periodic over this length
_TEXTURE_SCALE_KM = 3.0  # correlation length of the texture
_TEXTURE_STD = 0.35  # standard deviation of log(texture)


def _as_size(size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    pair = (size, size) if isinstance(size, int | np.integer) else tuple(size)
    if len(pair) != 2 or any(int(v) != v or v < 8 for v in pair):
        raise ConfigError(f"size must be one or two integers >= 8 (ny, nx), got {size!r}")
    return int(pair[0]), int(pair[1])


def _parse_start(start: Any) -> Any:
    import pandas as pd

    try:
        stamp = pd.Timestamp(start)
    except (TypeError, ValueError) as err:
        raise ConfigError(
            f"start must be a date and time such as 2024-01-01T00:00: {err}"
        ) from None
    if stamp is pd.NaT:
        raise ConfigError(f"start must be a date and time, got {start!r}")
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    return stamp


def _steering(
    rng: np.random.Generator, motion_kmh: tuple[float, float] | None, variability: float
) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """The common motion (u east, v north; km/h) as a function of time in hours.

    A mean vector (drawn: 15-30 km/h in any direction, unless given) that slowly turns by up to
    ±20° and speeds up or slows by up to ±15 % over periods of 16-30 h, scaled by `variability`.
    """
    speed = rng.uniform(15.0, 30.0)
    direction = rng.uniform(0.0, 2.0 * np.pi)
    periods = rng.uniform(16.0, 30.0, size=2)
    phases = rng.uniform(0.0, 2.0 * np.pi, size=2)
    if motion_kmh is None:
        u0, v0 = speed * np.cos(direction), speed * np.sin(direction)
    else:
        u0, v0 = float(motion_kmh[0]), float(motion_kmh[1])
    turn_amp = np.deg2rad(20.0) * variability
    speed_amp = 0.15 * variability

    def motion(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        turn = turn_amp * np.sin(2.0 * np.pi * t / periods[0] + phases[0])
        scale = 1.0 + speed_amp * np.sin(2.0 * np.pi * t / periods[1] + phases[1])
        cos, sin = np.cos(turn), np.sin(turn)
        return scale * (u0 * cos - v0 * sin), scale * (u0 * sin + v0 * cos)

    return motion


def _texture(rng: np.random.Generator) -> np.ndarray:
    """A periodic, smooth, log-normal field of mean 1 (1 km cells): the cells' inner structure."""
    n = _TEXTURE_PERIOD_KM
    white = rng.standard_normal((n, n))
    k = np.fft.fftfreq(n)
    k2 = k[:, None] ** 2 + k[None, :] ** 2
    smooth = np.fft.ifft2(np.fft.fft2(white) * np.exp(-2.0 * (np.pi * _TEXTURE_SCALE_KM) ** 2 * k2))
    field = smooth.real
    field = (field - field.mean()) / field.std()
    return np.exp(_TEXTURE_STD * field - 0.5 * _TEXTURE_STD**2)


def _sample_periodic(field: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear interpolation of a periodic field at (x, y) in its cell units."""
    n0, n1 = field.shape
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = x - x0, y - y0
    i0 = y0.astype(np.intp) % n0
    j0 = x0.astype(np.intp) % n1
    i1, j1 = (i0 + 1) % n0, (j0 + 1) % n1
    top = field[i0, j0] * (1 - fx) + field[i0, j1] * fx
    bottom = field[i1, j0] * (1 - fx) + field[i1, j1] * fx
    return top * (1 - fy) + bottom * fy


def _births(
    seed: int, t_end: float, width: float, height: float, start_hour: float
) -> dict[str, np.ndarray]:
    """All cells born in [-spin-up, t_end) h, drawn hour by hour from their own seed.

    Hour blocks with their own random stream keep a longer archive a continuation of a shorter one
    (the same seed gives the same first frames whatever `frames` is).
    """
    area = (width + 2 * _MARGIN_KM) * (height + 2 * _MARGIN_KM)
    parts: list[np.ndarray] = []
    for block in range(-int(_SPINUP_H), math.ceil(t_end)):
        rng = np.random.default_rng([seed, 1, block + 10_000])
        hour = (start_hour + block + 0.5) % 24.0
        diurnal = (
            _DIURNAL_MIN
            + _DIURNAL_AMP * max(0.0, math.cos(2.0 * np.pi * (hour - _DIURNAL_PEAK_H) / 24.0)) ** 2
        )
        n = rng.poisson(_BIRTH_RATE * diurnal * area)
        cells = np.empty((n, 10))
        cells[:, 0] = block + rng.random(n)  # birth time, h
        cells[:, 1] = rng.uniform(-_MARGIN_KM, width + _MARGIN_KM, n)  # x at birth, km
        cells[:, 2] = rng.uniform(-_MARGIN_KM, height + _MARGIN_KM, n)  # y at birth, km
        cells[:, 3] = rng.uniform(1.0, 4.0, n)  # lifetime, h
        cells[:, 4] = np.clip(rng.lognormal(np.log(7.0), 0.7, n), 1.0, 60.0)  # peak, mm/h
        cells[:, 5] = np.clip(rng.lognormal(np.log(4.0), 0.35, n), 1.5, 12.0)  # core radius, km
        cells[:, 6] = rng.uniform(1.0, 2.0, n)  # elongation
        cells[:, 7] = rng.uniform(0.0, np.pi, n)  # orientation, rad
        cells[:, 8:10] = rng.normal(0.0, 3.0, (n, 2))  # own drift (u, v), km/h
        parts.append(cells)
    cells = np.concatenate(parts)
    names = ("t0", "x0", "y0", "life", "peak", "radius", "elong", "angle", "du", "dv")
    return {name: cells[:, i] for i, name in enumerate(names)}


def _rain_field(
    *,
    frames: int,
    ny: int,
    nx: int,
    step_minutes: int,
    seed: int,
    start_hour: float,
    spacing_km: float,
    motion_kmh: tuple[float, float] | None,
    motion_variability: float,
) -> np.ndarray:
    """Rain rate (frames, ny, nx) in mm/h, row 0 the northernmost (see `rain_cells`)."""
    dt_h = step_minutes / 60.0
    times = np.arange(frames) * dt_h
    width, height = nx * spacing_km, ny * spacing_km
    motion = _steering(np.random.default_rng([seed, 0]), motion_kmh, motion_variability)
    texture = _texture(np.random.default_rng([seed, 2]))
    cells = _births(seed, times[-1] + dt_h, width, height, start_hour)

    # Displacement of the common flow since -spin-up, on a fixed one-minute grid (cumulative sums
    # from a fixed origin: the same values whatever the archive's length).
    fine = np.arange(-_SPINUP_H, times[-1] + 2.0 / 60.0, 1.0 / 60.0)
    u, v = motion(fine)
    disp_x = np.concatenate([[0.0], np.cumsum((u[1:] + u[:-1]) / 2.0) / 60.0])
    disp_y = np.concatenate([[0.0], np.cumsum((v[1:] + v[:-1]) / 2.0) / 60.0])
    birth_dx = np.interp(cells["t0"], fine, disp_x)
    birth_dy = np.interp(cells["t0"], fine, disp_y)

    x = (np.arange(nx) + 0.5) * spacing_km  # km from the west edge
    y = (ny - 0.5 - np.arange(ny)) * spacing_km  # km from the south edge; row 0 is north
    rain = np.zeros((frames, ny, nx), dtype=np.float64)
    for k, t in enumerate(times):
        flow_dx, flow_dy = np.interp(t, fine, disp_x), np.interp(t, fine, disp_y)
        age = (t - cells["t0"]) / cells["life"]
        cx = cells["x0"] + flow_dx - birth_dx + cells["du"] * (t - cells["t0"])
        cy = cells["y0"] + flow_dy - birth_dy + cells["dv"] * (t - cells["t0"])
        reach = 9.0 * cells["radius"] * cells["elong"]  # the halo is negligible beyond this
        alive = (
            (age > 0.0)
            & (age < 1.0)
            & (cx > -reach)
            & (cx < width + reach)
            & (cy > -reach)
            & (cy < height + reach)
        )
        if alive.any():
            life = np.sin(np.pi * age[alive])
            peak = cells["peak"][alive] * life**2  # grow, mature, decay
            r_minor = cells["radius"][alive] * (0.5 + 0.5 * life)  # and widen while mature
            r_major = r_minor * cells["elong"][alive]
            cos, sin = np.cos(cells["angle"][alive]), np.sin(cells["angle"][alive])
            dx = x[None, None, :] - cx[alive, None, None]
            dy = y[None, :, None] - cy[alive, None, None]
            along = (cos[:, None, None] * dx + sin[:, None, None] * dy) / r_major[:, None, None]
            across = (cos[:, None, None] * dy - sin[:, None, None] * dx) / r_minor[:, None, None]
            q = along**2 + across**2
            # Convective core plus a wide, weak stratiform shield.
            shape = np.exp(-0.5 * q) + _SHIELD * np.exp(-0.5 * q / _SHIELD_WIDTH**2)
            rain[k] = np.tensordot(peak, shape, axes=1)
        rain[k] *= _sample_periodic(
            texture, x[None, :] - flow_dx, y[:, None] - flow_dy
        )  # texture moves with the common flow
    rain[rain < _DRY_BELOW] = 0.0
    return rain.astype(np.float32)


def rain_cells(
    *,
    frames: int = 288,
    size: int | tuple[int, int] = 64,
    step_minutes: int = 10,
    seed: int = 0,
    start: Any = "2024-01-01T00:00",
    spacing_m: float = 1000.0,
    motion_kmh: tuple[float, float] | None = None,
    motion_variability: float = 1.0,
    coverage_radius_km: float | None = None,
) -> xr.Dataset:
    """An archive of advected, growing and decaying rain cells as a CF-1.10 radar-like dataset.

    The default data set of the project (no files needed): 288 frames at 10 min (2 days) on a
    64 × 64 grid of 1 km, generated in well under a second.

    Cells are born at random (a Poisson process with an afternoon peak, also up to 50 km outside
    the domain so that they drift in), live 1-4 h, grow to a peak of typically 3-30 mm/h (at most
    60, more where cells overlap) and decay, widening while they mature. Each is an elongated
    Gaussian core of 1.5-12 km radius with a weak, 2.5 times wider stratiform shield; about a
    sixth of the frames are dry (quiet nights), a few are wet everywhere. All move with a common
    motion, uniform in space and turning slowly in time (`motion_kmh` = mean (east, north) in
    km/h, else drawn: 15-30 km/h; `motion_variability` scales the slow turning, 0 keeps it
    constant), plus their own drift of a few km/h; a multiplicative texture moves with the common
    flow. Rates below 0.05 mm/h are 0: most of the grid is dry or light.

    Layout: dims `(time, y, x)`; `x`, `y` pixel centres in metres of EPSG:3035 (LAEA Europe)
    around 8° E, 50° N, `y` descending (row 0 north, as in radar images and GeoTIFFs); 2-D `lat`,
    `lon` auxiliary coordinates; a `crs` grid-mapping variable from `pyproj.CRS.to_cf()`;
    `rainrate` float32 in `mm h-1` with `_FillValue` NaN (NaN only outside `coverage_radius_km`
    from the centre, when given: a radar's range); `time` (UTC; a time-zone-aware `start` is
    converted) encoded as int32 `minutes since start`.
    """
    import xarray as xr
    from pyproj import CRS, Transformer

    from stforecast import __version__

    ny, nx = _as_size(size)
    if int(frames) != frames or frames < 1:
        raise ConfigError(f"frames must be a positive integer, got {frames!r}")
    if int(step_minutes) != step_minutes or step_minutes < 1:
        raise ConfigError(f"step_minutes must be a positive whole number, got {step_minutes!r}")
    if not spacing_m > 0:
        raise ConfigError(f"spacing_m must be positive, got {spacing_m!r}")
    if not motion_variability >= 0:
        raise ConfigError(f"motion_variability must be >= 0, got {motion_variability!r}")
    if motion_kmh is not None and len(motion_kmh) != 2:
        raise ConfigError(f"motion_kmh must be (east, north) in km/h, got {motion_kmh!r}")
    if coverage_radius_km is not None and not coverage_radius_km > 0:
        raise ConfigError(f"coverage_radius_km must be positive, got {coverage_radius_km!r}")
    if int(seed) != seed or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    frames, step_minutes, seed = int(frames), int(step_minutes), int(seed)
    stamp = _parse_start(start)
    spacing_km = spacing_m / 1000.0

    rain = _rain_field(
        frames=frames,
        ny=ny,
        nx=nx,
        step_minutes=step_minutes,
        seed=seed,
        start_hour=stamp.hour + stamp.minute / 60.0,
        spacing_km=spacing_km,
        motion_kmh=motion_kmh,
        motion_variability=motion_variability,
    )

    west = _CENTRE_XY[0] - nx * spacing_m / 2.0
    south = _CENTRE_XY[1] - ny * spacing_m / 2.0
    x = west + (np.arange(nx) + 0.5) * spacing_m
    y = south + (ny - 0.5 - np.arange(ny)) * spacing_m
    if coverage_radius_km is not None:
        dist = np.hypot(x[None, :] - _CENTRE_XY[0], y[:, None] - _CENTRE_XY[1])
        rain[:, dist > coverage_radius_km * 1000.0] = np.nan

    crs = CRS.from_epsg(RAIN_CELLS_EPSG)
    to_lonlat = Transformer.from_crs(crs, crs.geodetic_crs, always_xy=True)
    lon, lat = to_lonlat.transform(*np.meshgrid(x, y))
    times = stamp + np.arange(frames) * np.timedelta64(step_minutes, "m")
    units = f"minutes since {stamp:%Y-%m-%d %H:%M:%S}"
    call = (
        f"rain_cells(frames={frames}, size=({ny}, {nx}), step_minutes={step_minutes}, "
        f"seed={seed}, start={stamp.isoformat()!r}, spacing_m={spacing_m:g}, "
        f"motion_kmh={motion_kmh!r}, motion_variability={motion_variability:g}, "
        f"coverage_radius_km={coverage_radius_km!r})"
    )

    ds = xr.Dataset(
        data_vars={
            "rainrate": (
                ("time", "y", "x"),
                rain,
                {
                    "standard_name": "rainfall_rate",
                    "long_name": "rain rate (synthetic radar rainfall)",
                    "units": "mm h-1",
                    "grid_mapping": "crs",
                    "cell_methods": "time: point",
                },
            ),
            "crs": ((), np.int32(0), crs.to_cf()),
        },
        coords={
            "time": ("time", times, {"standard_name": "time", "long_name": "time", "axis": "T"}),
            "y": (
                "y",
                y,
                {
                    "standard_name": "projection_y_coordinate",
                    "long_name": "y coordinate of projection (pixel centre)",
                    "units": "m",
                    "axis": "Y",
                },
            ),
            "x": (
                "x",
                x,
                {
                    "standard_name": "projection_x_coordinate",
                    "long_name": "x coordinate of projection (pixel centre)",
                    "units": "m",
                    "axis": "X",
                },
            ),
            "lat": (
                ("y", "x"),
                lat,
                {"standard_name": "latitude", "long_name": "latitude", "units": "degrees_north"},
            ),
            "lon": (
                ("y", "x"),
                lon,
                {"standard_name": "longitude", "long_name": "longitude", "units": "degrees_east"},
            ),
        },
        attrs={
            "Conventions": "CF-1.10",
            "title": "Synthetic advected rain cells (stforecast default data set)",
            "institution": "stforecast project (synthetic data, not an observation)",
            "source": f"stforecast {__version__} synthetic rain-cell generator",
            "history": f"created by stforecast.data.synthetic.{call}",
            "comment": (
                "Gaussian rain cells that are born, grow, decay and advect with a common, slowly "
                "turning motion plus their own drift; rain rates below 0.05 mm/h are 0. "
                + (
                    f"NaN marks no coverage beyond {coverage_radius_km:g} km from the centre."
                    if coverage_radius_km is not None
                    else "Full coverage: no missing values."
                )
            ),
        },
    )
    ds["rainrate"].encoding = {
        "dtype": "float32",
        "_FillValue": np.float32(np.nan),
        "zlib": True,
        "complevel": 4,
        "chunksizes": (1, ny, nx),
    }
    ds["time"].encoding = {"units": units, "calendar": "proleptic_gregorian", "dtype": "int32"}
    for name in ("x", "y", "lat", "lon"):
        ds[name].encoding = {"_FillValue": None}
    return ds


# --------------------------------------------------------------------------------------------
# Atomic writes
# --------------------------------------------------------------------------------------------


def _exists(path: Path) -> ConfigError:
    """Usage, as in `prepare` (exit 2): the data is fine, the command would replace a file."""
    return ConfigError(f"{path}: already exists (overwrite=True or --overwrite replaces it)")


def _write_atomic(path: Path, write: Callable[[Path], None], overwrite: bool) -> Path:
    """Write through a temporary file in the target's directory, then move it into place.

    Readers (a training job, a cron job) never see a half-written file. Without `overwrite` the
    final step is a hard link, which fails if the name appeared meanwhile, so an existing file is
    never replaced.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected a file name")
    if path.exists() and not overwrite:
        raise _exists(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise InputError(f"{path}: cannot write ({err.strerror or err})") from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual permissions
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise _exists(path) from None
            except OSError:  # no hard links on this file system: check, then replace
                if path.exists():
                    raise _exists(path) from None
                os.replace(tmp, path)
    except OSError as err:
        raise InputError(f"{path}: cannot write ({err.strerror or err})") from None
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_rain_cells(
    path: str | os.PathLike[str], *, overwrite: bool = False, **kwargs: Any
) -> Path:
    """Write `rain_cells(**kwargs)` to a NetCDF-4 file atomically; returns the path.

    An existing file is an `InputError` unless `overwrite=True`; missing parent folders are made.
    """
    if Path(path).exists() and not overwrite:  # before generating, not after
        raise _exists(Path(path))
    ds = rain_cells(**kwargs)
    stamp = np.datetime64("now", "s")
    ds.attrs["history"] = f"{stamp}Z written by stforecast; " + ds.attrs["history"]

    def write(tmp: Path) -> None:
        ds.to_netcdf(tmp, format="NETCDF4", engine="netcdf4")

    return _write_atomic(Path(path), write, overwrite)


def write_npy(path: str | os.PathLike[str], array: np.ndarray, *, overwrite: bool = False) -> Path:
    """Save an array as `.npy` atomically (the name is used as given, no suffix is added)."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.save(fh, np.ascontiguousarray(array), allow_pickle=False)

    return _write_atomic(Path(path), write, overwrite)
