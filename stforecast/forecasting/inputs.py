"""The newest frames, chosen and checked against the model card before anything runs.

The last `T_in` frames at the model's time step, ending at the newest one (a few missing ones
filled in time when the recipe allows it); their variable, units, CRS and grid spacing must be
the model's (`ModelMismatchError`, exit 4, saying what differs), and they go through the same
processing (units, crop, coarsen, resize) as the training frames did. Frames at a finer step
that divides the model's are resampled in time first (`data.timestep`). A model of
`data.spacing` takes any projected grid: it is brought to the model's spacing
(`data.archives.model_frames`) and only the spacing is checked, not the CRS.
"""

from __future__ import annotations

import datetime as dt
import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from stforecast.config import as_utc, data_config
from stforecast.data import units
from stforecast.data.archives import for_input, model_frames
from stforecast.data.contract import DataContract
from stforecast.data.resample import grid_frames
from stforecast.data.spacing import cell_metres, to_spacing
from stforecast.data.timestep import to_time_step
from stforecast.data.windows import fmt
from stforecast.errors import ConfigError, InputError, MissingVariableError, ModelMismatchError
from stforecast.io.sources import sha256
from stforecast.io.times import iso_duration
from stforecast.rundir.load import Run

__all__ = [
    "Inputs",
    "as_frames",
    "as_time",
    "check_grid",
    "check_spacing",
    "checked_inputs",
    "expected_times",
    "finer_step",
    "frame_values",
    "frames_until",
    "input_age",
    "input_files",
    "model_grid",
    "processing_config",
    "select_frames",
]


@dataclass
class Inputs:
    """The input frames of a forecast, checked, on the model's grid (not read yet)."""

    names: list[str]  # the variables, one per channel
    chosen: xr.DataArray  # the frames selected, as the sources hold them
    frames: xr.DataArray  # the same on the model's grid, with a channel dimension
    source_units: str
    wanted: np.ndarray  # the valid times the model needs, oldest first


def as_frames(frames: Any, run: Run, variable: str | list[str] | None = None) -> xr.DataArray:
    """The frames to forecast from, from what a Python caller has: `open_frames`' DataArray, an
    `xarray.Dataset` or `xarray.DataArray` (CRS from its CF grid mapping or rioxarray), or
    paths as `stforecast forecast` takes them. As the command line does, the model's variable
    is taken (`variable` overrides) with the card's `time_pattern`; a variable that is not
    there is a `ModelMismatchError` (exit 4) saying which one the model forecasts."""
    from stforecast.io.memory import is_xarray, open_frames

    if isinstance(frames, xr.DataArray) and "source_variable" in frames.attrs and not variable:
        return frames  # open_frames' own output: checked against the card by `checked_inputs`
    wanted = variable or run.contract.selection
    if isinstance(frames, xr.DataArray) and frames.name is not None and not variable:
        wanted = None  # a named DataArray is what it is: `checked_inputs` compares the names
    if isinstance(frames, (str, os.PathLike)) or is_xarray(frames):
        sources: Any = frames
    elif isinstance(frames, (list, tuple)) and frames:
        sources = list(frames)
    else:
        raise ConfigError(
            "frames must be paths, an xarray Dataset or DataArray, or the DataArray "
            f"stforecast.open_frames returns, got {type(frames).__name__}"
        )
    try:
        return open_frames(
            sources, variable=wanted, time_pattern=run.contract.processing.time_pattern
        )
    except MissingVariableError as err:
        raise ModelMismatchError(f"{err} (the model forecasts {wanted!r})") from None


def checked_inputs(frames: xr.DataArray, run: Run, allow_missing: int = 0) -> Inputs:
    """Choose the frames, check them against the card and put them on the model's grid."""
    contract = run.contract
    names = contract.variables
    source_var = frames.attrs.get("source_variable", frames.name)
    got = [source_var] if isinstance(source_var, str) else list(source_var or [])
    if got != names and not contract.accepts:
        raise ModelMismatchError(f"the input variable is {got}, the model's is {names}")

    spacing = contract.processing.spacing
    if spacing:  # a model of `data.spacing`: processed as the training archive it matches
        cfg, pixel_size = for_input(frames, contract)
    else:
        cfg, pixel_size = processing_config(contract), None
    source_units = cfg.source_units or frames.attrs.get("units", "")
    if contract.accepts:
        accepted(source_units, got, contract.accepts)
    frames = finer_step(frames, run.step, source_units)
    wanted = expected_times(frames["time"].values.max(), run.step, run.input_frames)
    chosen = select_frames(frames, run, allow_missing)
    _check_units(source_units, contract, run.step)
    da = grid_frames(cfg, chosen, run.step)
    if spacing:
        da = to_spacing(da, spacing, pixel_size)
    if not units.equivalent(da.attrs.get("units", ""), contract.units):
        raise ModelMismatchError(
            f"input units {da.attrs.get('units')!r} differ from the model's {contract.units!r}"
        )
    for name, have, want in zip(names, da.attrs.get("channel_units") or [],
                                contract.channel_units or [], strict=False):  # fmt: skip
        if not units.equivalent(have, want):
            raise ModelMismatchError(f"input units of {name!r} are {have!r}, the model's {want!r}")
    if spacing:
        check_spacing(da, spacing, pixel_size)
    else:
        check_grid(da, contract)
    if "channel" not in da.dims:
        da = da.expand_dims("channel", axis=1)
    return Inputs(names, chosen, da, source_units, wanted)


def accepted(have: str, got: list[str], accepts: tuple[str, ...]) -> None:
    """A general model takes one variable (in units `have`) of the quantities it `accepts`,
    whatever its name; anything else is a `ModelMismatchError` saying what the input is and
    which model it needs."""
    kind = units.quantity(have)
    if len(got) == 1 and kind in accepts:
        return
    what = f"{', '.join(got)} in {have!r}" if have else ", ".join(got)
    raise ModelMismatchError(
        f"the input is {what} ({kind or 'not a known quantity'}); this model forecasts "
        f"precipitation only (a rain rate, an accumulation or reflectivity in dBZ): pass "
        f"--model with a run trained on {', '.join(got)}"
    )


def finer_step(da: xr.DataArray, step: int, source_units: str) -> xr.DataArray:
    """Frames at a finer time step that divides the model's, at the model's step
    (`data.timestep`: accumulations summed, anything else subsampled); others unchanged (a step
    that does not fit is `select_frames`' `ModelMismatchError`)."""
    source = int(da.attrs.get("time_step") or 0)
    if not source or source >= step or step % source or da.sizes["time"] < 2:
        return da
    return to_time_step(da, step, source_units)


def check_spacing(da: xr.DataArray, spacing: float, pixel_size: float | None) -> None:
    """A model of `data.spacing` takes any projected grid brought to its spacing (within 1 %):
    CRS and extent may differ from every training archive's."""
    try:
        sx, sy = cell_metres(da, pixel_size)
    except (ConfigError, InputError) as err:
        raise ModelMismatchError(
            f"the input cannot be brought to the model's spacing: {err}"
        ) from None
    for axis, have in (("x", sx), ("y", sy)):
        if not math.isclose(have, spacing, rel_tol=0.01):
            raise ModelMismatchError(
                f"grid spacing in {axis} is {have:g} m after processing, the model's {spacing:g} m"
            )


def model_grid(da: xr.DataArray, contract: DataContract, step: int) -> xr.DataArray:
    """A whole archive at the model's step and grid, as `checked_inputs` brings new frames:
    what a hindcast compares its forecasts with."""
    if contract.processing.spacing:
        return model_frames(da, contract, step)[0]
    cfg = processing_config(contract)
    da = finer_step(da, step, cfg.source_units or da.attrs.get("units", ""))
    return grid_frames(cfg, da, step)


def frame_values(inputs: Inputs, n: int) -> np.ndarray:
    """The frames as `(T_in, C, H, W)` float32 (the only read of the data), missing frames
    filled in time; a frame without any valid value is an `InputError`."""
    values = np.asarray(inputs.frames.values, dtype=np.float32)
    have = inputs.frames["time"].values
    for i in np.flatnonzero(~np.isfinite(values).any(axis=(1, 2, 3))):
        raise InputError(f"the frame at {fmt(have[i])} has no valid value")
    if have.size < n:
        values = fill_in_time(values, have, inputs.wanted)
    return values


def expected_times(reference: np.datetime64, step: int, n: int) -> np.ndarray:
    """The `n` valid times every `step` seconds ending at `reference`, oldest first."""
    return reference - np.arange(n - 1, -1, -1) * np.timedelta64(step, "s")


def select_frames(da: xr.DataArray, run: Run, allow_missing: int = 0) -> xr.DataArray:
    """The last `T_in` frames at the model's step, ending at the newest frame."""
    step, n = run.step, run.input_frames
    if da.sizes["time"] == 0:
        raise InputError("the sources hold no frames")
    da = da.sortby("time")
    source_step = da.attrs.get("time_step")
    if source_step and int(source_step) != step and da.sizes["time"] > 1:
        raise ModelMismatchError(
            f"the input's time step is {iso_duration(int(source_step))}, the model's is "
            f"{iso_duration(step)}; give frames every {step // 60} min"
        )
    times = da["time"].values
    reference = times[-1]
    wanted = expected_times(reference, step, n)
    present = np.isin(wanted, times)
    if present.all():
        return da.sel(time=wanted)
    missing = wanted[~present]
    if present.sum() < 2 or (~present).sum() > allow_missing or not present[0]:
        if da.sizes["time"] < n:
            raise InputError(
                f"the model needs {n} frames every {step // 60} min ending at {fmt(reference)}; "
                f"the sources hold {da.sizes['time']}"
            )
        raise InputError(
            f"no frame at {', '.join(fmt(t) for t in missing[:3])}"
            f"{' ...' if missing.size > 3 else ''}: the model needs {n} frames every "
            f"{step // 60} min ending at {fmt(reference)} (forecast.allow_missing_frames "
            f"tolerates a few)"
        )
    return da.sel(time=wanted[present])  # interpolated after loading


def fill_in_time(values: np.ndarray, have: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Missing frames by linear interpolation between their neighbours in time."""
    t_have = have.astype("datetime64[s]").astype(np.int64).astype(np.float64)
    t_want = wanted.astype("datetime64[s]").astype(np.int64).astype(np.float64)
    hi = np.clip(np.searchsorted(t_have, t_want), 1, t_have.size - 1)
    lo = hi - 1
    w = ((t_want - t_have[lo]) / (t_have[hi] - t_have[lo])).reshape(-1, *[1] * (values.ndim - 1))
    return ((1 - w) * values[lo] + w * values[hi]).astype(np.float32)


def as_time(value: str | dt.datetime | np.datetime64) -> np.datetime64:
    """A time as UTC `datetime64[s]`: ISO 8601 text (`2026-12-01T12:00Z`; no zone is UTC), a
    datetime (naive is UTC) or a datetime64; anything else is a `ConfigError`."""
    if isinstance(value, np.datetime64):
        return value.astype("datetime64[s]")
    if isinstance(value, str):
        text = value.strip()
        try:  # Python 3.10's fromisoformat does not read a trailing Z
            value = dt.datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in "Zz" else text)
        except ValueError:
            raise ConfigError(
                f"the reference time {text!r} is not an ISO 8601 time such as 2026-12-01T12:00Z"
            ) from None
    if not isinstance(value, dt.datetime):
        raise ConfigError(f"the reference time must be a time, got {value!r}")
    return np.datetime64(as_utc(value).replace(microsecond=0), "s")


def frames_until(da: xr.DataArray, reference: np.datetime64) -> xr.DataArray:
    """The frames valid at or before `reference`: a forecast for a given time (a hindcast, a
    late cron run) uses nothing that came after it."""
    times = da["time"].values
    keep = np.flatnonzero(times <= reference)
    if keep.size == 0:
        first = f"; the first is at {fmt(times.min())}" if times.size else ""
        raise InputError(f"no input frame at or before the reference time {fmt(reference)}{first}")
    return da if keep.size == times.size else da.isel(time=keep)


def input_age(
    newest: np.datetime64,
    step: int,
    *,
    reference: np.datetime64 | None = None,
    max_age: float | None = None,
) -> tuple[float, str | None]:
    """How old the newest frame is, in seconds, relative to `reference` (the expected reference
    time) or else the wall clock, and a warning when it is a time step old or more (the frame
    of the reference time is missing). Older than `max_age` seconds is an `InputError` (exit
    3): an operational forecast must not present a stalled feed's last frame as new."""
    now = as_time(dt.datetime.now(dt.timezone.utc)) if reference is None else reference
    age = float((now - newest) / np.timedelta64(1, "s"))
    than = f"the reference time {fmt(now)}" if reference is not None else f"now ({fmt(now)})"
    old = f"the newest input frame ({fmt(newest)}) is {iso_duration(round(max(age, 0)))} older"
    if max_age is not None and age > max_age:
        raise InputError(
            f"{old} than {than}, more than max_input_age {iso_duration(round(max_age))}: the "
            "feed is late or has stopped"
        )
    if age < step:
        return age, None
    return age, (
        f"{old} than {than}, at least one time step ({iso_duration(step)}): later frames are "
        "late or missing"
    )


def check_grid(da: xr.DataArray, contract: DataContract) -> None:
    """CRS and grid spacing must be the model's; the extent may differ (tiles cover it)."""
    import pyproj

    grid = contract.grid
    mine, theirs = da.attrs.get("crs_wkt", ""), grid.crs_wkt
    if bool(mine) != bool(theirs):
        raise ModelMismatchError(
            "the input has a CRS but the model's grid has none"
            if mine
            else "the input has no CRS but the model's grid has one"
        )
    if mine and theirs:
        a, b = pyproj.CRS.from_wkt(mine), pyproj.CRS.from_wkt(theirs)
        if not a.equals(b, ignore_axis_order=True):
            raise ModelMismatchError(crs_difference(a, b))
    t_in, t_model = da.attrs.get("transform") or [], grid.transform
    if len(t_in) == 6 and len(t_model) == 6:
        for k, axis in ((0, "x"), (4, "y")):
            if not math.isclose(abs(t_in[k]), abs(t_model[k]), rel_tol=1e-6):
                raise ModelMismatchError(
                    f"grid spacing in {axis} is {abs(t_in[k]):g}, the model's is "
                    f"{abs(t_model[k]):g} (after the card's processing: "
                    f"{contract.processing.to_dict()})"
                )


def crs_difference(a: Any, b: Any) -> str:
    """What tells two pyproj CRSs apart (`a` the input's, `b` the model's), in one line: their
    EPSG codes, else their names, else the kind, projection method, first parameter, datum or
    ellipsoid that differs, else the first place their WKTs differ. GDAL names many custom
    projections "undefined", so the names alone often read the same."""
    codes = a.to_epsg(), b.to_epsg()
    if codes != (None, None) and codes[0] != codes[1]:
        return f"CRS differs: input {_crs_label(a, codes[0])}, model {_crs_label(b, codes[1])}"
    if a.name != b.name and not {a.name.lower(), b.name.lower()} & {"undefined", "unknown"}:
        return f"CRS differs: input {a.name!r}, model {b.name!r}"
    for what, mine, theirs in _crs_parts(a, b):
        if mine != theirs:
            return f"CRS differs in {what}: input {mine}, model {theirs}"
    wa, wb = a.to_wkt(), b.to_wkt()
    at = next((i for i, (x, y) in enumerate(zip(wa, wb, strict=False)) if x != y), 0)
    start, end = max(at - 30, 0), at + 30
    return f"CRS differs in its WKT: input ...{wa[start:end]}..., model ...{wb[start:end]}..."


def _crs_label(crs: Any, code: int | None) -> str:
    return f"EPSG:{code}" if code is not None else f"{crs.name!r} (no EPSG code)"


def _crs_parts(a: Any, b: Any) -> list[tuple[str, str, str]]:
    """Comparable parts of two CRSs, coarse to fine: `(what, the input's, the model's)`."""
    parts = [("kind", _crs_kind(a), _crs_kind(b))]
    op_a, op_b = a.coordinate_operation, b.coordinate_operation
    if op_a is not None and op_b is not None:
        parts.append(("projection", repr(op_a.method_name), repr(op_b.method_name)))
        theirs = {q.name: q for q in op_b.params}
        for p in op_a.params:
            q = theirs.get(p.name)
            if q is not None and not math.isclose(p.value, q.value, rel_tol=1e-9, abs_tol=1e-12):
                parts.append((p.name, f"{p.value:g} {p.unit_name}", f"{q.value:g} {q.unit_name}"))
    parts.append(("datum", repr(_name(a.datum)), repr(_name(b.datum))))
    ell_a, ell_b = a.ellipsoid, b.ellipsoid
    if ell_a is not None and ell_b is not None:
        for what in ("semi_major_metre", "inverse_flattening"):
            parts.append((f"ellipsoid {what}", f"{getattr(ell_a, what):g}",
                          f"{getattr(ell_b, what):g}"))  # fmt: skip
    return parts


def _name(part: Any) -> str | None:
    return getattr(part, "name", None)


def _crs_kind(crs: Any) -> str:
    return "projected" if crs.is_projected else "geographic" if crs.is_geographic else crs.type_name


def _check_units(source_units: str, contract: DataContract, step: int) -> None:
    target = contract.processing.units or contract.units
    try:
        units.convert(np.float32(1.0), source_units, target, step_seconds=step,
                      zr=contract.processing.zr)  # fmt: skip
    except InputError:
        raise ModelMismatchError(
            f"input units {source_units!r} differ from the model's {contract.units!r} "
            "and cannot be converted"
        ) from None


def processing_config(contract: DataContract):
    """The `[data]` processing (units, crop, coarsen, resize) the model card recorded, for
    `prepare.grid_frames`: new frames go through what the training frames went through."""
    p = contract.processing
    return data_config(
        units=p.units,
        source_units=p.source_units,
        crop_bbox=p.crop_bbox,
        crop_pixels=p.crop_pixels,
        resize=p.resize,
        zr=p.zr,
        coarsen=p.coarsen,
    )


def input_files(da: xr.DataArray, checksums: bool) -> list[dict[str, Any]]:
    """The source files of the chosen frames, with the valid times read from each (and their
    sha256), for the forecast's provenance."""
    paths: dict[str, list[str]] = {}
    if "source" in da.coords:
        for t, files in zip(da["time"].values, da["source"].values, strict=True):
            for path in str(files).split(";"):
                paths.setdefault(path, []).append(fmt(t))
    else:
        paths = {str(p): [] for p in da.attrs.get("sources", [])}
    return [
        {"path": p, "valid_times": v, **({"sha256": sha256(p)} if checksums else {})}
        for p, v in paths.items()
    ]
