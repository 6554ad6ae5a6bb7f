"""Operational inference: a trained run and the newest frames -> a forecast dataset or file.

    ds = stforecast.forecast(frames, "runs/radar", hours=2)    # frames: open_frames(...) output

(`stforecast.forecast` is `operational.forecast`; the module is not named `forecast` so that the
function and the module never shadow each other on the package.)

The steps, each the same code that prepared the training data where there is one:
  1. choose the last `T_in` frames by valid time; they must be regular at the model's time step
     (`allow_missing_frames` fills a few by linear interpolation in time);
  2. check them against the model card: variable, units, CRS, grid spacing and time step
     (`ModelMismatchError`, exit 4, saying what differs);
  3. units, crop, coarsen/resize (`resample.grid_frames`, as in `prepare`), then the card's
     transform (`transforms.normalise_frames`), missing values set to the card's fill value;
  4. roll the model out for the lead times asked, beyond its training horizon if need be; a grid
     larger than the model's frame is cut into overlapping tiles that are run in batches and
     blended with smooth weights, so no seam shows;
  5. invert the transform, write missing where the newest frame had no coverage, and lay the
     leads out as a CF dataset (`time` = valid time, `forecast_period`,
     `forecast_reference_time`, grid mapping, provenance).

Leads come one at a time from a generator (`Plan.leads`), so `forecast_to_file` streams them to
disk and its memory does not grow with the number of lead times.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import resource
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from stforecast import __version__
from stforecast.config import ForecastConfig, data_config
from stforecast.data import transforms, units
from stforecast.data.resample import grid_frames
from stforecast.data.windows import fmt, iso_duration
from stforecast.errors import (
    CancelledError,
    ConfigError,
    InputError,
    MissingVariableError,
    ModelMismatchError,
)
from stforecast.io.grid import pixel_space
from stforecast.io.sources import sha256
from stforecast.rundir.load import Run, as_run, load_run

Log = Callable[[dict[str, Any]], None]

__all__ = ["Plan", "forecast", "forecast_to_file", "output_name", "plan"]


# ------------------------------------------------------------------------------ the model


# ------------------------------------------------------------------------------ inputs


def _expected_times(reference: np.datetime64, step: int, n: int) -> np.ndarray:
    return reference - np.arange(n - 1, -1, -1) * np.timedelta64(step, "s")


def select_frames(da: xr.DataArray, run: Run, allow_missing: int = 0) -> xr.DataArray:
    """The last `T_in` frames at the model's step, ending at the newest frame (step 1)."""
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
    wanted = _expected_times(reference, step, n)
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


def _fill_in_time(values: np.ndarray, have: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Missing frames by linear interpolation between their neighbours in time."""
    t_have = have.astype("datetime64[s]").astype(np.int64).astype(np.float64)
    t_want = wanted.astype("datetime64[s]").astype(np.int64).astype(np.float64)
    hi = np.clip(np.searchsorted(t_have, t_want), 1, t_have.size - 1)
    lo = hi - 1
    w = ((t_want - t_have[lo]) / (t_have[hi] - t_have[lo])).reshape(-1, *[1] * (values.ndim - 1))
    return ((1 - w) * values[lo] + w * values[hi]).astype(np.float32)


def check_grid(da: xr.DataArray, contract: dict[str, Any]) -> None:
    """CRS and grid spacing must be the model's; the extent may differ (tiles cover it)."""
    import pyproj

    grid = contract["grid"]
    mine, theirs = da.attrs.get("crs_wkt", ""), grid.get("crs_wkt", "")
    if bool(mine) != bool(theirs):
        has = "has" if mine else "has no"
        raise ModelMismatchError(
            f"the input {has} a CRS and the model's grid {'has none' if mine else 'has one'}"
        )
    if mine and theirs:
        a, b = pyproj.CRS.from_wkt(mine), pyproj.CRS.from_wkt(theirs)
        if not a.equals(b, ignore_axis_order=True):
            raise ModelMismatchError(f"CRS differs: input {a.name!r}, model {b.name!r}")
    t_in, t_model = da.attrs.get("transform") or [], grid.get("transform") or []
    if len(t_in) == 6 and len(t_model) == 6:
        for k, axis in ((0, "x"), (4, "y")):
            if not math.isclose(abs(t_in[k]), abs(t_model[k]), rel_tol=1e-6):
                raise ModelMismatchError(
                    f"grid spacing in {axis} is {abs(t_in[k]):g}, the model's is "
                    f"{abs(t_model[k]):g} (after the card's processing: {contract['processing']})"
                )


def _check_units(source_units: str, processing: dict[str, Any], contract: dict, step: int):
    target = processing.get("units") or contract["units"]
    try:
        units.convert(np.float32(1.0), source_units, target, step_seconds=step,
                      zr=tuple(processing.get("zr") or units.MARSHALL_PALMER))  # fmt: skip
    except InputError:
        raise ModelMismatchError(
            f"input units {source_units!r} differ from the model's {contract['units']!r} "
            "and cannot be converted"
        ) from None


_LONG_NAMES = {
    "rate": "precipitation rate",
    "accumulation": "precipitation amount per time step",
    "reflectivity": "equivalent reflectivity factor",
}


def _standard_name(attrs: dict[str, Any], source_units: str, target_units: str) -> str | None:
    """The source's standard name when the units are unchanged; else the one the new units
    mean (an accumulation converted to a rate is a precipitation rate)."""
    if units.equivalent(source_units, target_units):
        return attrs.get("standard_name")
    quantity = units.quantity(target_units)
    return {
        "rate": "lwe_precipitation_rate",
        "reflectivity": "equivalent_reflectivity_factor",
        "accumulation": "lwe_thickness_of_precipitation_amount",
        "temperature": attrs.get("standard_name"),
    }.get(quantity or "")


# ------------------------------------------------------------------------------ tiles


def tile_starts(size: int, tile: int, overlap: float) -> list[int]:
    """Tile origins along one axis: first and last flush with the edges, evenly spaced, with
    at least `overlap` (a fraction of the tile) shared by neighbours."""
    if size <= tile:
        return [0]
    stride = max(1, int(tile * (1 - overlap)))
    n = math.ceil((size - tile) / stride) + 1
    return sorted({round(i * (size - tile) / (n - 1)) for i in range(n)})


def _ramp(n: int, left: int, right: int) -> np.ndarray:
    """1-D blending weight over a tile of `n` pixels with `left`/`right` pixels shared with a
    neighbour. Across a shared band the weight falls from 1 to nearly 0 as a raised cosine over
    its middle half; the outer quarter next to the tile's own edge, where zero padding and the
    recurrent receptive field spoil the forecast, gets almost no weight (never exactly 0)."""
    w = np.ones(n, dtype=np.float64)
    for width, sl in ((left, slice(None)), (right, slice(None, None, -1))):
        if width > 0:
            margin = width // 4
            span = max(width - 2 * margin, 1)
            t = np.clip((np.arange(width) + 0.5 - margin) / span, 0.0, 1.0)
            ramp = np.maximum(0.5 - 0.5 * np.cos(np.pi * t), 1e-3)
            w[sl][:width] = np.minimum(w[sl][:width], ramp)
    return w


def tile_weights(shape: tuple[int, int], tile: tuple[int, int], rows: list[int], cols: list[int]):
    """Per tile `(r0, c0, weight)`: ramps only where a neighbour overlaps."""
    out = []
    for i, r0 in enumerate(rows):
        top = rows[i - 1] + tile[0] - r0 if i > 0 else 0
        bottom = r0 + tile[0] - rows[i + 1] if i + 1 < len(rows) else 0
        wy = _ramp(tile[0], max(top, 0), max(bottom, 0))
        for j, c0 in enumerate(cols):
            left = cols[j - 1] + tile[1] - c0 if j > 0 else 0
            right = c0 + tile[1] - cols[j + 1] if j + 1 < len(cols) else 0
            wx = _ramp(tile[1], max(left, 0), max(right, 0))
            out.append((r0, c0, np.outer(wy, wx).astype(np.float32)))
    return out


def predict(
    net: Any,
    x: np.ndarray,
    steps: int,
    *,
    tile: tuple[int, int] | None = None,
    overlap: float = 0.5,
    batch: int = 16,
    device: Any = "cpu",
) -> Iterator[np.ndarray]:
    """Normalised frames `(T, C, H, W)` -> normalised leads `(C, H, W)`, one at a time.

    `tile=None` runs the whole grid at once (padded by reflection to what the model's patching
    and attention windows divide); otherwise overlapping tiles of that size run `batch` at a
    time, each with its own recurrent state, and are blended per lead time.
    """
    import torch

    # Inference mode around each lead's computation, not across the yields: a caller that
    # abandons the generator (a cancelled job) must not leave its thread with autograd off.
    leads = _predict(net, x, steps, tile, overlap, batch, device)
    while True:
        with torch.inference_mode():
            lead = next(leads, None)
        if lead is None:
            return
        yield lead


def _predict(net, x, steps, tile, overlap, batch, device) -> Iterator[np.ndarray]:
    import torch

    _T, C, H, W = x.shape
    frames = torch.from_numpy(np.ascontiguousarray(x)).to(device)
    if tile is None:
        m = _multiple(net)
        ph, pw = (-H) % m, (-W) % m
        if ph or pw:
            mode = "reflect" if ph < H and pw < W else "replicate"
            frames = torch.nn.functional.pad(frames, (0, pw, 0, ph), mode=mode)
        for lead in net.stream(frames[None], steps):
            yield lead[0, :, :H, :W].float().cpu().numpy()
        return
    rows = tile_starts(H, tile[0], overlap)
    cols = tile_starts(W, tile[1], overlap)
    boxes = tile_weights((H, W), tile, rows, cols)
    crops = torch.stack([frames[:, :, r : r + tile[0], c : c + tile[1]] for r, c, _ in boxes])
    chunks = [range(i, min(i + batch, len(boxes))) for i in range(0, len(boxes), batch)]
    streams = [net.stream(crops[list(ch)], steps) for ch in chunks]
    weight_sum = np.zeros((H, W), np.float32)
    for r, c, w in boxes:
        weight_sum[r : r + tile[0], c : c + tile[1]] += w
    for _ in range(steps):
        acc = np.zeros((C, H, W), np.float32)
        for chunk, stream in zip(chunks, streams, strict=True):
            out = next(stream).float().cpu().numpy()
            for k, i in enumerate(chunk):
                r, c, w = boxes[i]
                acc[:, r : r + tile[0], c : c + tile[1]] += out[k] * w
        yield acc / weight_sum


def _multiple(net: Any) -> int:
    """What the grid must be a multiple of: the patch size times the attention window."""
    window = (getattr(net, "config", {}).get("options") or {}).get("window") or 1
    return int(net.patch_size) * int(window)


def _tile_for(net: Any, shape: tuple[int, int]) -> tuple[int, int] | None:
    frame = tuple(int(s) for s in net.frame_size)
    if getattr(net, "size_free", False) or tuple(shape) == frame:
        return None
    if shape[0] < frame[0] or shape[1] < frame[1]:
        raise ModelMismatchError(
            f"the grid is {shape[0]}x{shape[1]}, smaller than the model's {frame[0]}x{frame[1]} "
            "frame (only size-free models, norm='channel' with a window, run on smaller grids)"
        )
    return frame


# ------------------------------------------------------------------------------ the plan


@dataclass
class Plan:
    """A forecast ready to run: the dataset layout (`template`, lazy zeros) and a generator of
    leads `{variable: (y, x) float32}` in physical units; plus what the log and provenance need."""

    template: xr.Dataset
    leads: Iterator[dict[str, np.ndarray]]
    inputs: list[str]
    timings: dict[str, float]
    info: dict[str, Any]


def plan(
    frames: xr.DataArray,
    model: Any,
    *,
    steps: int | None = None,
    hours: float | None = None,
    device: str = "auto",
    options: ForecastConfig | None = None,
    checksums: bool = True,
) -> Plan:
    """Check, prepare and normalise the inputs; set up the rollout (run lazily by `leads`)."""
    run = as_run(model, device)
    opts = options or run.options
    contract = run.contract
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    steps = lead_steps(run, steps=steps, hours=hours if hours is not None else opts.hours)

    variable = contract["variable"]
    names = [variable] if isinstance(variable, str) else list(variable)
    source_var = frames.attrs.get("source_variable", frames.name)
    got = [source_var] if isinstance(source_var, str) else list(source_var or [])
    if got != names:
        raise ModelMismatchError(f"the input variable is {got}, the model's is {names}")

    wanted_times = _expected_times(frames["time"].values.max(), run.step, run.input_frames)
    chosen = select_frames(frames, run, opts.allow_missing_frames)
    processing = contract["processing"]
    source_units = processing.get("source_units") or chosen.attrs.get("units", "")
    _check_units(source_units, processing, contract, run.step)
    da = grid_frames(processing_config(contract), chosen, run.step)
    if not units.equivalent(da.attrs.get("units", ""), contract["units"]):
        raise ModelMismatchError(
            f"input units {da.attrs.get('units')!r} differ from the model's {contract['units']!r}"
        )
    for name, have, want in zip(names, da.attrs.get("channel_units") or [],
                                contract.get("channel_units") or [], strict=False):  # fmt: skip
        if not units.equivalent(have, want):
            raise ModelMismatchError(f"input units of {name!r} are {have!r}, the model's {want!r}")
    check_grid(da, contract)
    if "channel" not in da.dims:
        da = da.expand_dims("channel", axis=1)
    tile = _tile_for(run.net, (da.sizes["y"], da.sizes["x"]))

    values = np.asarray(da.values, dtype=np.float32)  # (T, C, H, W): the only read of the data
    have = da["time"].values
    for i in np.flatnonzero(~np.isfinite(values).any(axis=(1, 2, 3))):
        raise InputError(f"the frame at {fmt(have[i])} has no valid value")
    if have.size < run.input_frames:
        values = _fill_in_time(values, have, wanted_times)
    timings["read"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    transform, params = card_transform(contract, values.shape[1])
    fills = contract["missing"]["fill_value_normalised"]
    fills = [fills] * values.shape[1] if not isinstance(fills, list) else fills
    no_coverage = ~np.isfinite(values[-1])  # (C, H, W): written back as missing
    x = transforms.normalise_frames(values, transform, params, fills)
    inputs = _input_files(chosen, checksums)
    template = _template(run, da, steps, names, source_units, inputs, opts)
    timings["prepare"] = time.perf_counter() - t1

    def leads() -> Iterator[dict[str, np.ndarray]]:
        stream = predict(
            run.net, x, steps, tile=tile, overlap=opts.tile_overlap, batch=opts.tile_batch,
            device=run.device,
        )  # fmt: skip
        timings["model"] = 0.0
        while True:
            t2 = time.perf_counter()
            lead = next(stream, None)
            if lead is None:
                return
            phys = np.asarray(transforms.denormalise_frames(lead, transform, params), np.float32)
            phys[no_coverage] = np.nan
            timings["model"] += time.perf_counter() - t2
            yield {name: phys[c] for c, name in enumerate(names)}

    info = {
        "steps": steps,
        "reference_time": fmt(wanted_times[-1]),
        "tiles": None if tile is None else list(tile),
        "grid": [int(da.sizes["y"]), int(da.sizes["x"])],
        "device": str(run.device),
        "filled_frames": int(run.input_frames - have.size),
    }
    return Plan(template, leads(), [i["path"] for i in inputs], timings, info)


def processing_config(contract: dict[str, Any]):
    """The `[data]` processing (units, crop, coarsen, resize) the model card recorded, for
    `prepare.grid_frames`: new frames go through what the training frames went through."""
    processing = contract["processing"]
    return data_config(
        **{
            k: processing.get(k)
            for k in ("units", "source_units", "crop_bbox", "crop_pixels", "resize")
        },
        zr=tuple(processing.get("zr") or units.MARSHALL_PALMER),
        coarsen=processing.get("coarsen") or 1,
    )


def lead_steps(run: Run, *, steps: int | None = None, hours: float | None = None) -> int:
    """Lead times to forecast: `steps`, else `hours` at the model's step, else its horizon."""
    if steps is not None and hours is not None:
        raise ConfigError("give --hours or --steps, not both")
    if steps is not None:
        if steps < 1:
            raise ConfigError(f"--steps must be at least 1, got {steps}")
        return int(steps)
    if hours is not None:
        if not hours > 0:
            raise ConfigError(f"--hours must be positive, got {hours}")
        n = hours * 3600 / run.step
        if not math.isclose(n, round(n), abs_tol=1e-9) or round(n) < 1:
            raise ConfigError(
                f"--hours {hours:g} is not a whole number of the model's "
                f"{iso_duration(run.step)} steps"
            )
        return round(n)
    return int(run.contract["output_frames"])


def card_transform(contract: dict[str, Any], channels: int):
    """The transform and per-channel parameters a model card (or a store manifest) records."""
    entry = contract["transform"]
    params = entry.get("params") or {}
    per_channel = params if isinstance(params, list) else [params] * channels
    transform, _ = transforms.from_dict({**entry, "params": per_channel[0]})
    return transform, per_channel


def _input_files(da: xr.DataArray, checksums: bool) -> list[dict[str, Any]]:
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


# ------------------------------------------------------------------------------ the dataset


def _template(
    run: Run,
    da: xr.DataArray,
    steps: int,
    names: list[str],
    source_units: str,
    inputs: list[dict[str, Any]],
    opts: ForecastConfig,
) -> xr.Dataset:
    """The forecast's CF layout with lazy zeros for the values."""
    import pyproj

    contract, step = run.contract, run.step
    reference = np.datetime64(da["time"].values[-1], "ns")
    period = np.arange(1, steps + 1) * np.timedelta64(step, "s").astype("timedelta64[ns]")
    valid = reference + period
    ny, nx = da.sizes["y"], da.sizes["x"]
    crs_wkt = da.attrs.get("crs_wkt", "")
    # A CRS without coordinates (KNMI) cannot place the grid: the file says so instead of
    # claiming positions in it (a GIS would put pixel indices near the CRS's origin)
    unplaced = crs_wkt if pixel_space(da["x"].attrs) or pixel_space(da["y"].attrs) else ""
    if unplaced:
        crs_wkt = ""
    geographic = False
    crs_attrs: dict[str, Any] = {}
    if crs_wkt:
        crs = pyproj.CRS.from_wkt(crs_wkt)
        geographic = crs.is_geographic
        crs_attrs = {k: v for k, v in crs.to_cf().items() if v is not None}
        crs_attrs["crs_wkt"] = crs_wkt
    x_attrs, y_attrs = dict(da["x"].attrs), dict(da["y"].attrs)
    if geographic:
        x_attrs = {"standard_name": "longitude", "units": "degrees_east", "axis": "X"}
        y_attrs = {"standard_name": "latitude", "units": "degrees_north", "axis": "Y"}
    elif crs_wkt:
        x_attrs = {"standard_name": "projection_x_coordinate", "units": "m", **x_attrs, "axis": "X"}
        y_attrs = {"standard_name": "projection_y_coordinate", "units": "m", **y_attrs, "axis": "Y"}
    else:
        x_attrs = {"long_name": "column", "units": "1", **x_attrs, "axis": "X"}
        y_attrs = {"long_name": "row", "units": "1", **y_attrs, "axis": "Y"}

    target_units = contract["units"]
    channel_units = contract.get("channel_units") or [target_units] * len(names)
    standard = _standard_name(da.attrs, source_units, target_units)
    long_names = da.attrs.get("channel_long_names") or [da.attrs.get("long_name", "")] * len(names)
    if not units.equivalent(source_units, target_units):  # the source's name no longer fits
        quantity = units.quantity(target_units) or ""
        long_names = [_LONG_NAMES.get(quantity, n) for n in long_names]
    data_vars: dict[str, Any] = {}
    for name, long_name, unit in zip(names, long_names, channel_units, strict=True):
        attrs = {"units": unit, "long_name": long_name or name}
        if standard and len(names) == 1:
            attrs["standard_name"] = standard
        if crs_wkt:
            attrs["grid_mapping"] = "crs"
        shape_only = np.broadcast_to(np.float32(0), (steps, ny, nx))  # leads come later
        data_vars[name] = (("time", "y", "x"), shape_only, attrs)
    if crs_wkt:
        data_vars["crs"] = ((), np.int32(0), crs_attrs)

    card = run.card
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    arch = card["architecture"]
    model_name = arch.get("name", "model")
    provenance = {
        "model": {
            "run": str(run.path) if run.path else None,
            "architecture": model_name,
            "weights_sha256": card["weights"].get("sha256"),
            "card_created": card.get("created"),
        },
        "recipe_sha256": run.recipe_sha256,
        "inputs": inputs,
        "software": {"stforecast": __version__, **card.get("software", {})},
        "created": now.isoformat(),
    }
    provenance["software"]["stforecast"] = __version__
    attrs = {
        "Conventions": "CF-1.10, ACDD-1.3",
        "title": opts.title or f"{names[0]} nowcast by {model_name}",
        "summary": (
            f"{steps} lead times every {iso_duration(step)} from {fmt(reference)}, "
            f"{model_name} trained by stforecast on {contract.get('store', 'prepared data')}"
        ),
        "institution": opts.institution,
        "source": f"stforecast {__version__}, model {model_name}",
        "history": f"{now.isoformat()} stforecast {__version__} forecast",
        "date_created": now.isoformat(),
        "time_coverage_start": fmt(valid[0]),
        "time_coverage_end": fmt(valid[-1]),
        "time_coverage_resolution": iso_duration(step),
        "forecast_reference_time": fmt(reference),
        "product_version": __version__,
        "keywords": "nowcast, spatiotemporal forecast, " + model_name,
        "provenance": json.dumps(provenance, sort_keys=True),
        "geotransform": [float(v) for v in da.attrs.get("transform", [])] or _geotransform(da),
    }
    if unplaced:
        attrs["source_crs_wkt"] = unplaced
        attrs["comment"] = (
            "x and y are pixel indices of the source grid: its file names a CRS "
            "(source_crs_wkt) but no coordinates, so the forecast is not georeferenced"
        )
    coords = {
        "time": ("time", valid, {"standard_name": "time", "long_name": "valid time", "axis": "T"}),
        "forecast_period": (
            "time",
            period,
            {"standard_name": "forecast_period", "long_name": "lead time"},
        ),
        "forecast_reference_time": (
            (),
            reference,
            {"standard_name": "forecast_reference_time"},
        ),
        "y": ("y", da["y"].values.astype(np.float64), y_attrs),
        "x": ("x", da["x"].values.astype(np.float64), x_attrs),
    }
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def _geotransform(da: xr.DataArray) -> list[float]:
    x, y = da["x"].values.astype(float), da["y"].values.astype(float)
    dx = x[1] - x[0] if x.size > 1 else 1.0
    dy = y[1] - y[0] if y.size > 1 else -1.0
    return [dx, 0.0, x[0] - dx / 2, 0.0, dy, y[0] - dy / 2]


def materialise(p: Plan) -> xr.Dataset:
    """Run the plan into memory."""
    ds = p.template.copy()
    names = [n for n in ds.data_vars if n != "crs"]
    arrays = {n: np.empty(ds[n].shape, np.float32) for n in names}
    for k, lead in enumerate(p.leads):
        for n in names:
            arrays[n][k] = lead[n]
    for n in names:
        ds[n] = (ds[n].dims, arrays[n], ds[n].attrs)
    return ds


def forecast(
    frames: xr.DataArray,
    model: Any,
    *,
    steps: int | None = None,
    hours: float | None = None,
    device: str = "auto",
    options: ForecastConfig | None = None,
) -> xr.Dataset:
    """Forecast from `frames` (as `stforecast.io.open_frames` returns them) with `model` (a run
    directory, a `Run`, or `load_model`'s `(model, card)`): a CF dataset in physical units."""
    return materialise(
        plan(frames, model, steps=steps, hours=hours, device=device, options=options)
    )


# ------------------------------------------------------------------------------ to a file


def output_name(template: xr.Dataset, fmt_name: str) -> str:
    """Deterministic: variable, model, reference time and horizon, e.g.
    `rainrate_cms_lstm_20201031T1200Z_PT4H.nc`. Same inputs and model, same name."""
    from stforecast.io.write import SUFFIX

    var = next(n for n in template.data_vars if n != "crs")
    model = json.loads(template.attrs["provenance"])["model"]["architecture"]
    when = template["forecast_reference_time"].values.astype("datetime64[s]").item()
    ref = when.strftime("%Y%m%dT%H%M%SZ" if when.second else "%Y%m%dT%H%MZ")
    horizon = iso_duration(int(template["forecast_period"].values[-1] / np.timedelta64(1, "s")))
    return f"{var}_{model}_{ref}_{horizon}{SUFFIX[fmt_name]}"


def _unless(cancel: threading.Event, leads: Iterator[Any]) -> Iterator[Any]:
    for lead in leads:
        if cancel.is_set():
            raise CancelledError(
                "the job was cancelled (its client went away); nothing was written"
            )
        yield lead


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def forecast_to_file(
    sources: list[str],
    model: str | Path | Run,
    out: str | Path,
    *,
    fmt_name: str | None = None,
    steps: int | None = None,
    hours: float | None = None,
    device: str = "auto",
    log: Log | None = None,
    cancel: threading.Event | None = None,
) -> dict[str, Any]:
    """The `stforecast forecast` job: read, check, run, and write atomically under a lock.

    `out` is a file, or a directory (existing, or ending in `/`) that gets `output_name`.
    Setting `cancel` (another thread: the forecast server when its client hangs up) stops the job
    at the next lead time with `CancelledError`, and nothing is written.
    Returns a summary (output path, timings per stage, peak memory, inputs).
    """
    from stforecast.io import open_frames
    from stforecast.io.lock import output_lock
    from stforecast.io.write import FORMATS, SUFFIX, write_forecast

    emit = log or (lambda event: None)
    t0 = time.perf_counter()
    run = model if isinstance(model, Run) else load_run(model, device=device)
    fmt_name = fmt_name or run.options.format
    if fmt_name not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got {fmt_name!r}")
    emit({"stage": "load model", "duration_s": time.perf_counter() - t0, "peak_mb": _peak_mb()})

    t1 = time.perf_counter()
    variable = run.contract["variable"]
    try:
        frames = open_frames(
            sources, variable=variable, time_pattern=run.contract["processing"].get("time_pattern")
        )
    except MissingVariableError as err:
        raise ModelMismatchError(f"{err} (the model forecasts {variable!r})") from None
    t_open = time.perf_counter() - t1
    the_plan = plan(frames, run, steps=steps, hours=hours)
    emit(
        {
            "stage": "read",
            "duration_s": time.perf_counter() - t1,
            "peak_mb": _peak_mb(),
            "input_files": the_plan.inputs,
            "reference_time": the_plan.info["reference_time"],
        }
    )

    variables = [n for n in the_plan.template.data_vars if n != "crs"]
    if fmt_name == "geotiff" and len(variables) > 1:
        raise ConfigError(
            f"--format geotiff holds one variable; this model forecasts {len(variables)} "
            f"({', '.join(variables)}): use --format netcdf"
        )
    out = Path(out)
    if out.is_dir() or str(out).endswith(("/", "\\")):
        out = out / output_name(the_plan.template, fmt_name)
    elif out.suffix.lower() not in (SUFFIX[fmt_name], ".tiff" if fmt_name == "geotiff" else ""):
        raise ConfigError(f"--out {out}: a {fmt_name} file should end in {SUFFIX[fmt_name]}")
    if not out.parent.is_dir():
        raise InputError(f"--out {out}: the directory {out.parent} does not exist")

    t2 = time.perf_counter()
    leads = the_plan.leads if cancel is None else _unless(cancel, the_plan.leads)
    with output_lock(out):
        write_forecast(out, the_plan.template, leads, fmt_name)
    total_write = time.perf_counter() - t2
    model_s = the_plan.timings.get("model", 0.0)
    summary = {
        "stage": "written",
        "output_file": str(out),
        "format": fmt_name,
        "steps": the_plan.info["steps"],
        "reference_time": the_plan.info["reference_time"],
        "tiles": the_plan.info["tiles"],
        "device": the_plan.info["device"],
        "timings_s": {
            "load_model": t1 - t0,
            "open": t_open,
            "read": the_plan.timings.get("read", 0.0),
            "prepare": the_plan.timings.get("prepare", 0.0),
            "model": model_s,
            "write": max(total_write - model_s, 0.0),
            "total": time.perf_counter() - t0,
        },
        "peak_mb": _peak_mb(),
        "input_files": the_plan.inputs,
    }
    return summary
