"""A trained run and the newest frames -> a forecast: the plan, and the forecast in memory.

    ds = stforecast.forecast(frames, "runs/radar", hours=2)    # frames: open_frames(...) output

The steps, each the same code that prepared the training data where there is one:
  1. choose the last `T_in` frames by valid time and check them against the model card
     (`forecasting.inputs`);
  2. the card's transform (`transforms.normalise_frames`), missing values set to its fill value;
  3. roll the model out for the lead times asked, beyond its training horizon if need be, tiled
     on grids larger than its frame (`forecasting.tiling`);
  4. invert the transform, write missing where the newest frame had no coverage, and lay the
     leads out as a CF dataset (`forecasting.template`).

Leads come one at a time from a generator (`Plan.leads`), so `forecast_to_file` streams them to
disk and its memory does not grow with the number of lead times.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from stforecast.config import ForecastConfig
from stforecast.data import transforms
from stforecast.data.contract import Transform
from stforecast.data.windows import fmt
from stforecast.errors import ConfigError
from stforecast.forecasting.inputs import (
    as_time,
    checked_inputs,
    frame_values,
    frames_until,
    input_age,
    input_files,
)
from stforecast.forecasting.template import forecast_template
from stforecast.forecasting.tiling import predict, tile_for
from stforecast.io.times import iso_duration
from stforecast.rundir.layout import RECIPE
from stforecast.rundir.load import Run, as_run

__all__ = ["Plan", "card_transform", "forecast", "lead_steps", "materialise", "plan"]


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
    now: Any = None,
    max_input_age: float | None = None,
    blend: bool = True,
) -> Plan:
    """Check, prepare and normalise the inputs; set up the rollout (run lazily by `leads`).

    `now` is the expected reference time (ISO 8601 text, a datetime or a datetime64; default:
    the wall clock): frames after it are not used, and the newest frame's age is measured from
    it (`info`'s `input_age_seconds` and `stale`). A newest frame older than `max_input_age`
    seconds is an `InputError`; the forecast job passes the recipe's, an analysis none.
    Leads are blended with the extrapolation where the card has `blending` weights
    (`forecasting.blend`), unless `blend` is False (when fitting them)."""
    run = as_run(model, device)
    opts = options or run.options
    contract = run.contract
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    steps = lead_steps(
        run, steps=steps, hours=hours if hours is not None else opts.hours, max_hours=opts.max_hours
    )
    reference = None if now is None else as_time(now)
    if reference is not None:
        frames = frames_until(frames, reference)
    inputs = checked_inputs(frames, run, opts.allow_missing_frames)
    age, warning = input_age(
        inputs.wanted[-1], run.step, reference=reference, max_age=max_input_age
    )
    da = inputs.frames
    tile = tile_for(run.net, (da.sizes["y"], da.sizes["x"]))
    values = frame_values(inputs, run.input_frames)
    timings["read"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    transform, params = card_transform(contract.transform, values.shape[1])
    fills = contract.fills_normalised(values.shape[1])
    no_coverage = ~np.isfinite(values[-1])  # (C, H, W): written back as missing
    x = transforms.normalise_frames(values, transform, params, fills)
    files = input_files(inputs.chosen, checksums)
    template = forecast_template(run, da, steps, inputs.names, inputs.source_units, files, opts)
    fields = [n for n, v in template.data_vars.items() if v.dims[-2:] == ("y", "x")]  # output
    timings["prepare"] = time.perf_counter() - t1

    mix = _mixer(run, values, blend)

    def leads() -> Iterator[dict[str, np.ndarray]]:
        stream = predict(
            run.net, x, steps, tile=tile, overlap=opts.tile_overlap, batch=opts.tile_batch,
            device=run.device,
        )  # fmt: skip
        timings["model"] = 0.0
        for k in range(1, steps + 1):
            t2 = time.perf_counter()
            lead = next(stream)
            phys = np.asarray(transforms.denormalise_frames(lead, transform, params), np.float32)
            phys[no_coverage] = np.nan  # before the blend: its filter mixes covered pixels only
            phys = mix(k, phys, steps)
            timings["model"] += time.perf_counter() - t2
            yield {name: phys[c] for c, name in enumerate(fields)}

    info = {
        "steps": steps,
        "reference_time": fmt(inputs.wanted[-1]),
        "tiles": None if tile is None else list(tile),
        "grid": [int(da.sizes["y"]), int(da.sizes["x"])],
        "device": str(run.device),
        "filled_frames": int(run.input_frames - da.sizes["time"]),
        "input_age_seconds": round(age, 3),
        "stale": warning is not None,
        "warnings": [] if warning is None else [warning],
    }
    return Plan(template, leads(), [i["path"] for i in files], timings, info)


def _mixer(run: Run, values: np.ndarray, blend: bool):
    """The card's blend (`forecasting.blend`); without one, the model's leads as they
    are, and the motion code (scipy, scikit-image) is not even imported."""
    if not blend or run.card.get("blending") is None:
        return lambda k, lead, steps: lead
    from stforecast.forecasting import blend as blending

    return blending.mixer(blending.from_card(run.card, run.path), values)


def lead_steps(
    run: Run,
    *,
    steps: int | None = None,
    hours: float | None = None,
    max_hours: float | None = None,
) -> int:
    """Lead times to forecast: `steps`, else `hours` at the model's step, else its horizon.
    More than `max_hours` (default: the run's `[forecast] max_hours`) is a `ConfigError` before
    anything runs: a slip of the finger must not hold the output's lock for hours."""
    if steps is not None and hours is not None:
        raise ConfigError("give hours or steps, not both")
    n = _lead_steps(run, steps, hours, max_hours)
    most = getattr(run.net, "max_steps", None)  # an ONNX file of an earlier export
    if most is not None and n > most:
        raise ConfigError(
            f"{run.path} forecasts at most {most} leads, not {n}: export it again with this "
            "version of stforecast (any number of leads)"
        )
    return n


def _lead_steps(run: Run, steps: int | None, hours: float | None, max_hours: float | None) -> int:
    limit = run.options.max_hours if max_hours is None else max_hours
    if steps is not None:
        if steps < 1:
            raise ConfigError(f"steps must be at least 1, got {steps}")
        _within_limit(run, steps * run.step, limit, f"{steps} steps of {iso_duration(run.step)}")
        return int(steps)
    if hours is not None:
        if not hours > 0:
            raise ConfigError(f"hours must be positive, got {hours}")
        _within_limit(run, hours * 3600, limit, f"{hours:g} hours")
        n = hours * 3600 / run.step
        if not math.isclose(n, round(n), abs_tol=1e-9) or round(n) < 1:
            raise ConfigError(
                f"{hours:g} hours is not a whole number of the model's "
                f"{iso_duration(run.step)} steps"
            )
        return round(n)
    return run.contract.output_frames


def _within_limit(run: Run, seconds: float, max_hours: float, asked: str) -> None:
    """Refuse lead times beyond `max_hours`, unless within the model's own horizon."""
    horizon = run.contract.output_frames * run.step
    if seconds <= max(max_hours * 3600, horizon):
        return
    where = "the run's recipe"
    if run.path is not None:  # an exported file: the recipe of the run it came from
        where = f"{run.path / RECIPE}" if run.path.is_dir() else f"the recipe of {run.path}'s run"
    raise ConfigError(
        f"{asked} is more than the longest lead time allowed, max_hours = {max_hours:g} h; "
        f"forecast less, or raise max_hours in the [forecast] section of {where}"
    )


def card_transform(entry: Transform, channels: int):
    """The transform of a data contract and its parameters, one set per channel."""
    per_channel = entry.per_channel(channels)
    transform, _ = transforms.from_dict({**entry.to_dict(), "params": per_channel[0]})
    return transform, per_channel


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
