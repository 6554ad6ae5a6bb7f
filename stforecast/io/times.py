"""Times: CF time units, date strings in metadata, and dates in file names.

Everything ends as `datetime64[ns]`, UTC and timezone-naive, because that is what xarray, pandas
and the rest of stforecast compare and sort without surprises.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from stforecast.errors import ConfigError, InputError

# File-name patterns tried in order when no `time_pattern` is given: the longest (most specific)
# first, so `20201031_000000` is not read as the date alone.
AUTO_PATTERNS: tuple[str, ...] = (
    "%Y%m%dT%H%M%S",
    "%Y%m%d_%H%M%S",
    "%Y%m%d-%H%M%S",
    "%Y%m%d%H%M%S",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%dT%H%M%S",
    "%Y-%m-%d_%H%M%S",
    "%Y-%m-%d_%H:%M:%S",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d_%H%M",
    "%Y%m%dT%H%M",
    "%Y%m%d_%H%M",
    "%Y%m%d-%H%M",
    "%Y%m%d%H%M",
    "%Y%m%d%H",
    "%Y-%m-%d",
    "%Y%m%d",
)

# Whole-string formats for times written in metadata (attributes, tags, band descriptions).
_STRING_FORMATS: tuple[str, ...] = (
    "%Y:%m:%d %H:%M:%S",  # TIFFTAG_DATETIME
    "%Y%m%d%H%M%S",
    "%Y%m%d%H%M",
    "%Y%m%d_%H%M%S",
    "%Y%m%d_%H%M",
    "%Y%m%d-%H%M%S",
    "%Y%m%d-%H%M",
    "%Y%m%dT%H%M%S",
    "%Y%m%dT%H%M",
    "%Y%m%d",
    "%d/%m/%Y %H:%M:%S",
)

# Attribute, tag and metadata-item names (lower case) that hold a frame's time as text.
TIME_KEYS: tuple[str, ...] = (
    "valid_time",
    "time",
    "datetime",
    "date_time",
    "observation_time",
    "observation time",
    "nominal_time",
    "acquisition_time",
    "timestamp",
)

_DIRECTIVES = {
    "Y": r"\d{4}",
    "y": r"\d{2}",
    "m": r"\d{2}",
    "d": r"\d{2}",
    "H": r"\d{2}",
    "M": r"\d{2}",
    "S": r"\d{2}",
    "j": r"\d{3}",
    "f": r"\d{1,6}",
    "%": "%",
}

_UNIT_NS = {
    "d": 86_400 * 10**9,
    "h": 3_600 * 10**9,
    "min": 60 * 10**9,
    "s": 10**9,
    "ms": 10**6,
    "us": 10**3,
    "ns": 1,
}
_UNIT_ALIASES = {
    "days": "d",
    "day": "d",
    "d": "d",
    "hours": "h",
    "hour": "h",
    "hrs": "h",
    "hr": "h",
    "h": "h",
    "minutes": "min",
    "minute": "min",
    "mins": "min",
    "min": "min",
    "seconds": "s",
    "second": "s",
    "secs": "s",
    "sec": "s",
    "s": "s",
    "milliseconds": "ms",
    "millisecond": "ms",
    "msecs": "ms",
    "ms": "ms",
    "microseconds": "us",
    "microsecond": "us",
    "us": "us",
    "nanoseconds": "ns",
    "ns": "ns",
}
_STANDARD_CALENDARS = {"", "standard", "gregorian", "proleptic_gregorian"}

_REF_DATE = re.compile(
    r"^(?P<y>[+-]?\d{1,4})-(?P<mo>\d{1,2})-(?P<d>\d{1,2})"
    r"(?:[T\s]+(?P<h>\d{1,2}):(?P<mi>\d{1,2})(?::(?P<s>\d{1,2}(?:\.\d*)?))?)?"
    r"\s*(?P<tz>Z|UTC|GMT|[+-]?\d{1,2}(?::?\d{2})?)?\s*(?:UTC)?$",
    re.IGNORECASE,
)


def to_datetime64(value: dt.datetime) -> np.datetime64:
    """A datetime as naive UTC `datetime64[ns]` (aware ones are converted to UTC first)."""
    if value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return np.datetime64(value, "ns")


def is_time_units(units: object) -> bool:
    """True for CF time units such as `seconds since 1970-01-01`."""
    return isinstance(units, str) and " since " in f" {units.strip().lower()} "


def decode_cf(values: np.ndarray, units: str, calendar: str | None = None) -> np.ndarray:
    """CF numeric times to `datetime64[ns]`; raises `ValueError` with the reason on failure.

    Integer offsets are converted exactly; float offsets are rounded to the millisecond, which
    absorbs float noise (e.g. 1/6 h) and is far below any frame step.
    """
    match = re.match(r"^\s*(\w+)\s+since\s+(.+?)\s*$", units, re.IGNORECASE)
    if not match:
        raise ValueError(f"not CF time units: {units!r}")
    unit = _UNIT_ALIASES.get(match.group(1).lower())
    if unit is None:
        raise ValueError(f"unsupported time unit {match.group(1)!r} in {units!r}")
    cal = (calendar or "").strip().lower()
    values = np.asarray(values)
    if values.dtype.kind not in "iuf":
        raise ValueError(f"time values are not numeric ({values.dtype})")
    if values.dtype.kind == "f" and not np.all(np.isfinite(values)):
        raise ValueError("time values contain missing (non-finite) entries")
    if cal not in _STANDARD_CALENDARS:
        return _decode_cftime(values, units, cal)
    ref = _parse_reference(match.group(2))
    if values.dtype.kind in "iu" or np.all(values == np.round(values)):
        offsets = values.astype(np.int64) * np.int64(_UNIT_NS[unit])
    else:
        millis = np.round(values.astype(np.float64) * (_UNIT_NS[unit] / 10**6))
        offsets = millis.astype(np.int64) * np.int64(10**6)
    return ref + offsets.astype("timedelta64[ns]")


def _parse_reference(text: str) -> np.datetime64:
    match = _REF_DATE.match(text.strip())
    if not match:
        raise ValueError(f"cannot read the reference date {text!r}")
    g = match.groupdict()
    seconds = float(g["s"] or 0)
    whole = int(seconds)
    ref = dt.datetime(
        int(g["y"]),
        int(g["mo"]),
        int(g["d"]),
        int(g["h"] or 0),
        int(g["mi"] or 0),
        whole,
        round((seconds - whole) * 1e6),
    )
    tz = (g["tz"] or "").upper()
    if tz and tz not in ("Z", "UTC", "GMT"):
        sign = -1 if tz.startswith("-") else 1
        digits = tz.lstrip("+-").replace(":", "")
        if len(digits) <= 2:
            hours, minutes = int(digits), 0
        else:
            hours, minutes = int(digits[:-2]), int(digits[-2:])
        ref -= sign * dt.timedelta(hours=hours, minutes=minutes)
    return np.datetime64(ref, "ns")


def _decode_cftime(values: np.ndarray, units: str, calendar: str) -> np.ndarray:
    """Non-standard calendars through cftime; dates must exist in the Gregorian calendar."""
    import cftime

    dates = np.atleast_1d(cftime.num2date(values, units, calendar))
    out = np.empty(dates.shape, dtype="datetime64[ns]")
    for i, d in enumerate(dates.flat):
        try:
            out.flat[i] = np.datetime64(
                dt.datetime(d.year, d.month, d.day, d.hour, d.minute, d.second, d.microsecond)
            )
        except ValueError as err:
            raise ValueError(f"{d} ({calendar} calendar) is not a real date") from err
    return out.reshape(np.shape(values))


def parse_time_string(text: str, fmt: str | None = None) -> np.datetime64 | None:
    """A time written in metadata, or None when it is not one.

    Tries `fmt` (strftime) first, then ISO 8601 (with `Z`/offsets), then a few compact forms
    (TIFF `YYYY:MM:DD hh:mm:ss`, `YYYYMMDDhhmm`, ...). The whole string must be the time.
    """
    text = text.strip()
    if not text:
        return None
    for pattern in ([fmt] if fmt else []) + list(_STRING_FORMATS):
        found = _strptime(text, pattern)
        if found is not None:
            return found
    iso = re.sub(r"\s*(Z|UTC|GMT)$", "+00:00", text, flags=re.IGNORECASE)
    try:
        return to_datetime64(dt.datetime.fromisoformat(iso))
    except ValueError:
        return None


@functools.lru_cache(maxsize=128)
def _body(pattern: str) -> str:
    """Regex of a strftime-style pattern with fixed digit counts (strptime alone would read
    `201609281445` with `%Y%m%d%H%M%S` as 14:04:05)."""
    parts: list[str] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "%":
            if i + 1 >= len(pattern) or pattern[i + 1] not in _DIRECTIVES:
                bad = pattern[i : i + 2]
                raise ConfigError(
                    f"time_pattern {pattern!r}: unsupported directive {bad!r} "
                    f"(use %Y %y %m %d %H %M %S %j %f)"
                )
            parts.append(_DIRECTIVES[pattern[i + 1]])
            i += 2
        else:
            parts.append(re.escape(char))
            i += 1
    return "".join(parts)


def pattern_regex(pattern: str) -> re.Pattern[str]:
    """Compile a strftime-style pattern into a regex that finds it inside a longer name.

    Digits may not touch the match on either side, so `%Y%m%d%H%M` cannot be read from the
    middle of a longer number.
    """
    return re.compile(r"(?<!\d)(" + _body(pattern) + r")(?!\d)")


def _strptime(text: str, pattern: str) -> np.datetime64 | None:
    """`text` read with `pattern` when it matches exactly (fixed digit counts), else None."""
    if not re.fullmatch(_body(pattern), text):
        return None
    try:
        return to_datetime64(dt.datetime.strptime(text, pattern))
    except ValueError:
        return None  # digits of the right length but not a date (month 13, ...)


def time_in_text(text: str, patterns: Sequence[str]) -> np.datetime64 | None:
    """The first valid time any of `patterns` finds in `text` (e.g. a file's basename)."""
    for pattern in patterns:
        for match in pattern_regex(pattern).finditer(text):
            found = _strptime(match.group(1), pattern)
            if found is not None:
                return found
    return None


def gdal_format_to_strftime(fmt: str) -> str:
    """`YYYYMMDDhhmm` (as in GDAL metadata `format` attributes) to `%Y%m%d%H%M`."""
    for token, directive in (
        ("YYYY", "%Y"),
        ("MM", "%m"),
        ("DD", "%d"),
        ("hh", "%H"),
        ("mm", "%M"),
        ("ss", "%S"),
    ):
        fmt = fmt.replace(token, directive)
    return fmt


def check_increasing(times: np.ndarray, where: str) -> None:
    """Frames inside one file must be in strictly increasing time order."""
    if times.size < 2:
        return
    steps = np.diff(times)
    bad = np.flatnonzero(steps <= np.timedelta64(0, "ns"))
    if bad.size:
        k = int(bad[0])
        kind = "duplicate" if times[k] == times[k + 1] else "non-monotonic"
        raise InputError(
            f"{where}: {kind} times (frame {k + 1} at {fmt_time(times[k + 1])} after frame {k} at "
            f"{fmt_time(times[k])})"
        )


def most_common_step(times: np.ndarray) -> int | None:
    """Most common difference between consecutive times in whole seconds (ties: the smallest)."""
    if times.size < 2:
        return None
    seconds = np.diff(times).astype("timedelta64[s]").astype(np.int64)
    values, counts = np.unique(seconds, return_counts=True)
    return int(values[np.argmax(counts)])


def fmt_time(t: np.datetime64) -> str:
    """A time for messages: ISO 8601 to the second."""
    return str(np.datetime64(t, "s"))


def time_from_name(path: Path, patterns: Sequence[str]) -> tuple[np.ndarray | None, str]:
    """A per-frame file's time from its name, and where it was looked for (for messages)."""
    found = time_in_text(path.name, patterns)
    if found is None:
        shown = patterns[0] if len(patterns) == 1 else "common date patterns"
        return None, f"file name ({shown})"
    return np.array([found]), "file name"


# ------------------------------------------------------------------------------ writing times

EPOCH = np.datetime64("1970-01-01T00:00:00", "ns")
NS = 1_000_000_000


def iso_duration(duration: int | np.timedelta64, *, days: bool = True) -> str:
    """ISO 8601 duration of whole seconds (an int) or of a `timedelta64`: `PT10M`, `PT1H30M`,
    `PT0S`, `-PT5M`, `PT0.5S`; whole days as `P1D`, `P1DT1H` unless `days` is False
    (`PT24H`, the form GeoTIFF band descriptions use: quick-look readers parse only hours,
    minutes and seconds)."""
    if isinstance(duration, np.timedelta64):
        ns = int(duration.astype("timedelta64[ns]").astype(np.int64))
    else:
        ns = int(duration) * NS
    sign = "-" if ns < 0 else ""
    whole, frac = divmod(abs(ns), NS)
    n_days, whole = divmod(whole, 86400) if days else (0, whole)
    hours, rest = divmod(whole, 3600)
    minutes, seconds = divmod(rest, 60)
    clock = (f"{hours}H" if hours else "") + (f"{minutes}M" if minutes else "")
    if seconds or frac or not (clock or n_days):
        clock += f"{seconds}.{frac:09d}".rstrip("0").rstrip(".") + "S"
    return f"{sign}P" + (f"{n_days}D" if n_days else "") + (f"T{clock}" if clock else "")


def iso_time(ns: int) -> str:
    """ISO 8601 UTC time `2024-01-01T00:10:00Z` of ns since the epoch (ms when not whole s)."""
    unit = "s" if ns % NS == 0 else "ms"
    return np.datetime_as_string(EPOCH + np.timedelta64(ns, "ns"), unit=unit) + "Z"


def tiff_datetime(ns: int) -> str:
    """TIFF's `YYYY:MM:DD HH:MM:SS` of ns since the epoch."""
    text = np.datetime_as_string(EPOCH + np.timedelta64(ns, "ns"), unit="s")
    return text.replace("-", ":").replace("T", " ")
