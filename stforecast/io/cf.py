"""The CF-1.10 / ACDD-1.3 vocabulary of a forecast file, in one place.

The forecast template (`stforecast.forecasting.template`) is built with these names and
attributes, and the writers (`netcdf_write`, `geotiff_write`) complete a template with the same
ones, so the two never disagree about what a forecast file says. The template carries what the
forecast knows (its lead times, grid, units, provenance); the writers add the encoding (time
units, calendar, fill value, `coordinates`, time bounds), the grid's ACDD extent, and fill in,
for templates built elsewhere, what the template left out. Here too: a grid's 2-D latitude and
longitude and its extent (pyproj), and the global attributes an input file publishes.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from stforecast.io.times import EPOCH, iso_duration, iso_time

CONVENTIONS = "CF-1.10, ACDD-1.3"
FILL_VALUE = np.float32(-9999.0)  # why not NaN: see `stforecast.io.write`
TIME_UNITS = "seconds since 1970-01-01 00:00:00"
CALENDAR = "proleptic_gregorian"
GRID_MAPPING = "crs"  # the name of the grid-mapping variable
LEAD_COORDS = ("forecast_period", "forecast_reference_time")
COVERAGE_CONTENT_TYPE = "modelResult"  # ACDD-1.3, for every forecast variable
# The table the standard names written are from (the IOOS compliance checker's own, v93).
STANDARD_NAME_VOCABULARY = "CF Standard Name Table v93"

# Attributes that describe an encoding, not the data: never copied from a template.
ENCODING_ATTRS = frozenset(
    {
        "_FillValue", "missing_value", "scale_factor", "add_offset", "_Unsigned", "coordinates",
        "grid_mapping", "units", "calendar", "dtype", "chunksizes", "zlib", "complevel",
        "shuffle", "contiguous",
    }
)  # fmt: skip
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

# Per kind of grid (longitude/latitude, projected, or pixel indices without a CRS) and axis:
# standard name, long name, units.
_NAMED = {
    ("lonlat", "X"): ("longitude", "longitude", "degrees_east"),
    ("lonlat", "Y"): ("latitude", "latitude", "degrees_north"),
    ("projected", "X"): ("projection_x_coordinate", "x coordinate of projection", "m"),
    ("projected", "Y"): ("projection_y_coordinate", "y coordinate of projection", "m"),
}
AXES: dict[tuple[str, str], dict[str, str]] = {
    **{
        k: dict(zip(("standard_name", "long_name", "units"), v, strict=True))
        for k, v in _NAMED.items()
    },
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
    if attrs.get("grid_mapping_name") == "polar_stereographic":
        # CF requires the pole (+90 or -90); pyproj leaves it out of variant B (a standard
        # parallel instead of a scale factor), whose parallel's sign says which pole
        parallel = float(attrs.get("standard_parallel", 90.0))
        attrs.setdefault("latitude_of_projection_origin", 90.0 if parallel >= 0 else -90.0)
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


# A forecast variable's default name by the quantity, where the input's name says nothing:
# GDAL rasters have no variable names (rasterio and rioxarray call a band `band_data`).
VARIABLE_NAMES = {
    "rate": "precipitation_rate",
    "accumulation": "precipitation_amount",
    "reflectivity": "reflectivity",
}
PLACEHOLDER_NAMES = frozenset({"band_data", "__xarray_dataarray_variable__"})
# The names of a forecast file's other variables and dimensions: no forecast variable takes one.
RESERVED_NAMES = frozenset({*_FILE_COORDS, "x", "y", "lat", "lon", GRID_MAPPING, "time_bnds", "nv"})


def variable_name(name: str, quantity: str | None, standard_name: str | None) -> str:
    """A forecast variable's default name: the input's (made a NetCDF/CF-safe identifier:
    letters, digits, underscores, a letter first); for a placeholder such as `band_data`, the
    name of the quantity (`precipitation_rate`), else the standard name, else `forecast`."""
    if name in PLACEHOLDER_NAMES:
        name = VARIABLE_NAMES.get(quantity or "") or standard_name or "forecast"
    name = re.sub(r"[^A-Za-z0-9_]", "_", name) or "forecast"
    name = name if name[0].isalpha() else f"v{name}"
    return f"{name}_forecast" if name in RESERVED_NAMES else name


# CF `cell_methods` of values over the time step that ends at the valid time: an amount per step
# is the sum over it; a rate from amounts per step is the mean rate over it.
CELL_METHODS = {"sum": "time: sum", "mean": "time: mean"}
TIME_BOUNDS, BOUNDS_DIM = "time_bnds", "nv"


def has_time_bounds(attrs: Mapping[str, Any]) -> bool:
    """Whether a variable's `cell_methods` make its values stand for time intervals (CF 7.3:
    such cells want bounds): any method along `time` other than `point`."""
    methods = str(attrs.get("cell_methods", ""))
    return any(m.strip() and m.strip() != "point" for m in re.findall(r"\btime:\s*(\w+)", methods))


def time_bounds_ns(valid_ns: np.ndarray, reference_ns: int) -> np.ndarray:
    """`(n, 2)` bounds of the leads: each from the previous valid time (the reference time for
    the first) to its own, as int64 ns since the epoch."""
    valid = np.asarray(valid_ns, dtype=np.int64)
    lower = np.concatenate([[np.int64(reference_ns)], valid[:-1]])
    return np.stack([lower, valid], axis=1)


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


def global_attrs(
    given: Mapping[str, Any], valid_ns: np.ndarray, geospatial: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A file's global attributes: the template's, with the conventions and the time coverage
    filled in where it has none, and the `geospatial` extent of the grid written (which
    replaces a template's: the grid may have changed since, as on the input's own grid)."""
    attrs = file_attrs(given, numeric_lists=False)
    attrs.setdefault("Conventions", CONVENTIONS)
    if len(valid_ns):
        attrs.setdefault("time_coverage_start", iso_time(int(valid_ns[0])))
        attrs.setdefault("time_coverage_end", iso_time(int(valid_ns[-1])))
        span = np.timedelta64(int(valid_ns[-1]) - int(valid_ns[0]), "ns")
        attrs.setdefault("time_coverage_duration", iso_duration(span))
    attrs.update(geospatial or {})
    return attrs


def grid_geospatial(template: Any, ydim: str, xdim: str, grid_mapping: str | None) -> dict:
    """`geospatial_attrs` of a template's grid (with its 2-D `lat`/`lon` where it has them);
    {} without a grid mapping (pixel indices) or with a CRS pyproj cannot place."""
    if grid_mapping is None:
        return {}
    import pyproj

    from stforecast.io.crs import wkt_from_cf

    mapping = template[grid_mapping].attrs
    two_d = [n for n in ("lat", "lon") if n in template.coords and template[n].ndim == 2]
    lat, lon = (template[n].values for n in ("lat", "lon")) if len(two_d) == 2 else (None, None)
    try:
        return geospatial_attrs(
            wkt_from_cf(mapping), template[ydim].values, template[xdim].values, lat, lon
        )
    except (pyproj.exceptions.CRSError, pyproj.exceptions.ProjError, ValueError):
        return {}


# ---------------------------------------------------------------------------- where it is (ACDD)

LATLON_ATTRS = {
    "lat": {"standard_name": "latitude", "long_name": "latitude", "units": "degrees_north"},
    "lon": {"standard_name": "longitude", "long_name": "longitude", "units": "degrees_east"},
}
_WGS84 = "EPSG:4326"  # ACDD's default geospatial_bounds_crs


def _to_lonlat(crs_wkt: str) -> Any:
    import pyproj

    return pyproj.Transformer.from_crs(pyproj.CRS.from_wkt(crs_wkt), _WGS84, always_xy=True)


def latlon(crs_wkt: str, y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """2-D `(lat, lon)` (float32, WGS 84 degrees) of the cell centres `y`, `x` in `crs_wkt`."""
    xx, yy = np.meshgrid(np.asarray(x, np.float64), np.asarray(y, np.float64))
    lon, lat = _to_lonlat(crs_wkt).transform(xx, yy)
    return np.asarray(lat, np.float32), np.asarray(lon, np.float32)


def geospatial_attrs(
    crs_wkt: str,
    y: np.ndarray,
    x: np.ndarray,
    lat: np.ndarray | None = None,
    lon: np.ndarray | None = None,
) -> dict[str, Any]:
    """ACDD's horizontal extent of a grid of cell centres `y`, `x` in `crs_wkt`: the lat/lon
    range of the centres (of `lat`/`lon` when given: the file's own values; else the centres'
    box, densified by pyproj, poles included; lon_min > lon_max across the antimeridian),
    their units and resolution, and `geospatial_bounds`, the outline of the cells as a WKT
    polygon of `lat lon` points in EPSG:4326 (left out where it would wrap: a pole inside,
    or the antimeridian)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    lonlat = is_lonlat(crs_wkt)
    if lat is not None and lon is not None:
        box = (np.nanmin(lon), np.nanmin(lat), np.nanmax(lon), np.nanmax(lat))
    elif lonlat:
        box = (x.min(), y.min(), x.max(), y.max())
    else:
        box = _to_lonlat(crs_wkt).transform_bounds(x.min(), y.min(), x.max(), y.max(), 21)
    if not np.isfinite(box).all():  # a CRS that does not reach the Earth's lon/lat
        return {}
    dy, dx = (abs(float(np.diff(v).mean())) if v.size > 1 else 0.0 for v in (y, x))
    unit = "degrees" if lonlat else "m"
    attrs: dict[str, Any] = {
        "geospatial_lat_min": float(box[1]),
        "geospatial_lat_max": float(box[3]),
        "geospatial_lon_min": float(box[0]),
        "geospatial_lon_max": float(box[2]),
        "geospatial_lat_units": "degrees_north",
        "geospatial_lon_units": "degrees_east",
        "geospatial_lat_resolution": f"{dy:g} {unit}",
        "geospatial_lon_resolution": f"{dx:g} {unit}",
    }
    outline = _outline(crs_wkt, y, x, dy, dx, lonlat)
    if outline:
        attrs.update(geospatial_bounds=outline, geospatial_bounds_crs=_WGS84)
    return attrs


def _outline(
    crs_wkt: str, y: np.ndarray, x: np.ndarray, dy: float, dx: float, lonlat: bool
) -> str | None:
    """The cells' outline as `POLYGON ((lat lon, ...))`, 8 points per side; None if it wraps."""
    x0, x1 = x.min() - dx / 2, x.max() + dx / 2
    y0, y1 = y.min() - dy / 2, y.max() + dy / 2
    t = np.linspace(0.0, 1.0, 8, endpoint=False)
    ring_x = np.concatenate(
        [x0 + (x1 - x0) * t, np.full(8, x1), x1 - (x1 - x0) * t, np.full(8, x0)]
    )
    ring_y = np.concatenate(
        [np.full(8, y0), y0 + (y1 - y0) * t, np.full(8, y1), y1 - (y1 - y0) * t]
    )
    if lonlat:
        lon, lat = ring_x, ring_y
    else:
        transformer = _to_lonlat(crs_wkt)
        lon, lat = (np.asarray(v) for v in transformer.transform(ring_x, ring_y))
        pole_x, pole_y = transformer.transform([0.0, 0.0], [90.0, -90.0], direction="INVERSE")
        inside = (x0 <= np.asarray(pole_x)) & (np.asarray(pole_x) <= x1)
        if (inside & (y0 <= np.asarray(pole_y)) & (np.asarray(pole_y) <= y1)).any():
            return None
    if not (np.isfinite(lon).all() and np.isfinite(lat).all()) or np.ptp(lon) > 180:
        return None
    points = [f"{a:.6f} {b:.6f}" for a, b in zip(lat, lon, strict=True)]
    return f"POLYGON (({', '.join([*points, points[0]])}))"


# ---------------------------------------------------------------------------- from the inputs

# Global attributes of an input that a forecast of it publishes (`licence` as ACDD's `license`).
PUBLISHED = ("institution", "license", "source", "references")
_SPELLINGS = {"licence": "license"}


def published(attrs: Mapping[str, Any]) -> dict[str, str]:
    """The `PUBLISHED` attributes among `attrs` (GDAL's `NC_GLOBAL#name` tags too), as
    non-empty text."""
    out: dict[str, str] = {}
    for key, value in attrs.items():
        name = str(key).removeprefix("NC_GLOBAL#").lower()
        name = _SPELLINGS.get(name, name)
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if name in PUBLISHED and isinstance(value, str) and value.strip():
            out.setdefault(name, value.strip())
    return out


def input_attrs(path: str | os.PathLike[str]) -> dict[str, str]:
    """The `published` global attributes of an input file: NetCDF's (and any HDF5 file's root
    attributes: ODIM's), GeoTIFF's and other GDAL rasters' file tags; {} where there are none
    or the file cannot be read (metadata never fails a forecast)."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            magic = f.read(8)
    except OSError:
        return {}
    try:
        if magic.startswith(b"CDF"):
            return published(_netcdf_attrs(name))
        if magic.startswith(b"\x89HDF"):
            return published(_hdf5_attrs(name))
        if magic.startswith(b"\x1f\x8b"):  # gzip: GDAL reads GRIB and GeoTIFF through it
            name = "/vsigzip/" + name
        return published(_gdal_tags(name))
    except Exception:  # a file the reader took may still fail here: no metadata, no failure
        return {}


def _netcdf_attrs(name: str) -> dict[str, Any]:
    import netCDF4

    from stforecast.io.netcdf import LOCK

    with LOCK, netCDF4.Dataset(name) as nc:
        return {k: nc.getncattr(k) for k in nc.ncattrs()}


def _hdf5_attrs(name: str) -> dict[str, Any]:
    import h5py

    from stforecast.io.netcdf import LOCK

    with LOCK, h5py.File(name, "r") as f:
        return {k: f.attrs[k] for k in f.attrs}


def _gdal_tags(name: str) -> dict[str, Any]:
    import warnings

    import rasterio

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.Env(GDAL_PAM_ENABLED="NO"), rasterio.open(name) as src:
            return dict(src.tags())


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
