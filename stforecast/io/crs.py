"""Coordinate reference systems from the many places files keep them, as WKT2 through pyproj.

pyproj does the understanding; this module only finds the text and the CF attributes and fixes
the one known quirk (semi-axes written in kilometres, as in KNMI's proj strings).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping

import numpy as np
import pyproj
from pyproj.exceptions import CRSError

# Attributes of a CF grid-mapping variable that carry a full definition, in order of trust.
_TEXT_KEYS = ("crs_wkt", "spatial_ref", "proj4", "proj4text", "proj4_params", "proj_params")
# Attributes on a data variable or the file that sometimes hold a proj string or WKT.
_LOOSE_KEYS = ("crs_wkt", "spatial_ref", "proj4", "proj4text", "proj4_params", "projection", "crs")

_LENGTH_UNITS = {
    "m": 1.0,
    "metre": 1.0,
    "metres": 1.0,
    "meter": 1.0,
    "meters": 1.0,
    "km": 1000.0,
    "kilometre": 1000.0,
    "kilometres": 1000.0,
    "kilometer": 1000.0,
    "kilometers": 1000.0,
}


@functools.lru_cache(maxsize=64)
def wkt_from_text(text: str) -> str:
    """WKT2 of a proj string, WKT, `EPSG:n` or similar; raises `CRSError` when unreadable."""
    return pyproj.CRS.from_user_input(_clean_proj(text)).to_wkt()


@functools.lru_cache(maxsize=64)
def _wkt_from_cf_items(items: tuple[tuple[str, object], ...]) -> str:
    return pyproj.CRS.from_cf(dict(items)).to_wkt()


def wkt_from_cf(attrs: Mapping[str, object]) -> str:
    """WKT2 of a CF grid-mapping variable's attributes (cached: per-frame files repeat them)."""
    for key in _TEXT_KEYS:
        text = attrs.get(key)
        if isinstance(text, str) and text.strip():
            return wkt_from_text(text)
    items = tuple(sorted((k, _hashable(v)) for k, v in attrs.items()))
    return _wkt_from_cf_items(items)


def wkt_from_loose_attrs(attrs: Mapping[str, object]) -> tuple[str, str] | None:
    """(key, WKT2) from an attribute holding a proj string or WKT, or None when there is none.

    Free text that is clearly not a CRS (no `+proj=`, no WKT keyword, no `EPSG:`) is ignored;
    text that looks like one but does not parse raises `CRSError`.
    """
    for key in _LOOSE_KEYS:
        text = attrs.get(key)
        if isinstance(text, str) and _looks_like_crs(text):
            return key, wkt_from_text(text)
    return None


def _looks_like_crs(text: str) -> bool:
    t = text.strip().upper()
    return "+PROJ=" in t or t.startswith(("PROJCS", "GEOGCS", "PROJCRS", "GEOGCRS", "EPSG:"))


def _clean_proj(text: str) -> str:
    """Keep only the `+key=value` tokens of a proj string with prose around it, and move semi-axes
    given in kilometres (`+a=6378.137`) to metres with `+units=km`, which is what was meant."""
    if "+proj=" not in text:
        return text.strip()
    tokens = re.findall(r"\+[A-Za-z_0-9]+(?:=[^\s,;]+)?", text)
    params = {}
    for token in tokens:
        key, _, value = token[1:].partition("=")
        params[key] = value
    a = _float(params.get("a"))
    if a is not None and a < 100_000:  # an Earth radius below 100 km is a radius in km
        params["a"] = repr(a * 1000)
        b = _float(params.get("b"))
        if b is not None:
            params["b"] = repr(b * 1000)
        params.setdefault("units", "km")
    return " ".join(f"+{k}={v}" if v else f"+{k}" for k, v in params.items())


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def _hashable(value: object) -> object:
    if isinstance(value, np.ndarray):
        return tuple(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, list):
        return tuple(value)
    return value


LONLAT_WKT = pyproj.CRS.from_epsg(4326).to_wkt()


def length_unit_factor(units: object) -> float | None:
    """Metres per unit of a coordinate's `units` attribute, or None when not a length unit."""
    if not isinstance(units, str):
        return None
    return _LENGTH_UNITS.get(units.strip().lower())


@functools.lru_cache(maxsize=64)
def crs_unit_factor(wkt: str) -> float | None:
    """Metres per unit along the first axis of a projected CRS; None for geographic or none."""
    if not wkt:
        return None
    crs = pyproj.CRS.from_wkt(wkt)
    if not crs.is_projected or not crs.axis_info:
        return None
    return float(crs.axis_info[0].unit_conversion_factor)


def projected_units(wkt: str) -> str | None:
    """UDUNITS-style name of a projected CRS's axis unit (`m`, `km`), None when not projected."""
    factor = crs_unit_factor(wkt)
    if factor is None:
        return None
    return {1.0: "m", 1000.0: "km"}.get(factor, f"{factor:g} m")


def axis_attrs(wkt: str) -> tuple[dict[str, str], dict[str, str]]:
    """CF attributes of the x and y coordinates on a grid in `wkt`: longitude/latitude for a
    geographic CRS, projection coordinates (with their unit when known) otherwise."""
    if wkt and crs_unit_factor(wkt) is None:
        return (
            {"standard_name": "longitude", "units": "degrees_east"},
            {"standard_name": "latitude", "units": "degrees_north"},
        )
    x_attrs = {"standard_name": "projection_x_coordinate"}
    y_attrs = {"standard_name": "projection_y_coordinate"}
    units = projected_units(wkt)
    if units:
        x_attrs["units"] = y_attrs["units"] = units
    return x_attrs, y_attrs


def same_crs(a: str, b: str) -> bool:
    """Two WKT strings describe the same CRS (text first, pyproj's comparison when they differ)."""
    if a == b:
        return True
    if not a or not b:
        return False
    try:
        return pyproj.CRS.from_wkt(a) == pyproj.CRS.from_wkt(b)
    except CRSError:
        return False
