"""The CF layout of a forecast: coordinates, grid mapping, variable and global attributes, and
the provenance, with lazy zeros for the values (the leads come later, one at a time).

The names and attributes come from `stforecast.io.cf`, the vocabulary the writers complete the
file with; this module decides what the forecast knows: which grid (placed in a CRS or not, with
2-D latitude and longitude when the recipe asks), which names, units, standard names and cell
methods after the card's conversion, which model and inputs, and what a catalogue shows (ACDD's
discovery attributes: the recipe's `[forecast]` fields, else the input's `institution`,
`license`, `references` and `source`). The writers add what depends on the file: the grid's
geospatial extent, time bounds, and provenance paths relative to the file.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from stforecast import __version__
from stforecast.config import ForecastConfig
from stforecast.data import units
from stforecast.data.windows import fmt
from stforecast.errors import ConfigError
from stforecast.io import cf
from stforecast.io.grid import geotransform, pixel_space
from stforecast.io.times import iso_duration
from stforecast.rundir.load import Run, loaded_weights

__all__ = ["forecast_template", "output_names", "provenance"]

# What every forecast says about its values, whatever the model (ACDD `comment`).
COMMENT = (
    "lead k is the model's forecast for k time steps after forecast_reference_time (the valid "
    "time of the newest input frame); missing where the newest input frame had no value"
)
# Global attributes stforecast computes: `[forecast] attributes` cannot replace them.
COMPUTED = frozenset(
    {
        "Conventions", "source", "history", "date_created", "date_issued", "date_modified",
        "date_metadata_modified",
        "time_coverage_start", "time_coverage_end", "time_coverage_duration",
        "time_coverage_resolution", "forecast_reference_time", "product_version",
        "standard_name_vocabulary", "provenance", "geotransform", "source_crs_wkt",
    }
)  # fmt: skip


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
    the model's grid), with lazy zeros for the values. Its variables are named by
    `output_names` (`[forecast] variable_name`, else the input's)."""
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

    out = output_names(run, da.attrs, names, source_units, opts)
    data_vars = _fields(run, da, steps, out, source_units, bool(crs_wkt))
    if crs_wkt:
        data_vars[cf.GRID_MAPPING] = ((), np.int32(0), cf.grid_mapping_attrs(crs_wkt))
    attrs = _global_attrs(run, da, out, inputs, opts, reference, valid)
    if unplaced:
        attrs["source_crs_wkt"] = unplaced
        attrs["comment"] = (
            f"{attrs['comment']}; x and y are pixel indices of the source grid: its file names "
            "a CRS (source_crs_wkt) but no coordinates, so the forecast is not georeferenced"
        )
    kind = "pixel" if not crs_wkt else "lonlat" if cf.is_lonlat(crs_wkt) else "projected"
    lead = {name: dict(attrs) for name, attrs in cf.TEMPLATE_COORDS.items()}
    y, x = da["y"].values.astype(np.float64), da["x"].values.astype(np.float64)
    coords: dict[str, Any] = {
        "time": ("time", valid, lead["time"]),
        "forecast_period": ("time", period, lead["forecast_period"]),
        "forecast_reference_time": ((), reference, lead["forecast_reference_time"]),
        "y": ("y", y, cf.template_axis_attrs(kind, "Y", dict(da["y"].attrs))),
        "x": ("x", x, cf.template_axis_attrs(kind, "X", dict(da["x"].attrs))),
    }
    # A model of `data.spacing` is written back on the input's grid: `forecasting.regrid`
    # computes these again for that grid.
    if opts.latlon and kind == "projected":
        lat, lon = cf.latlon(crs_wkt, y, x)
        coords["lat"] = (("y", "x"), lat, dict(cf.LATLON_ATTRS["lat"]))
        coords["lon"] = (("y", "x"), lon, dict(cf.LATLON_ATTRS["lon"]))
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def output_names(
    run: Run, attrs: dict[str, Any], names: list[str], source_units: str, opts: ForecastConfig
) -> list[str]:
    """The forecast variables' names, one per channel: `[forecast] variable_name` (a name, or
    a list of one per channel), else the input's variables' names, made CF-safe, with a
    raster's `band_data` named by the quantity (`precipitation_rate`)."""
    given = opts.variable_name
    if given is None:
        channel_units = run.contract.channel_units or [run.contract.units] * len(names)
        standard = _standard_name(attrs, source_units, run.contract.units)
        return [
            cf.variable_name(n, units.quantity(u), standard if len(names) == 1 else None)
            for n, u in zip(names, channel_units, strict=True)
        ]
    wanted = [given] if isinstance(given, str) else list(given)
    if len(wanted) != len(names):
        raise ConfigError(
            f"[forecast] variable_name: {len(wanted)} name(s) for the model's {len(names)} "
            f"variable(s) {', '.join(names)}: give one name per channel"
        )
    clash = sorted(set(wanted) & cf.RESERVED_NAMES) or sorted(
        {n for n in wanted if wanted.count(n) > 1}
    )
    if clash:
        raise ConfigError(
            f"[forecast] variable_name: {clash[0]!r} is taken (by another variable, or by a "
            f"coordinate of the file: {', '.join(sorted(cf.RESERVED_NAMES))})"
        )
    return wanted


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
        methods = _cell_methods(source_units if len(names) == 1 else "", unit)
        if methods:
            attrs["cell_methods"] = methods
        if mapped:
            attrs["grid_mapping"] = cf.GRID_MAPPING
        shape_only = np.broadcast_to(np.float32(0), (steps, da.sizes["y"], da.sizes["x"]))
        data_vars[name] = (("time", "y", "x"), shape_only, attrs)
    return data_vars


def answered(attrs: dict[str, Any], target_units: str) -> dict[str, Any]:
    """A forecast variable's attributes once its values are in `target_units` (a general
    model answering in the input's units): units, names and cell methods to match."""
    quantity = units.quantity(target_units) or ""
    out = {**attrs, "units": target_units, "long_name": cf.LONG_NAMES.get(quantity, attrs.get(
        "long_name", ""))}  # fmt: skip
    out.pop("cell_methods", None)
    out.pop("standard_name", None)
    if cf.STANDARD_NAMES.get(quantity):
        out["standard_name"] = cf.STANDARD_NAMES[quantity]
    methods = _cell_methods("", target_units)
    if methods:
        out["cell_methods"] = methods
    return out


def _cell_methods(source_units: str, target_units: str) -> str | None:
    """`time: sum` for an amount per time step; `time: mean` for a rate made from amounts per
    step (the mean rate over the step); None for rates and reflectivities as observed."""
    target = units.quantity(target_units)
    if target == "accumulation":
        return cf.CELL_METHODS["sum"]
    if target == "rate" and units.quantity(source_units) == "accumulation":
        return cf.CELL_METHODS["mean"]
    return None


def _standard_name(attrs: dict[str, Any], source_units: str, target_units: str) -> str | None:
    """The source's standard name when the units are unchanged (or a temperature's); else,
    and where the source has none (ODIM, GeoTIFF), the one the units mean (an accumulation
    converted to a rate is a precipitation rate)."""
    quantity = units.quantity(target_units)
    if units.equivalent(source_units, target_units) or quantity == "temperature":
        return attrs.get("standard_name") or cf.STANDARD_NAMES.get(quantity or "")
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
    store = Path(run.contract.store).name if run.contract.store else "prepared data"
    taken = sorted(set(opts.attributes) & COMPUTED)
    if taken:
        raise ConfigError(
            f"[forecast] attributes: {', '.join(taken)} {'is' if len(taken) == 1 else 'are'} "
            "computed by stforecast; leave it out (for `source`, set [forecast] source)"
        )
    what = da.attrs.get("standard_name") or names[0]
    return {
        "Conventions": cf.CONVENTIONS,
        "title": opts.title or f"{names[0]} nowcast by {model_name}",
        "summary": (
            f"{len(valid)} lead times every {iso_duration(step)} from {fmt(reference)}, "
            f"{model_name} trained by stforecast on {store}"
        ),
        "keywords": f"nowcast, spatiotemporal forecast, {model_name}, {what}",
        "comment": COMMENT,
        "processing_level": "model forecast (nowcast), not quality-controlled",
        **_published(da, inputs, opts, model_name),
        **opts.attributes,
        "history": f"{now.isoformat()} stforecast {__version__} forecast",
        "date_created": now.isoformat(),
        "date_issued": now.isoformat(),
        "date_modified": now.isoformat(),
        "date_metadata_modified": now.isoformat(),
        "time_coverage_start": fmt(valid[0]),
        "time_coverage_end": fmt(valid[-1]),
        "time_coverage_duration": iso_duration(valid[-1] - valid[0]),
        "time_coverage_resolution": iso_duration(step),
        "forecast_reference_time": fmt(reference),
        "product_version": __version__,
        "standard_name_vocabulary": cf.STANDARD_NAME_VOCABULARY,
        "provenance": json.dumps(provenance(run, inputs, now), sort_keys=True),
        "geotransform": [float(v) for v in da.attrs.get("transform", [])]
        or geotransform(da["y"].values.astype(float), da["x"].values.astype(float)),
    }


def _published(
    da: xr.DataArray, inputs: list[dict[str, Any]], opts: ForecastConfig, model_name: str
) -> dict[str, str]:
    """`institution`, `license`, `references` and `source` (after stforecast and the model):
    the recipe's `[forecast]` fields where set, else the newest input file's (its reader's
    attributes, else the file's own global attributes or tags); left out where neither has one."""
    found = cf.published(da.attrs)
    if inputs and len(found) < len(cf.PUBLISHED):
        found = {**cf.input_attrs(inputs[-1]["path"]), **found}
    out = {key: getattr(opts, key) or found.get(key, "") for key in cf.PUBLISHED}
    data = f"; input: {out['source']}" if out["source"] else ""
    out["source"] = f"{cf.SOURCE_PREFIX} {__version__}, model {model_name}{data}"
    return {key: value for key, value in out.items() if value}


def provenance(run: Run, inputs: list[dict[str, Any]], now: dt.datetime) -> dict[str, Any]:
    """Which model (run, weights, card), recipe, inputs and software made the forecast (paths
    as this machine has them: the writers make them relative to the file written)."""
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
    if card.get("pretrained"):  # a shipped model: its name says what it is to a reader
        prov["model"]["pretrained"] = card["pretrained"].get("name")
    prov["software"]["stforecast"] = __version__  # the version that wrote the file
    return prov
