"""What GDAL's GRIB driver says about a band (`GRIB_VALID_TIME`, `GRIB_UNIT`, `GRIB_COMMENT`,
`GRIB_ELEMENT`), in the terms the rest of stforecast uses. Plain text in, no GDAL import here:
the GDAL raster reader (`io.geotiff`) calls it for GRIB files (NOAA MRMS, NWP fields).

GDAL writes the valid time as seconds since 1970 (`"1604146200"`; releases before 3.x add
`" sec UTC"`), and units in brackets (`"[mm/hr]"`, `"[kg/(m^2 s)]"`).
"""

from __future__ import annotations

import re

import numpy as np

_SECONDS = re.compile(r"^\s*(-?\d+)(?:\s*sec(?:onds)?(?:\s*UTC)?)?\s*$", re.IGNORECASE)


def valid_time(tags: dict[str, str]) -> np.datetime64 | None:
    """A band's `GRIB_VALID_TIME` as datetime64 (UTC), None when the band has none."""
    text = tags.get("GRIB_VALID_TIME")
    match = _SECONDS.match(text) if isinstance(text, str) else None
    if match is None:
        return None
    return np.datetime64(int(match.group(1)), "s").astype("datetime64[ns]")


def units(tags: dict[str, str]) -> str:
    """A band's `GRIB_UNIT` without GDAL's brackets, in UDUNITS spelling where it differs
    (`kg/(m^2 s)` -> `kg m-2 s-1`); `""` when there is none."""
    text = str(tags.get("GRIB_UNIT", "")).strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1].strip()
    return {"kg/(m^2 s)": "kg m-2 s-1", "kg/(m^2)": "kg m-2", "kg/m^2": "kg m-2"}.get(text, text)


def long_name(tags: dict[str, str]) -> str:
    """`GRIB_COMMENT` without the unit GDAL appends (`"Radar Precipitation Rate [mm/hr]"`),
    else the element's short name (`PrecipRate`)."""
    comment = re.sub(r"\s*\[[^\]]*\]\s*$", "", str(tags.get("GRIB_COMMENT", ""))).strip()
    return comment or str(tags.get("GRIB_ELEMENT", "")).strip()


def is_grib(tags: dict[str, str]) -> bool:
    """Whether a band's tags are the GRIB driver's."""
    return any(key.startswith("GRIB_") for key in tags)
