"""The CF layout of a forecast: coordinates, grid mapping, variable and global attributes, and
the provenance, with lazy zeros for the values (the leads come later, one at a time).

The names and attributes come from `stforecast.io.cf`, the vocabulary the writers complete the
file with; this module decides what the forecast knows: which grid (placed in a CRS or not),
which units and standard names after the card's conversion, which model and inputs.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import numpy as np
import xarray as xr

from stforecast import __version__
from stforecast.config import ForecastConfig
from stforecast.data import units
from stforecast.data.windows import fmt
from stforecast.io import cf
from stforecast.io.grid import geotransform, pixel_space
from stforecast.io.times import iso_duration
from stforecast.rundir.load import Run, loaded_weights

__all__ = ["forecast_template", "provenance"]


def forecast_template(
    run: Run,
    da: xr.DataArray,
    steps: int,
    names: list[str],
    source_units: str,
    inputs: list[dict[str, Any]],
    opts: ForecastConfig,
) -> xr.Dataset:
    """The forecast's CF layout for `steps` leads after the newest frame of `da` (the inputs on
    the model's grid), with lazy zeros for the values."""
    step = run.step
    reference = np.datetime64(da["time"].values[-1], "ns")
    period = np.arange(1, steps + 1) * np.timedelta64(step, "s").astype("timedelta64[ns]")
    valid = reference + period
    crs_wkt = da.attrs.get("crs_wkt", "")
    # A CRS without coordinates (KNMI) cannot place the grid: the file says so instead of
    # claiming positions in it (a GIS would put pixel indices near the CRS's origin)
    unplaced = crs_wkt if pixel_space(da["x"].attrs) or pixel_space(da["y"].attrs) else ""
    if unplaced:
        crs_wkt = ""

    data_vars = _fields(run, da, steps, names, source_units, bool(crs_wkt))
    if crs_wkt:
        data_vars[cf.GRID_MAPPING] = ((), np.int32(0), cf.grid_mapping_attrs(crs_wkt))
    attrs = _global_attrs(run, da, names, inputs, opts, reference, valid)
    if unplaced:
        attrs["source_crs_wkt"] = unplaced
        attrs["comment"] = (
            "x and y are pixel indices of the source grid: its file names a CRS "
            "(source_crs_wkt) but no coordinates, so the forecast is not georeferenced"
        )
    kind = "pixel" if not crs_wkt else "lonlat" if cf.is_lonlat(crs_wkt) else "projected"
    lead = {name: dict(attrs) for name, attrs in cf.TEMPLATE_COORDS.items()}
    y_attrs = cf.template_axis_attrs(kind, "Y", dict(da["y"].attrs))
    x_attrs = cf.template_axis_attrs(kind, "X", dict(da["x"].attrs))
    coords = {
        "time": ("time", valid, lead["time"]),
        "forecast_period": ("time", period, lead["forecast_period"]),
        "forecast_reference_time": ((), reference, lead["forecast_reference_time"]),
        "y": ("y", da["y"].values.astype(np.float64), y_attrs),
        "x": ("x", da["x"].values.astype(np.float64), x_attrs),
    }
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def _fields(
    run: Run, da: xr.DataArray, steps: int, names: list[str], source_units: str, mapped: bool
) -> dict[str, Any]:
    """One `(time, y, x)` variable per channel, in the card's units, with lazy zeros."""
    target_units = run.contract.units
    channel_units = list(run.contract.channel_units or [target_units] * len(names))
    standard = _standard_name(da.attrs, source_units, target_units)
    long_names = da.attrs.get("channel_long_names") or [da.attrs.get("long_name", "")] * len(names)
    if not units.equivalent(source_units, target_units):  # the source's name no longer fits
        quantity = units.quantity(target_units) or ""
        long_names = [cf.LONG_NAMES.get(quantity, n) for n in long_names]
    data_vars: dict[str, Any] = {}
    for name, long_name, unit in zip(names, long_names, channel_units, strict=True):
        attrs = {"units": unit, "long_name": long_name or name}
        if standard and len(names) == 1:
            attrs["standard_name"] = standard
        if mapped:
            attrs["grid_mapping"] = cf.GRID_MAPPING
        shape_only = np.broadcast_to(np.float32(0), (steps, da.sizes["y"], da.sizes["x"]))
        data_vars[name] = (("time", "y", "x"), shape_only, attrs)
    return data_vars


def _standard_name(attrs: dict[str, Any], source_units: str, target_units: str) -> str | None:
    """The source's standard name when the units are unchanged; else the one the new units
    mean (an accumulation converted to a rate is a precipitation rate)."""
    if units.equivalent(source_units, target_units):
        return attrs.get("standard_name")
    quantity = units.quantity(target_units)
    if quantity == "temperature":
        return attrs.get("standard_name")
    return cf.STANDARD_NAMES.get(quantity or "")


def _global_attrs(
    run: Run,
    da: xr.DataArray,
    names: list[str],
    inputs: list[dict[str, Any]],
    opts: ForecastConfig,
    reference: np.datetime64,
    valid: np.ndarray,
) -> dict[str, Any]:
    """ACDD's discovery attributes, the provenance and the geotransform."""
    step = run.step
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    model_name = run.card["architecture"].get("name", "model")
    store = run.contract.store or "prepared data"
    return {
        "Conventions": cf.CONVENTIONS,
        "title": opts.title or f"{names[0]} nowcast by {model_name}",
        "summary": (
            f"{len(valid)} lead times every {iso_duration(step)} from {fmt(reference)}, "
            f"{model_name} trained by stforecast on {store}"
        ),
        "institution": opts.institution,
        "source": f"{cf.SOURCE_PREFIX} {__version__}, model {model_name}",
        "history": f"{now.isoformat()} stforecast {__version__} forecast",
        "date_created": now.isoformat(),
        "time_coverage_start": fmt(valid[0]),
        "time_coverage_end": fmt(valid[-1]),
        "time_coverage_resolution": iso_duration(step),
        "forecast_reference_time": fmt(reference),
        "product_version": __version__,
        "keywords": "nowcast, spatiotemporal forecast, " + model_name,
        "provenance": json.dumps(provenance(run, inputs, now), sort_keys=True),
        "geotransform": [float(v) for v in da.attrs.get("transform", [])]
        or geotransform(da["y"].values.astype(float), da["x"].values.astype(float)),
    }


def provenance(run: Run, inputs: list[dict[str, Any]], now: dt.datetime) -> dict[str, Any]:
    """Which model (run, weights, card), recipe, inputs and software made the forecast."""
    card = run.card
    weights = loaded_weights(card)
    prov = {
        "model": {
            "run": str(run.path) if run.path else None,
            "architecture": card["architecture"].get("name", "model"),
            "weights": weights["label"],
            "weights_sha256": weights["sha256"],
            "card_created": card.get("created"),
        },
        "recipe_sha256": run.recipe_sha256,
        "inputs": inputs,
        "software": {"stforecast": __version__, **card.get("software", {})},
        "created": now.isoformat(),
    }
    prov["software"]["stforecast"] = __version__  # the version that wrote the file
    return prov
