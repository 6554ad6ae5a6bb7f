"""ODIM_H5 (OPERA, `Conventions = ODIM_H5/V2_x`) cartesian radar products through h5py: one file
per frame, composites (`object = COMP`) and images (`IMAGE`).

Each `datasetN/dataM/data` is a variable named by its `quantity` (`DBZH`, `TH`, `RATE`, `ACRR`,
...); `what` and `where` attributes are inherited from the root down, the lower level
winning, as the specification says. Raw codes become physical values with `gain` and `offset`;
`nodata` (outside coverage) becomes NaN; `undetect` (measured, no echo) becomes the "no rain"
value: 0 for rates and accumulations, -32 dBZ (or the encoding's own floor, `offset`, when lower)
for reflectivity, the level `data.units` converts to exactly 0 mm/h.

The grid is placed by `where/projdef` and the lon/lat of the outer corners of the lower-left and
upper-right pixels (`LL_lon`, `LL_lat`, `UR_lon`, `UR_lat`), projected with pyproj; `xscale` and
`yscale` (metres) give the exact spacing when they agree with the corners. Rows run north to
south, as in the file.

The valid time is the product's nominal time (`what/date` + `what/time`), the regular time step
producers label frames with; for accumulations (`ACRR`) it is the end of the accumulation period
(`enddate` + `endtime`) when given, the time CF gives an accumulation.
"""

from __future__ import annotations

import datetime as dt
import functools
import gzip
import io
import re
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pyproj
from pyproj.exceptions import CRSError

from stforecast.errors import InputError
from stforecast.io import crs as crs_mod
from stforecast.io import sources
from stforecast.io import times as t
from stforecast.io.frames import FrameRef, ScannedFile, Variable
from stforecast.io.grid import Grid
from stforecast.io.netcdf import LOCK  # one HDF5 library may serve h5py and netCDF4 alike
from stforecast.io.packing import Packing

CARTESIAN = ("COMP", "IMAGE")
REFLECTIVITY = ("DBZH", "DBZV", "TH", "TV")
RATES = ("RATE",)
ACCUMULATIONS = ("ACRR",)
PRECIPITATION = REFLECTIVITY + RATES + ACCUMULATIONS  # what `variable=None` may pick
UNITS = {**dict.fromkeys(REFLECTIVITY, "dBZ"), "RATE": "mm/h", "ACRR": "mm"}
LONG_NAMES = {
    "DBZH": "equivalent reflectivity factor, horizontal polarisation",
    "DBZV": "equivalent reflectivity factor, vertical polarisation",
    "TH": "total reflectivity factor, horizontal polarisation (uncorrected)",
    "TV": "total reflectivity factor, vertical polarisation (uncorrected)",
    "RATE": "rain rate",
    "ACRR": "accumulated precipitation",
}
NO_ECHO_DBZ = -32.0  # `data.units.DBZ_FLOOR`: at or below it a rate is exactly 0
SCALE_TOLERANCE = 0.01  # xscale/yscale within 1 % of the corners' spacing: take them as exact

_GROUP = re.compile(r"^(dataset|data)(\d+)$")


def conventions(path: Path) -> str:
    """The root `Conventions` attribute of an HDF5 file (`""` when there is none): how an HDF5
    file that is not named `.nc` is told to be ODIM_H5 or something else."""
    with LOCK, _open(path) as f:
        return _text(f.attrs.get("Conventions", ""))


def scan(path: Path, wanted: set[str] | None, time_pattern: str | None) -> ScannedFile:
    """Describe the cartesian data sets of an ODIM_H5 file without reading their values."""
    try:
        with LOCK, _open(path) as f:
            return _Scanner(f, path, time_pattern).scan(wanted)
    except (OSError, KeyError, RuntimeError) as err:  # a header that opens but fails to read
        reason = " ".join(str(err).split()) or type(err).__name__
        raise InputError(f"{path}: cannot read the ODIM_H5 file ({reason})") from err


def read(ref: FrameRef, ys: slice, xs: slice) -> np.ndarray:
    """One data set's window, decoded to float32 with NaN (no echo as its value)."""
    (where,) = ref.index
    with LOCK, _open(Path(ref.path)) as f:
        raw = f[where][ys, xs]
    return ref.packing.apply(raw)


def _open(path: Path) -> h5py.File:
    """The file, or a gzip-compressed one decompressed in memory (h5py reads file objects)."""
    try:
        if sources.kind(path) == "gzip":
            with gzip.open(path, "rb") as z:
                return h5py.File(io.BytesIO(z.read()), "r")
        return h5py.File(path, "r")
    except OSError as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        raise InputError(f"{path}: not a readable HDF5 file ({reason})") from err


class _Scanner:
    def __init__(self, f: h5py.File, path: Path, time_pattern: str | None) -> None:
        self.f = f
        self.path = path
        self.time_pattern = time_pattern
        self.label = _text(f.attrs.get("Conventions", "")) or "ODIM_H5"

    def scan(self, wanted: set[str] | None) -> ScannedFile:
        what, where = _attrs(self.f, "what"), _attrs(self.f, "where")
        kind = str(what.get("object", "")).upper()
        label = f"{self.label} {kind}".strip()
        if kind not in CARTESIAN:
            polar = " (polar data: make a cartesian product first)" if kind[:1] in "PS" else ""
            raise InputError(
                f"{self.path}: {label}: ODIM object {kind or 'missing'!r} is not read{polar}; "
                f"only the cartesian objects are read: {' and '.join(CARTESIAN)}"
            )
        found: dict[str, tuple[str, dict, dict]] = {}
        for ds_name, ds in _numbered(self.f, "dataset"):
            ds_what = {**what, **_attrs(ds, "what")}
            ds_where = {**where, **_attrs(ds, "where")}
            for d_name, d in _numbered(ds, "data"):
                if not isinstance(d.get("data"), h5py.Dataset):
                    continue
                d_what = {**ds_what, **_attrs(d, "what")}
                d_where = {**ds_where, **_attrs(d, "where")}
                quantity = str(d_what.get("quantity", "")).strip() or f"{ds_name}/{d_name}"
                name = quantity if quantity not in found else f"{quantity}_{ds_name}"
                found[name] = (f"{ds_name}/{d_name}/data", d_what, d_where)
        if not found:
            raise InputError(f"{self.path}: {label}: no datasetN/dataM/data array in the file")
        quantities = {n: str(v[1].get("quantity", "")).upper() for n, v in found.items()}
        candidates = [n for n in found if quantities[n] in PRECIPITATION] or list(found)
        chosen = candidates if wanted is None else [n for n in found if n in wanted]
        variables = {n: self._describe(n, *found[n]) for n in chosen}
        others = [n for n in found if n not in candidates]
        return ScannedFile(str(self.path), variables, candidates, others, format=label)

    def _describe(self, name: str, where_h5: str, what: dict, where: dict) -> Variable:
        array = self.f[where_h5]
        if array.ndim != 2:
            raise InputError(f"{self.path}: {where_h5} is not a 2-D image (shape {array.shape})")
        grid = _grid(where, array.shape, self.path)
        quantity = str(what.get("quantity", "")).upper()
        times, note = self._times(what, quantity)
        packing = _packing(what, quantity, array.dtype, self.path)
        ref = FrameRef(read, str(self.path), name, (where_h5,), packing)
        attrs = {"units": UNITS.get(quantity, "")}
        if quantity in LONG_NAMES:
            attrs["long_name"] = LONG_NAMES[quantity]
        return Variable(name, str(self.path), grid, [ref], times, note, attrs)

    def _times(self, what: dict, quantity: str) -> tuple[np.ndarray | None, str]:
        if self.time_pattern:
            return t.time_from_name(self.path, [self.time_pattern])
        keys = [("date", "time", "nominal time what/date + what/time")]
        if quantity in ACCUMULATIONS:
            keys.insert(0, ("enddate", "endtime", "end of the accumulation what/enddate+endtime"))
        for date_key, time_key, note in keys:
            found = _odim_time(what.get(date_key), what.get(time_key))
            if found is not None:
                return np.array([found], dtype="datetime64[ns]"), note
        named, name_note = t.time_from_name(self.path, t.AUTO_PATTERNS)
        if named is not None:
            return named, name_note
        return None, f"what/date + what/time (YYYYMMDD, HHMMSS), {name_note}"


def _packing(what: dict, quantity: str, dtype: np.dtype, path: Path) -> Packing:
    """gain/offset, `nodata` -> NaN and `undetect` -> the no-rain value of the quantity."""
    try:
        gain = float(what.get("gain", 1.0))
        offset = float(what.get("offset", 0.0))
        nodata = None if "nodata" not in what else float(what["nodata"])
        undetect = None if "undetect" not in what else float(what["undetect"])
    except (TypeError, ValueError) as err:
        raise InputError(f"{path}: ODIM gain/offset/nodata/undetect not numbers ({err})") from err
    if gain == 0:
        raise InputError(f"{path}: ODIM gain is 0 (every value would be the offset)")
    fills = () if nodata is None else (nodata,)
    if undetect is None or undetect == nodata:
        return Packing(scale=gain, offset=offset, fills=fills)
    if quantity in RATES + ACCUMULATIONS:
        no_rain = 0.0
    elif quantity in REFLECTIVITY:
        no_rain = min(offset, NO_ECHO_DBZ) if dtype.kind in "iu" else NO_ECHO_DBZ
    else:  # a quantity with no "no echo" value of its own (velocity, quality): not measured
        return Packing(scale=gain, offset=offset, fills=(*fills, undetect))
    return Packing(scale=gain, offset=offset, fills=fills, replace=((undetect, no_rain),))


def _grid(where: dict, shape: tuple[int, int], path: Path) -> Grid:
    projdef = _text(where.get("projdef", ""))
    if not projdef:
        raise InputError(f"{path}: ODIM where/projdef is missing: the grid cannot be placed")
    try:
        size = (int(where.get("xsize", shape[1])), int(where.get("ysize", shape[0])))
        corners = tuple(float(where[k]) for k in ("LL_lon", "LL_lat", "UR_lon", "UR_lat"))
        scales = tuple(float(where.get(k, 0.0)) for k in ("xscale", "yscale"))
    except KeyError as err:
        raise InputError(f"{path}: ODIM where/{err.args[0]} is missing (a grid corner)") from err
    except (TypeError, ValueError) as err:
        raise InputError(f"{path}: ODIM where attributes are not numbers ({err})") from err
    if size != (shape[1], shape[0]):
        raise InputError(
            f"{path}: where/xsize, ysize = {size} but the image is {shape[1]} x {shape[0]}"
        )
    try:
        wkt, x, y = _coordinates(projdef, size, corners, scales)
        x, y = x.copy(), y.copy()  # the cache's arrays stay as computed
    except (CRSError, ValueError) as err:
        raise InputError(
            f"{path}: ODIM grid not understood ({' '.join(str(err).split())})"
        ) from err
    return Grid(y, x, wkt, *crs_mod.axis_attrs(wkt))


@functools.lru_cache(maxsize=16)
def _coordinates(
    projdef: str, size: tuple[int, int], corners: tuple[float, ...], scales: tuple[float, float]
) -> tuple[str, np.ndarray, np.ndarray]:
    """(WKT2, x centres, y centres north to south); cached: every frame repeats its grid, and a
    pyproj transformer costs milliseconds."""
    wkt = crs_mod.wkt_from_text(projdef)
    crs = pyproj.CRS.from_wkt(wkt)
    to_grid = pyproj.Transformer.from_crs(crs.geodetic_crs or crs, crs, always_xy=True)
    ll_lon, ll_lat, ur_lon, ur_lat = corners
    (x0, x1), (y0, y1) = to_grid.transform([ll_lon, ur_lon], [ll_lat, ur_lat])
    if not all(np.isfinite([x0, x1, y0, y1])) or x1 <= x0 or y1 <= y0:
        raise ValueError(f"the corners LL {corners[:2]}, UR {corners[2:]} do not span a grid")
    nx, ny = size
    dx, dy = (x1 - x0) / nx, (y1 - y0) / ny
    metres = crs_mod.crs_unit_factor(wkt)  # xscale/yscale are metres; None: a lon/lat grid
    for i, scale in enumerate(scales):
        exact = scale / metres if metres else scale
        spacing = dx if i == 0 else dy
        if exact > 0 and abs(exact - spacing) <= SCALE_TOLERANCE * spacing:
            dx, dy = (exact, dy) if i == 0 else (dx, exact)
    x = x0 + dx * (np.arange(nx, dtype=np.float64) + 0.5)
    y = y1 - dy * (np.arange(ny, dtype=np.float64) + 0.5)
    return wkt, x, y


def _odim_time(date: object, time: object) -> np.datetime64 | None:
    """ODIM's `YYYYMMDD` and `HHMMSS` (UTC) as datetime64, None when absent or unreadable."""
    text = f"{_text(date)}{_text(time)}"
    try:
        return t.to_datetime64(dt.datetime.strptime(text, "%Y%m%d%H%M%S"))
    except ValueError:
        return None


def _numbered(group: h5py.Group, prefix: str) -> list[tuple[str, h5py.Group]]:
    """`prefix1`, `prefix2`, ... in numeric order (`data10` after `data9`)."""
    found = []
    for key in group:
        match = _GROUP.match(key)
        if match and match.group(1) == prefix and isinstance(group[key], h5py.Group):
            found.append((int(match.group(2)), key))
    return [(key, group[key]) for _, key in sorted(found)]


def _attrs(group: h5py.Group, name: str) -> dict[str, Any]:
    """The attributes of `group/name` (what, where, how) as plain Python values."""
    sub = group.get(name)
    if not isinstance(sub, h5py.Group):
        return {}
    return {key: _plain(value) for key, value in sub.attrs.items()}


def _plain(value: object) -> object:
    if isinstance(value, (bytes, np.bytes_)):
        return _text(value)
    if isinstance(value, np.ndarray) and value.size == 1:
        return _plain(value.reshape(-1)[0])
    if isinstance(value, np.generic):
        return value.item()
    return value


def _text(value: object) -> str:
    if isinstance(value, (bytes, np.bytes_)):
        value = bytes(value).decode("utf-8", "replace")
    if isinstance(value, np.ndarray) and value.size == 1:
        return _text(value.reshape(-1)[0])
    return str(value).strip("\x00 ") if value is not None else ""
