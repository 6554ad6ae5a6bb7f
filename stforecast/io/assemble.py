"""`open_frames`: files of any supported layout to one lazy, checked `xarray.DataArray`.

The readers describe each file (grid, times, frame locations); this module picks the variable(s),
checks that every file shares one grid and that times are unique, orders the frames by time and
wraps them in a dask array with one chunk per time step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import dask.array
import numpy as np
import xarray as xr
from dask.base import tokenize

from stforecast.errors import InputError, MissingVariableError
from stforecast.io import formats
from stforecast.io import sources as sources_mod
from stforecast.io import times as t
from stforecast.io.frames import FrameRef, FrameStack, ScannedFile, Variable, requested
from stforecast.io.grid import Grid


@dataclass
class _Column:
    """One variable's frames across all files, in time order."""

    times: np.ndarray
    refs: list[FrameRef]
    first: Variable


def open_frames(
    sources: sources_mod.Source | Sequence[sources_mod.Source],
    *,
    variable: str | Sequence[str] | None = None,
    time_pattern: str | None = None,
    recursive: bool = False,
) -> xr.DataArray:
    """Open frame stacks lazily as a `(time, y, x)` DataArray, or `(time, channel, y, x)` when
    `variable` is a list of names.

    `sources`: files, directories or glob patterns (NetCDF with a time dimension or one frame per
    file, multi-band GeoTIFF, one GeoTIFF per frame, ODIM_H5 one file per frame, GRIB and other
    GDAL rasters, gzipped or not); `recursive` also searches the subdirectories of directories
    (archives in `YYYY/MM/DD/` folders). `variable=None` takes the only data variable with
    spatial dimensions (GeoTIFF, GRIB: `"band_data"`; ODIM: the quantity, e.g. `"DBZH"`).
    `time_pattern` (strftime, e.g. `"%Y%m%d%H%M"`) reads the time of single-frame files from
    their names instead of metadata.

    Only headers are read here; values are read per time step when computed. Values are float32
    with packing applied and missing values as NaN. Attributes: `units`, `long_name`,
    `standard_name`, `crs_wkt`, `transform`, `time_step`, `sources`, `source_variable` (and
    `channel_units`, `channel_long_names` with channels). The `source` coordinate along time
    names each frame's file(s). Raises `InputError` on bad input.
    """
    names, channels = requested(variable)
    if time_pattern is not None:
        t.pattern_regex(time_pattern)  # an unsupported directive fails before any file is read
    paths = sources_mod.resolve(sources, recursive=recursive)
    wanted = set(names) if names else None
    scanned = [formats.scan(path, wanted, time_pattern) for path in paths]
    if names is None:
        names = [_only_candidate(scanned)]
    _check_present(scanned, names)
    grid = _common_grid(scanned, names)
    columns = [_column(scanned, name, time_pattern) for name in names]
    _check_aligned(columns, names)

    rows = [[column.refs[i] for column in columns] for i in range(columns[0].times.size)]
    stack = FrameStack(rows, grid.shape, channels)
    stats = [(str(p), s.st_mtime_ns, s.st_size) for p, s in ((p, p.stat()) for p in paths)]
    token = tokenize(stack.token_parts(), stats)  # a rewritten file gets new keys
    rows_per_chunk = _strip_rows(grid.shape, len(names))
    lead = (1, len(names)) if channels else (1,)
    chunks = (*lead, rows_per_chunk, grid.shape[1])
    data = dask.array.from_array(
        stack,
        chunks=chunks,
        name=f"open_frames-{token}",
        asarray=False,
        fancy=False,
        lock=False,
        inline_array=False,  # one copy of the frame list in the graph, not one per task
        meta=np.empty((0,) * stack.ndim, dtype=np.float32),
    )
    times = columns[0].times
    files = [";".join(dict.fromkeys(str(ref.path) for ref in row)) for row in rows]
    coords: dict[str, tuple] = {
        "time": ("time", times),
        # which file(s) each frame comes from, kept with the frame: forecasts record their inputs
        "source": ("time", np.array(files, dtype=object)),
        "y": ("y", grid.y, dict(grid.y_attrs)),
        "x": ("x", grid.x, dict(grid.x_attrs)),
    }
    dims: tuple[str, ...] = ("time", "y", "x")
    if channels:
        coords["channel"] = ("channel", np.array(names, dtype=str))
        dims = ("time", "channel", "y", "x")
    attrs = _attrs(columns, names, channels, grid, times)
    return xr.DataArray(data, dims=dims, coords=coords, name="+".join(names), attrs=attrs)


def _only_candidate(scanned: list[ScannedFile]) -> str:
    found = list(dict.fromkeys(n for f in scanned for n in f.candidates))
    if not found:
        f = scanned[0]
        others = f", only: {', '.join(f.others)}" if f.others else ""
        raise InputError(f"{f.path}: {_as(f)}no data variable with (y, x) dimensions{others}")
    if len(found) > 1:
        raise InputError(
            f"several data variables in the sources: {', '.join(found)}; choose one with "
            "variable=NAME (or a list of names for channels)"
        )
    return found[0]


def _check_present(scanned: list[ScannedFile], names: list[str]) -> None:
    """Every file must hold a requested variable, and every requested variable some file."""
    for f in scanned:
        if any(n in f.variables for n in names):
            continue
        available = ", ".join(f.candidates) or "none"
        flat = [n for n in names if n in f.others]  # present, but not a stack of (y, x) frames
        if flat:
            raise InputError(
                f"{f.path}: variable {flat[0]!r} has no (y, x) dimensions; data variables: "
                f"{available}"
            )
        if not f.candidates:  # nothing to choose from: the input's fault, not the model's
            only = f", only: {', '.join(f.others)}" if f.others else ""
            raise InputError(f"{f.path}: {_as(f)}no data variable with (y, x) dimensions{only}")
        missing = repr(names[0]) if len(names) == 1 else f"among {', '.join(names)}"
        raise MissingVariableError(f"{f.path}: no variable {missing}; available: {available}")
    for name in names:
        if not any(name in f.variables for f in scanned):
            available = list(dict.fromkeys(n for f in scanned for n in f.candidates))
            raise MissingVariableError(
                f"variable {name!r} is in none of the sources; available: {', '.join(available)}"
            )


def _as(f: ScannedFile) -> str:
    """`"NetCDF: "`: which format an error is about, so an unreadable input says it."""
    return f"{f.format}: " if f.format else ""


def _common_grid(scanned: list[ScannedFile], names: list[str]) -> Grid:
    reference: Variable | None = None
    for f in scanned:
        for name in names:
            v = f.variables.get(name)
            if v is None:
                continue
            if reference is None:
                reference = v
                continue
            diff = reference.grid.difference(v.grid)
            if diff:
                what = f" ({name!r})" if len(names) > 1 else ""
                raise InputError(f"{v.path}{what}: not on the grid of {reference.path}: {diff}")
    assert reference is not None
    return reference.grid


def _column(scanned: list[ScannedFile], name: str, time_pattern: str | None) -> _Column:
    times: list[np.ndarray] = []
    refs: list[FrameRef] = []
    first: Variable | None = None
    for f in scanned:
        v = f.variables.get(name)
        if v is None:
            continue
        first = first or v
        if v.times is None and time_pattern and v.time_note.startswith("file name"):
            raise InputError(f"{v.path}: time_pattern {time_pattern!r} not found in the file name")
        if v.times is None:
            raise InputError(
                f"{v.path}: no time found for {name!r} (looked at: {v.time_note}); "
                "pass time_pattern, e.g. '%Y%m%d%H%M' for names like radar_202010310000.nc"
            )
        t.check_increasing(v.times, v.path)
        times.append(v.times)
        refs.extend(v.refs)
    assert first is not None
    all_times = np.concatenate(times).astype("datetime64[ns]")
    order = np.argsort(all_times, kind="stable")
    all_times = all_times[order]
    refs = [refs[i] for i in order]
    same = np.flatnonzero(np.diff(all_times) == np.timedelta64(0, "ns"))
    if same.size:
        k = int(same[0])
        raise InputError(
            f"duplicate time {t.fmt_time(all_times[k])} in {refs[k].path} and {refs[k + 1].path}"
        )
    return _Column(all_times, refs, first)


def _check_aligned(columns: list[_Column], names: list[str]) -> None:
    """Channels must have the same times: a frame is all channels at one time."""
    base = columns[0].times
    for column, name in zip(columns[1:], names[1:], strict=True):
        if column.times.shape == base.shape and np.array_equal(column.times, base):
            continue
        n = min(base.size, column.times.size)
        differ = np.flatnonzero(base[:n] != column.times[:n])
        if differ.size:
            k = int(differ[0])
            detail = (
                f"frame {k}: {t.fmt_time(column.times[k])} in {column.refs[k].path} "
                f"vs {t.fmt_time(base[k])}"
            )
        else:
            detail = f"{column.times.size} frames vs {base.size}"
        raise InputError(f"variable {name!r} has other times than {names[0]!r} ({detail})")


def _attrs(
    columns: list[_Column], names: list[str], channels: bool, grid: Grid, times: np.ndarray
) -> dict:
    firsts = [c.first.attrs for c in columns]
    attrs: dict = {}
    if channels:
        units = [a.get("units", "") for a in firsts]
        attrs["units"] = units[0] if len(set(units)) == 1 else ""
        attrs["channel_units"] = units
        attrs["channel_long_names"] = [a.get("long_name", "") for a in firsts]
        for key in ("long_name", "standard_name"):
            values = {a.get(key) for a in firsts}
            if len(values) == 1 and None not in values:
                attrs[key] = values.pop()
    else:
        attrs.update(firsts[0])
        attrs.setdefault("units", "")
    sources: dict[str, None] = {}
    for i in range(times.size):
        for column in columns:
            sources.setdefault(column.refs[i].path, None)
    attrs.update(
        crs_wkt=grid.crs_wkt,
        transform=[float(v) for v in grid.transform],
        time_step=t.most_common_step(times),
        sources=list(sources),
        source_variable=names if channels else names[0],
    )
    return attrs


STRIP_PIXELS = 4_000_000  # ~16 MB of float32 per dask chunk


def _strip_rows(shape: tuple[int, int], channels: int) -> int:
    """Rows per chunk: a whole frame when it is small; strips of a multiple of 64 rows when it
    is large (FMI: 7316 x 4963), so that reading, unit conversion and coarsening run on a few
    megabytes at a time, in parallel, and a strip's rows coarsen by any factor dividing 64."""
    ny, nx = shape
    rows = STRIP_PIXELS // max(1, nx * channels)
    if rows >= ny:
        return ny
    return max(64, rows // 64 * 64)
