"""Unit strings and conversions between the units precipitation and temperature come in.

Spellings are normalised to UDUNITS/CF style (space-separated symbols, integer exponents):
`"mm/h"`, `"mm hr-1"`, `"mm per hour"` -> `"mm h-1"`; `"kg/m2/s"`, `"kg m^-2 s^-1"` ->
`"kg m-2 s-1"`; `"dbz"` -> `"dBZ"`; `"kelvin"` -> `"K"`; `"°C"`, `"celsius"` -> `"degC"`.
Normalising changes spelling only, never meaning: `"kg m-2"` stays `"kg m-2"`, and
`equivalent("kg m-2", "mm")` says that the two are the same amount (1 kg of water per m² is
1 mm deep, water density 1000 kg m-3).

Conversions (`convert`):

- accumulation per time step (depth: `mm`, `kg m-2`, `m`, ...) <-> rate (`mm h-1`,
  `kg m-2 s-1`, `mm s-1`, ...): `R [mm/h] = D [mm] · 3600 / step_seconds` (needs the step);
- between depths or between rates: a constant factor (`1 kg m-2 s-1 = 3600 mm h-1`);
- reflectivity `dBZ` <-> rate with a Z-R relation `Z = a·R^b` (Z in mm⁶ m⁻³, `Z = 10^(dBZ/10)`),
  Marshall–Palmer by default (a=200, b=1.6): `R = (10^(dBZ/10) / a)^(1/b)` and
  `dBZ = 10·log10(a) + 10·b·log10(R)`. A floor stands for "no echo" (`dbz_floor`, default
  -32 dBZ, the ODIM/uint8 "undetect" level): R <= 0 (or so small that it falls below the floor)
  gives the floor, never -inf, and dBZ at or below the floor gives R = 0, so the round trip is
  exact above the floor;
- `K` <-> `degC`: `T[degC] = T[K] - 273.15`.

Anything else raises InputError naming both units. Works elementwise on numpy and dask arrays,
scalars, and xarray DataArrays (lazily on dask; attrs kept, `units` set to the target).
"""

from __future__ import annotations

import math
import re
from typing import Any, NamedTuple

import numpy as np

from stforecast.errors import ConfigError, InputError

__all__ = [
    "DBZ_FLOOR",
    "MARSHALL_PALMER",
    "convert",
    "equivalent",
    "normalise",
    "quantity",
]

MARSHALL_PALMER: tuple[float, float] = (200.0, 1.6)
DBZ_FLOOR = -32.0
KELVIN_OFFSET = 273.15

# Symbol -> (dimension exponents of (kg, m, s), factor to SI). Aliases map to a symbol.
_SYMBOLS: dict[str, tuple[tuple[int, int, int], float]] = {
    "kg": ((1, 0, 0), 1.0),
    "g": ((1, 0, 0), 1e-3),
    "m": ((0, 1, 0), 1.0),
    "km": ((0, 1, 0), 1e3),
    "cm": ((0, 1, 0), 1e-2),
    "mm": ((0, 1, 0), 1e-3),
    "s": ((0, 0, 1), 1.0),
    "min": ((0, 0, 1), 60.0),
    "h": ((0, 0, 1), 3600.0),
    "d": ((0, 0, 1), 86400.0),
}
_ALIASES = {
    "sec": "s", "secs": "s", "second": "s", "seconds": "s",
    "mins": "min", "minute": "min", "minutes": "min",
    "hr": "h", "hrs": "h", "hour": "h", "hours": "h",
    "day": "d", "days": "d",
    "metre": "m", "metres": "m", "meter": "m", "meters": "m",
    "millimetre": "mm", "millimetres": "mm", "millimeter": "mm", "millimeters": "mm",
    "kilogram": "kg", "kilograms": "kg",
}  # fmt: skip
_WORDS = {  # whole-string spellings of the units that are not products of symbols
    "dbz": "dBZ",
    "k": "K",
    "kelvin": "K",
    "degk": "K",
    "degc": "degC",
    "deg c": "degC",
    "deg_c": "degC",
    "°c": "degC",
    "c": "degC",
    "celsius": "degC",
    "degree_celsius": "degC",
    "degrees_celsius": "degC",
    "degree celsius": "degC",
    "degrees celsius": "degC",
    "1": "1",
    "-": "1",
}
_TOKEN = re.compile(r"^([A-Za-z]+)(-?\d+)?$")
_NUMBER = re.compile(r"^[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?$")


class _Parsed(NamedTuple):
    canonical: str
    dims: tuple[int, int, int]
    factor: float  # SI value of one unit


def _parse(units: str) -> _Parsed | None:
    """Products of symbols with exponents (`kg m-2 s-1`, `mm/h`, `0.01 mm`); None otherwise."""
    s = units.strip().replace("**", "").replace("^", "").replace("·", " ").replace("*", " ")
    s = re.sub(r"(?<=[A-Za-z\d])\.(?=[A-Za-z])", " ", s)  # UDUNITS product "mm.h-1"
    s = s.replace("/", " / ")
    parts: list[str] = []
    dims = [0, 0, 0]
    factor = 1.0
    invert = False
    for token in s.split():
        if token.lower() in ("/", "per"):
            invert = True
            continue
        if _NUMBER.match(token):
            if invert:
                return None
            factor *= float(token)
            parts.append(token)
            continue
        match = _TOKEN.match(token)
        if not match:
            return None
        word, exponent = match.group(1), int(match.group(2) or 1)
        symbol = word if word in _SYMBOLS else _ALIASES.get(word.lower(), word.lower())
        if symbol not in _SYMBOLS:
            return None
        if invert:
            exponent, invert = -exponent, False
        symbol_dims, symbol_factor = _SYMBOLS[symbol]
        dims = [d + exponent * e for d, e in zip(dims, symbol_dims, strict=True)]
        factor *= symbol_factor**exponent
        parts.append(symbol if exponent == 1 else f"{symbol}{exponent}")
    if not parts or invert:
        return None
    return _Parsed(" ".join(parts), (dims[0], dims[1], dims[2]), factor)


def normalise(units: str | None) -> str:
    """Canonical spelling of a unit string (see the module docstring); unknown units are
    returned with whitespace collapsed, so that they still compare equal to themselves, and
    missing units (None) as ""."""
    if units is None:
        return ""
    text = " ".join(str(units).split())
    word = _WORDS.get(text.lower())
    if word is not None:
        return word
    parsed = _parse(text)
    return parsed.canonical if parsed is not None else text


class _Kind(NamedTuple):
    quantity: str  # "accumulation" (mm per step), "rate" (mm h-1), "reflectivity", "temperature"
    factor: float  # accumulation: mm per unit; rate: mm h-1 per unit; temperature: 1 or 0


def _kind(units: str) -> _Kind | None:
    canonical = normalise(units)
    if canonical == "dBZ":
        return _Kind("reflectivity", 1.0)
    if canonical in ("K", "degC"):
        return _Kind("temperature", 1.0 if canonical == "K" else 0.0)
    parsed = _parse(canonical)
    if parsed is None:
        return None
    kg, m, s = parsed.dims
    if (kg, m) == (1, -2):  # mass of water per area: 1 kg m-2 == 1e-3 m of depth
        kg, m, factor = 0, 1, parsed.factor * 1e-3
    else:
        factor = parsed.factor
    if (kg, m, s) == (0, 1, 0):
        return _Kind("accumulation", _clean(factor * 1e3))
    if (kg, m, s) == (0, 1, -1):
        return _Kind("rate", _clean(factor * 1e3 * 3600.0))
    return None


def _clean(factor: float) -> float:
    """Round away the last-bit noise of products like 1e-3 / 3600 · 1e3 · 3600 (== 1)."""
    return float(f"{factor:.12g}")


def quantity(units: str | None) -> str | None:
    """What a unit measures, as far as conversions go: "accumulation" (depth per time step),
    "rate", "reflectivity", "temperature", or None (no conversion known)."""
    kind = _kind(units) if units is not None else None
    return kind.quantity if kind is not None else None


def equivalent(a: str | None, b: str | None) -> bool:
    """True when converting `a` to `b` leaves values unchanged (e.g. `kg m-2` and `mm`)."""
    if normalise(a) == normalise(b):
        return True
    ka, kb = _kind(a or ""), _kind(b or "")
    return (
        ka is not None
        and kb is not None
        and ka.quantity == kb.quantity != "temperature"
        and math.isclose(ka.factor, kb.factor, rel_tol=1e-12)
    )


_SUPPORTED = (
    "accumulation per step (mm, kg m-2, m), rate (mm h-1, kg m-2 s-1, mm s-1, ...), "
    "reflectivity (dBZ) and temperature (K, degC)"
)


def convert(
    x: Any,
    from_units: str,
    to_units: str,
    *,
    step_seconds: float | None = None,
    zr: tuple[float, float] = MARSHALL_PALMER,
    dbz_floor: float = DBZ_FLOOR,
) -> Any:
    """Convert `x` from `from_units` to `to_units` (see the module docstring for the formulas).

    `step_seconds` is the time step an accumulation covers (needed between accumulation and
    rate or reflectivity); `zr = (a, b)` the Z-R relation; `dbz_floor` the "no echo" level.
    Raises InputError when the pair cannot be converted, ConfigError for bad parameters.
    """
    source, target = _kind(from_units), _kind(to_units)
    to_canonical = normalise(to_units)

    if normalise(from_units) == to_canonical:
        return _apply(lambda a: a, x, to_canonical)
    if source is None or target is None or not _compatible(source, target):
        raise InputError(
            f"cannot convert units {from_units!r} to {to_units!r}; supported: {_SUPPORTED}"
        )

    if source.quantity == "temperature":
        offset = KELVIN_OFFSET if source.factor else -KELVIN_OFFSET  # K -> degC or back
        return _apply(lambda a: a - offset, x, to_canonical)

    # Same kind of amount: one constant factor (accumulation -> accumulation, rate -> rate).
    if source.quantity == target.quantity and source.quantity != "reflectivity":
        k = source.factor / target.factor
        return _apply(lambda a: a * k if k != 1.0 else a, x, to_canonical)

    a_zr, b_zr = _zr(zr)
    floor = _finite(dbz_floor, "dbz_floor")
    needs_step = "accumulation" in (source.quantity, target.quantity)
    step = _step(step_seconds, from_units, to_units) if needs_step else 1.0

    def fn(values: Any) -> Any:
        # source -> rate in mm/h
        if source.quantity == "reflectivity":
            rate = _dbz_to_rate(values, a_zr, b_zr, floor)
        elif source.quantity == "accumulation":
            rate = values * (source.factor * 3600.0 / step)
        else:
            rate = values * source.factor
        # rate in mm/h -> target
        if target.quantity == "reflectivity":
            return _rate_to_dbz(rate, a_zr, b_zr, floor)
        if target.quantity == "accumulation":
            return rate * (step / 3600.0 / target.factor)
        return rate * (1.0 / target.factor)

    return _apply(fn, x, to_canonical)


def _compatible(source: _Kind, target: _Kind) -> bool:
    precipitation = {"accumulation", "rate", "reflectivity"}
    if source.quantity == "temperature" or target.quantity == "temperature":
        return source.quantity == target.quantity
    return source.quantity in precipitation and target.quantity in precipitation


def _dbz_to_rate(dbz: Any, a: float, b: float, floor: float) -> Any:
    """R = (10^(dBZ/10) / a)^(1/b) = 10^((dBZ - 10·log10 a) / (10·b)); 0 at or below the floor."""
    rate = 10.0 ** ((dbz - 10.0 * math.log10(a)) / (10.0 * b))
    return np.where(dbz <= floor, 0.0, rate)  # NaN <= floor is False: NaN stays NaN


def _rate_to_dbz(rate: Any, a: float, b: float, floor: float) -> Any:
    """dBZ = 10·log10(a·R^b), at least `floor`; R <= 0 gives the floor, NaN stays NaN."""
    positive = np.maximum(rate, 1e-30)  # maximum propagates NaN; 1e-30 is far below any floor
    return np.maximum(10.0 * math.log10(a) + 10.0 * b * np.log10(positive), floor)


def _apply(fn: Any, x: Any, units: str) -> Any:
    """Apply elementwise; DataArrays keep coords and attrs (units updated), dask stays lazy."""
    import xarray as xr

    if isinstance(x, xr.DataArray):
        out = x.copy(data=fn(x.data))
        out.attrs["units"] = units
        if "channel_units" in out.attrs:  # one conversion for all channels: they share units now
            out.attrs["channel_units"] = [units] * len(out.attrs["channel_units"])
        # The on-disk packing of the source (int16 + scale_factor, _FillValue) no longer fits.
        for key in ("dtype", "scale_factor", "add_offset", "_FillValue", "missing_value", "units"):
            out.encoding.pop(key, None)
        return out
    return fn(x if hasattr(x, "dtype") else np.asarray(x, dtype=np.float64))


def _finite(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    if not math.isfinite(float(value)):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _zr(zr: Any) -> tuple[float, float]:
    try:
        a, b = (float(v) for v in zr)
    except (TypeError, ValueError):
        raise ConfigError(f"zr must be a pair (a, b) of positive numbers, got {zr!r}") from None
    if not (math.isfinite(a) and math.isfinite(b) and a > 0 and b > 0):
        raise ConfigError(f"zr must be a pair (a, b) of positive numbers, got {zr!r}")
    return a, b


def _step(step_seconds: Any, from_units: str, to_units: str) -> float:
    if step_seconds is None:
        raise InputError(
            f"converting {from_units!r} to {to_units!r} needs the time step the accumulation "
            "covers (step_seconds)"
        )
    step = _finite(step_seconds, "step_seconds")
    if not step > 0:
        raise ConfigError(f"step_seconds must be > 0, got {step_seconds!r}")
    return step
