"""Rain cells: an archive of advected rain as a CF-1.10 radar-like dataset, the project's default
data set.

Rain rate in mm/h on a real projected grid (EPSG:3035), whose motion is coherent enough for a
model that sees one hour of frames to beat persistence: cells are born, grow, decay and drift
with a common, slowly turning flow (see `rain_cells`). The field is made here with numpy; xarray
and pyproj are imported only to wrap it as a dataset.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stforecast.data.synthetic.files import exists_error, write_file
from stforecast.errors import ConfigError

if TYPE_CHECKING:
    import xarray as xr

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
    ny, nx = _as_size(size)
    _check_arguments(
        frames=frames,
        step_minutes=step_minutes,
        spacing_m=spacing_m,
        motion_kmh=motion_kmh,
        motion_variability=motion_variability,
        coverage_radius_km=coverage_radius_km,
        seed=seed,
    )
    frames, step_minutes, seed = int(frames), int(step_minutes), int(seed)
    stamp = _parse_start(start)
    rain = _rain_field(
        frames=frames,
        ny=ny,
        nx=nx,
        step_minutes=step_minutes,
        seed=seed,
        start_hour=stamp.hour + stamp.minute / 60.0,
        spacing_km=spacing_m / 1000.0,
        motion_kmh=motion_kmh,
        motion_variability=motion_variability,
    )
    x, y = _grid(ny, nx, spacing_m)
    if coverage_radius_km is not None:
        dist = np.hypot(x[None, :] - _CENTRE_XY[0], y[:, None] - _CENTRE_XY[1])
        rain[:, dist > coverage_radius_km * 1000.0] = np.nan
    call = (
        f"rain_cells(frames={frames}, size=({ny}, {nx}), step_minutes={step_minutes}, "
        f"seed={seed}, start={stamp.isoformat()!r}, spacing_m={spacing_m:g}, "
        f"motion_kmh={motion_kmh!r}, motion_variability={motion_variability:g}, "
        f"coverage_radius_km={coverage_radius_km!r})"
    )
    times = stamp + np.arange(frames) * np.timedelta64(step_minutes, "m")
    ds = _dataset(rain, x, y, times, _attributes(call, coverage_radius_km))
    _set_encoding(ds, ny, nx, time_units=f"minutes since {stamp:%Y-%m-%d %H:%M:%S}")
    return ds


def _check_arguments(
    *,
    frames: int,
    step_minutes: int,
    spacing_m: float,
    motion_kmh: tuple[float, float] | None,
    motion_variability: float,
    coverage_radius_km: float | None,
    seed: int,
) -> None:
    """`rain_cells`' arguments, each refused with a `ConfigError` naming it."""
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


def _grid(ny: int, nx: int, spacing_m: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel centres (x ascending, y descending) in EPSG:3035 metres around `_CENTRE_XY`."""
    west = _CENTRE_XY[0] - nx * spacing_m / 2.0
    south = _CENTRE_XY[1] - ny * spacing_m / 2.0
    x = west + (np.arange(nx) + 0.5) * spacing_m
    y = south + (ny - 0.5 - np.arange(ny)) * spacing_m
    return x, y


def _attributes(call: str, coverage_radius_km: float | None) -> dict[str, str]:
    """The global attributes (CF and ACDD), `history` naming the call that made the data."""
    from stforecast import __version__

    return {
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
    }


def _dataset(
    rain: np.ndarray, x: np.ndarray, y: np.ndarray, times: Any, attrs: dict[str, str]
) -> xr.Dataset:
    """The rain rate with its CF coordinates, 2-D latitude and longitude and grid mapping."""
    import xarray as xr
    from pyproj import CRS, Transformer

    crs = CRS.from_epsg(RAIN_CELLS_EPSG)
    to_lonlat = Transformer.from_crs(crs, crs.geodetic_crs, always_xy=True)
    lon, lat = to_lonlat.transform(*np.meshgrid(x, y))
    rainrate = {
        "standard_name": "rainfall_rate",
        "long_name": "rain rate (synthetic radar rainfall)",
        "units": "mm h-1",
        "grid_mapping": "crs",
        "cell_methods": "time: point",
    }
    return xr.Dataset(
        data_vars={
            "rainrate": (("time", "y", "x"), rain, rainrate),
            "crs": ((), np.int32(0), crs.to_cf()),
        },
        coords={
            "time": ("time", times, {"standard_name": "time", "long_name": "time", "axis": "T"}),
            "y": ("y", y, _projection_attrs("y")),
            "x": ("x", x, _projection_attrs("x")),
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
        attrs=attrs,
    )


def _projection_attrs(axis: str) -> dict[str, str]:
    return {
        "standard_name": f"projection_{axis}_coordinate",
        "long_name": f"{axis} coordinate of projection (pixel centre)",
        "units": "m",
        "axis": axis.upper(),
    }


def _set_encoding(ds: xr.Dataset, ny: int, nx: int, *, time_units: str) -> None:
    """How the dataset is written: float32 rain with NaN fill, compressed one frame per chunk;
    int32 minutes since the start; coordinates without a fill value."""
    ds["rainrate"].encoding = {
        "dtype": "float32",
        "_FillValue": np.float32(np.nan),
        "zlib": True,
        "complevel": 4,
        "chunksizes": (1, ny, nx),
    }
    ds["time"].encoding = {"units": time_units, "calendar": "proleptic_gregorian", "dtype": "int32"}
    for name in ("x", "y", "lat", "lon"):
        ds[name].encoding = {"_FillValue": None}


def write_rain_cells(
    path: str | os.PathLike[str], *, overwrite: bool = False, **kwargs: Any
) -> Path:
    """Write `rain_cells(**kwargs)` to a NetCDF-4 file atomically; returns the path.

    An existing file is a `ConfigError` unless `overwrite=True`; missing parent folders are made.
    """
    if Path(path).exists() and not overwrite:  # before generating, not after
        raise exists_error(Path(path))
    ds = rain_cells(**kwargs)
    stamp = np.datetime64("now", "s")
    ds.attrs["history"] = f"{stamp}Z written by stforecast; " + ds.attrs["history"]

    def write(tmp: Path) -> None:
        ds.to_netcdf(tmp, format="NETCDF4", engine="netcdf4")

    return write_file(path, write, overwrite)
