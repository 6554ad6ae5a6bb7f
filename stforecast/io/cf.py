"""The CF-1.10 / ACDD-1.3 vocabulary of a forecast file, in one place.

The forecast template (`stforecast.forecasting.template`) is built with these names and
attributes, and the writers (`netcdf_write`, `geotiff_write`) complete a template with the same
ones, so the two never disagree about what a forecast file says. The template carries what the
forecast knows (its lead times, grid, units, provenance); the writers add the encoding (time
units, calendar, fill value, `coordinates`) and fill in, for templates built elsewhere, what the
template left out.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from stforecast.io.times import EPOCH, iso_time

CONVENTIONS = "CF-1.10, ACDD-1.3"
FILL_VALUE = np.float32(-9999.0)  # why not NaN: see `stforecast.io.write`
TIME_UNITS = "seconds since 1970-01-01 00:00:00"
CALENDAR = "proleptic_gregorian"
GRID_MAPPING = "crs"  # the name of the grid-mapping variable
LEAD_COORDS = ("forecast_period", "forecast_reference_time")
COVERAGE_CONTENT_TYPE = "modelResult"  # ACDD-1.3, for every forecast variable

# Attributes that describe an encoding, not the data: never copied from a template.
ENCODING_ATTRS = frozenset(
    {
        "_FillValue",
        "missing_value",
        "scale_factor",
        "add_offset",
        "_Unsigned",
        "coordinates",
        "grid_mapping",
        "units",
        "calendar",
        "dtype",
        "chunksizes",
        "zlib",
        "complevel",
        "shuffle",
        "contiguous",
    }
)
FILL_ATTRS = frozenset({"_FillValue", "missing_value"})

# ---------------------------------------------------------------------------- lead coordinates

# What the forecast template puts on its lead coordinates.
TEMPLATE_COORDS: dict[str, dict[str, str]] = {
    "time": {"standard_name": "time", "long_name": "valid time", "axis": "T"},
    "forecast_period": {"standard_name": "forecast_period", "long_name": "lead time"},
    "forecast_reference_time": {"standard_name": "forecast_reference_time"},
}

# What a file's lead coordinates get: a long name where the template gives none, then the
# names and the encoding, always.
_FILE_COORDS: dict[str, tuple[dict[str, str], dict[str, str]]] = {
    "time": (
        {"long_name": "valid time"},
        {"standard_name": "time", "axis": "T", "units": TIME_UNITS, "calendar": CALENDAR},
    ),
    "forecast_reference_time": (
        {"long_name": "forecast reference time (valid time of the last input frame)"},
        {"standard_name": "forecast_reference_time", "units": TIME_UNITS, "calendar": CALENDAR},
    ),
    "forecast_period": (
        {"long_name": "forecast period (lead time)"},
        {"standard_name": "forecast_period", "units": "s"},
    ),
}


def lead_coord_attrs(name: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """The attributes a file gives lead coordinate `name` (`time`, `forecast_period` or
    `forecast_reference_time`) whose template attributes are `given`."""
    default, fixed = _FILE_COORDS[name]
    return {**default, **file_attrs(given, skip=ENCODING_ATTRS), **fixed}


# ---------------------------------------------------------------------------- grid coordinates

# Per kind of grid (longitude/latitude, projected, or pixel indices without a CRS) and axis.
AXES: dict[tuple[str, str], dict[str, str]] = {
    ("lonlat", "X"): {"standard_name": "longitude", "units": "degrees_east"},
    ("lonlat", "Y"): {"standard_name": "latitude", "units": "degrees_north"},
    ("projected", "X"): {"standard_name": "projection_x_coordinate", "units": "m"},
    ("projected", "Y"): {"standard_name": "projection_y_coordinate", "units": "m"},
    ("pixel", "X"): {"long_name": "column", "units": "1"},
    ("pixel", "Y"): {"long_name": "row", "units": "1"},
}


def template_axis_attrs(kind: str, axis: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """A template's `x` (axis "X") or `y` ("Y") attributes on a grid of `kind`, from the
    input's `given` ones: longitude/latitude replace them; a projected or pixel grid keeps them
    over the defaults."""
    if kind == "lonlat":
        return {**AXES[kind, axis], "axis": axis}
    return {**AXES[kind, axis], **given, "axis": axis}


def file_axis_attrs(
    given: Mapping[str, Any], axis: str, mapping: Mapping[str, Any] | None
) -> dict[str, Any]:
    """A file's 1-D grid coordinate attributes, with `axis` and CF's standard_name and units
    filled in where the template lacks them. A grid without a CRS (pixel coordinates) gets no
    standard_name and no `axis`: CF's X/Y axes are georeferenced horizontal coordinates, and
    the compliance checker fails X/Y axes that are neither latitude/longitude nor tied to a
    grid mapping."""
    out = file_attrs(given, skip=FILL_ATTRS)
    if mapping is None:
        out.pop("axis", None)
        return out
    kind = "lonlat" if mapping.get("grid_mapping_name") == "latitude_longitude" else "projected"
    for key, value in AXES[kind, axis].items():
        out.setdefault(key, value)
    out.setdefault("axis", axis)
    return out


def grid_mapping_attrs(crs_wkt: str) -> dict[str, Any]:
    """The grid-mapping variable's attributes for a CRS: CF's parameters and the WKT as given."""
    import pyproj

    crs = pyproj.CRS.from_wkt(crs_wkt)
    attrs = {k: v for k, v in crs.to_cf().items() if v is not None}
    attrs["crs_wkt"] = crs_wkt
    return attrs


def is_lonlat(crs_wkt: str) -> bool:
    import pyproj

    return pyproj.CRS.from_wkt(crs_wkt).is_geographic


# ---------------------------------------------------------------------------- the variables

# CF standard names and long names by the quantity a unit measures (`data.units.quantity`).
STANDARD_NAMES = {
    "rate": "lwe_precipitation_rate",
    "reflectivity": "equivalent_reflectivity_factor",
    "accumulation": "lwe_thickness_of_precipitation_amount",
}
LONG_NAMES = {
    "rate": "precipitation rate",
    "accumulation": "precipitation amount per time step",
    "reflectivity": "equivalent reflectivity factor",
}


def field_attrs(
    given: Mapping[str, Any], coordinates: str, grid_mapping: str | None
) -> dict[str, Any]:
    """A forecast variable's attributes in a file: the template's (units included), ACDD's
    `coverage_content_type` unless given, `coordinates` and `grid_mapping`."""
    attrs = file_attrs(given, skip=ENCODING_ATTRS - {"units"})
    attrs.setdefault("coverage_content_type", COVERAGE_CONTENT_TYPE)
    attrs["coordinates"] = coordinates
    if grid_mapping is not None:
        attrs["grid_mapping"] = grid_mapping
    return attrs


def global_attrs(given: Mapping[str, Any], valid_ns: np.ndarray) -> dict[str, Any]:
    """A file's global attributes: the template's, with the conventions and the time coverage
    filled in where it has none."""
    attrs = file_attrs(given, numeric_lists=False)
    attrs.setdefault("Conventions", CONVENTIONS)
    if len(valid_ns):
        attrs.setdefault("time_coverage_start", iso_time(int(valid_ns[0])))
        attrs.setdefault("time_coverage_end", iso_time(int(valid_ns[-1])))
    return attrs


# ---------------------------------------------------------------------------- what a forecast is

SOURCE_PREFIX = "stforecast"  # the `source` of every forecast template starts with it


def is_forecast_metadata(attrs: Mapping[str, Any], has_reference_time: bool) -> bool:
    """Whether a file's global attributes (GeoTIFF: file tags, with `TIFFTAG_SOFTWARE` for
    `source`) are a stforecast forecast's: `source` from stforecast, a `provenance` and a
    forecast reference time. Input archives written by stforecast (synthetic data) have the
    `source` but neither of the others."""
    source = str(attrs.get("source", attrs.get("TIFFTAG_SOFTWARE", "")))
    return source.startswith(SOURCE_PREFIX) and "provenance" in attrs and has_reference_time


# ---------------------------------------------------------------------------- attribute values


def json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def file_value(value: Any, numeric_lists: bool) -> Any:
    """A value netCDF can store: strings and numbers as they are, lists and dicts as JSON text
    (numeric lists as arrays when `numeric_lists`: CF wants e.g. `standard_parallel` numeric),
    booleans as JSON `true`/`false`; None is dropped."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, np.bool_)):
        return json.dumps(bool(value))
    if isinstance(value, (int, float, np.integer, np.floating)):
        return value
    if isinstance(value, np.datetime64):
        return iso_time(int((value.astype("datetime64[ns]") - EPOCH).astype(np.int64)))
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return file_value(value[()], numeric_lists)
    if isinstance(value, (list, tuple, np.ndarray)):
        array = np.asarray(value) if len(value) else None
        numeric = array is not None and array.ndim == 1 and array.dtype.kind in "iuf"
        if numeric and (numeric_lists or isinstance(value, np.ndarray)):
            return array
    if isinstance(value, (list, tuple, dict, np.ndarray)):
        return json.dumps(value, default=json_default)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def file_attrs(
    attrs: Mapping[str, Any], numeric_lists: bool = True, skip: Iterable[str] = ()
) -> dict[str, Any]:
    """`attrs` as a file stores them (`file_value`), without the `skip` keys and None values."""
    skip = set(skip)
    out = {}
    for key, value in attrs.items():
        if key in skip:
            continue
        value = file_value(value, numeric_lists)
        if value is not None:
            out[str(key)] = value
    return out
