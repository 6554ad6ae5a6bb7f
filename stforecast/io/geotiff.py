"""GeoTIFF, GRIB and any other raster GDAL opens, through rasterio: one file per frame, or one
band per frame; gzip-compressed files (`.grib2.gz`, MRMS) through GDAL's `/vsigzip/`.

Bands are always frames (never channels). The variable is named `band_data` (rioxarray's name):
a GeoTIFF has no variable names, and a fixed name keeps `variable=None` and a recipe's explicit
`variable = "band_data"` both working for every GeoTIFF. GRIB bands take their time from
`GRIB_VALID_TIME` and their units from `GRIB_UNIT` (`io.grib`).

Scaling comes from the band's GDAL scale/offset, else from `Gain`/`Offset` metadata items (FMI:
`dBZ = 0.5 DN - 32`); missing values from the band's nodata, else a `Nodata` item. Other codes
(FMI's `Undetect` = 0, "no echo") are kept as values.
"""

from __future__ import annotations

import html
import math
import re
from pathlib import Path

import numpy as np
import rasterio
from pyproj.exceptions import CRSError
from rasterio.errors import RasterioError
from rasterio.windows import Window

from stforecast.errors import InputError
from stforecast.io import crs as crs_mod
from stforecast.io import grib, sources
from stforecast.io import times as t
from stforecast.io.frames import FrameRef, ScannedFile, Variable
from stforecast.io.grid import Grid
from stforecast.io.handles import HandleCache
from stforecast.io.packing import Packing

NAME = "band_data"
FORMATS = {"GTiff": "GeoTIFF", "COG": "GeoTIFF", "GRIB": "GRIB"}  # GDAL driver -> our label
UNKNOWN = "neither NetCDF nor GeoTIFF, nor ODIM_H5, GRIB or another raster GDAL opens"


def gdal_name(path: str | Path) -> str:
    """The name GDAL opens: the file, or `/vsigzip/` + it for a gzip-compressed one."""
    return f"/vsigzip/{path}" if sources.kind(Path(path)) == "gzip" else str(path)


def _open(path: str) -> rasterio.io.DatasetReader:
    return rasterio.open(gdal_name(path))


HANDLES = HandleCache(_open, size=4)

_ITEM = re.compile(r"<Item\b([^>]*)>(.*?)</Item>", re.DOTALL)
_ATTR = re.compile(r'(\w+)\s*=\s*"([^"]*)"')


def scan(
    path: Path, wanted: set[str] | None, time_pattern: str | None, expected: str | None = "GeoTIFF"
) -> ScannedFile:
    """Describe the single variable of a raster (bands as frames) without reading pixels.
    `expected`: the format the file's signature says (GeoTIFF, GRIB), None when it says none."""
    try:
        with _open(str(path)) as src:
            header = _Header(src, path)
    except RasterioError as err:
        reason = " ".join(str(err).split())
        if expected is None:
            raise InputError(f"{path}: {UNKNOWN} ({sources.describe(path)})") from err
        raise InputError(f"{path}: not a readable {expected} ({reason})") from err
    label = header.label
    if wanted is not None and NAME not in wanted:
        return ScannedFile(str(path), {}, [NAME], format=label)
    return ScannedFile(str(path), {NAME: header.variable(time_pattern)}, [NAME], format=label)


def read(ref: FrameRef, ys: slice, xs: slice) -> np.ndarray:
    """One band's window in one rasterio read, decoded to float32 with NaN."""
    (band,) = ref.index
    window = Window(xs.start, ys.start, xs.stop - xs.start, ys.stop - ys.start)
    if ref.cached:
        with HANDLES.use(ref.path) as src:
            raw = src.read(band, window=window)
    else:
        with _open(ref.path) as src:
            raw = src.read(band, window=window)
    return ref.packing.apply(raw)


class _Header:
    """Everything needed from an open dataset, read once while it is open."""

    def __init__(self, src: rasterio.io.DatasetReader, path: Path) -> None:
        self.path = path
        self.count = src.count
        self.shape = (src.height, src.width)
        self.transform = src.transform
        # An EPSG code the file declares goes through pyproj's own database: GDAL's and pyproj's
        # PROJ databases may differ in detail (FMI's EPSG:3067 base CRS), and pyproj is what the
        # rest of stforecast compares with.
        epsg = src.crs.to_epsg() if src.crs else None
        self.crs_text = f"EPSG:{epsg}" if epsg else (src.crs.to_wkt() if src.crs else "")
        self.nodata = list(src.nodatavals)
        self.scales = list(src.scales)
        self.offsets = list(src.offsets)
        self.units = list(src.units)
        self.descriptions = list(src.descriptions)
        self.tags = src.tags()
        self.band_tags = [src.tags(b) for b in range(1, src.count + 1)]
        self.gzipped = src.name.startswith("/vsigzip/")
        self.label = FORMATS.get(src.driver, f"{src.driver} raster (GDAL)")
        self.label += " (gzip)" if self.gzipped else ""
        if not self.gzipped:  # block offsets are those of the inflated stream
            _check_complete(src, path)
        # Metadata items GDAL did not parse (FMI's raw GDAL_METADATA tag) beside those it did.
        items, band_items = _gdal_items(self.tags.get("GDAL_METADATA", ""))
        self.items = {**{k.lower(): (v, {}) for k, v in self.tags.items()}, **items}
        self.band_items = {
            b: {**{k.lower(): (v, {}) for k, v in tags.items()}, **band_items.get(b, {})}
            for b, tags in enumerate(self.band_tags, start=1)
        }

    def variable(self, time_pattern: str | None) -> Variable:
        grid = self._grid()
        times, note = self._times(time_pattern)
        refs = [
            FrameRef(read, str(self.path), "", (b,), self._packing(b), cached=self.count > 1)
            for b in range(1, self.count + 1)
        ]
        return Variable(NAME, str(self.path), grid, refs, times, note, self._attrs())

    def _grid(self) -> Grid:
        a, b, c, d, e, f = self.transform[:6]
        if b != 0 or d != 0:
            raise InputError(f"{self.path}: rotated or sheared GeoTIFFs are not supported")
        try:
            wkt = crs_mod.wkt_from_text(self.crs_text) if self.crs_text else ""
        except CRSError as err:
            raise InputError(f"{self.path}: CRS not understood by pyproj ({err})") from err
        x = c + a * (np.arange(self.shape[1], dtype=np.float64) + 0.5)
        y = f + e * (np.arange(self.shape[0], dtype=np.float64) + 0.5)
        return Grid(y, x, wkt, *crs_mod.axis_attrs(wkt))

    def _packing(self, band: int) -> Packing:
        items = {**self.items, **self.band_items.get(band, {})}
        scale, offset = self.scales[band - 1], self.offsets[band - 1]
        if scale in (None, 1.0) and offset in (None, 0.0):
            scale = _number(items.get("gain", ("", {}))[0], 1.0)
            offset = _number(items.get("offset", ("", {}))[0], 0.0)
        nodata = self.nodata[band - 1]
        if nodata is None:
            nodata = _number(items.get("nodata", ("", {}))[0], None)
        fills = () if nodata is None else (float(nodata),)
        return Packing(scale=float(scale or 1.0), offset=float(offset or 0.0), fills=fills)

    def _attrs(self) -> dict[str, str]:
        if grib.is_grib(self.band_tags[0] if self.band_tags else {}):
            out = {"units": self.units[0] or grib.units(self.band_tags[0])}
            if grib.long_name(self.band_tags[0]):
                out["long_name"] = grib.long_name(self.band_tags[0])
            return out
        lowered = {k.lower(): v for k, v in self.tags.items()}
        quantity = self.items.get("quantity")
        units = self.units[0] or (quantity[1].get("unit") if quantity else "") or ""
        units = units or lowered.get("units", "")
        out = {"units": units}
        long_name = lowered.get("long_name") or (quantity[0] if quantity else "")
        if long_name:
            out["long_name"] = long_name
        if lowered.get("standard_name"):
            out["standard_name"] = lowered["standard_name"]
        return out

    # -- times --------------------------------------------------------------------------------

    def _times(self, time_pattern: str | None) -> tuple[np.ndarray | None, str]:
        if self.count > 1:
            return self._band_times()
        if time_pattern:
            return t.time_from_name(self.path, [time_pattern])
        found = self._band_time(1)
        if found is not None:
            return np.array([found[0]]), found[1]
        found = self._dataset_time()
        if found is not None:
            return np.array([found[0]]), found[1]
        named, note = t.time_from_name(self.path, t.AUTO_PATTERNS)
        if named is not None:
            return named, note
        return None, (
            f"band tags ({'/'.join(t.TIME_KEYS)}), band description, dataset tags, GDAL metadata "
            f"items, TIFFTAG_DATETIME, {note}"
        )

    def _band_times(self) -> tuple[np.ndarray | None, str]:
        times = []
        for band in range(1, self.count + 1):
            found = self._band_time(band)
            if found is None:
                return None, (
                    f"band {band}: band tags ({'/'.join(t.TIME_KEYS)}) and band description "
                    "(a file of several bands needs a time per band)"
                )
            times.append(found[0])
        return np.array(times, dtype="datetime64[ns]"), "band tags or descriptions"

    def _band_time(self, band: int) -> tuple[np.datetime64, str] | None:
        valid = grib.valid_time(self.band_tags[band - 1])
        if valid is not None:
            return valid, f"band {band} GRIB_VALID_TIME"
        found = _first_time(self.band_items.get(band, {}))
        if found is not None:
            return found[0], f"band {band} metadata {found[1]!r}"
        description = self.descriptions[band - 1]
        if description:
            time = t.parse_time_string(description) or t.time_in_text(description, t.AUTO_PATTERNS)
            if time is not None:
                return time, "band description"
        return None

    def _dataset_time(self) -> tuple[np.datetime64, str] | None:
        found = _first_time(self.items)
        if found is not None:
            return found[0], f"metadata {found[1]!r}"
        item = self.items.get("tifftag_datetime")
        time = _item_time(item) if item else None
        return (time, "TIFFTAG_DATETIME") if time is not None else None


def _check_complete(src: rasterio.io.DatasetReader, path: Path) -> None:
    """A truncated GeoTIFF opens fine (its header comes first); its last blocks then point past
    the end of the file. Checking them now names the file before any frame is computed."""
    size = path.stat().st_size
    rows, cols = src.block_shapes[0]
    last = f"{math.ceil(src.width / cols) - 1}_{math.ceil(src.height / rows) - 1}"
    for band in {1, src.count}:
        offset = _number(src.get_tag_item(f"BLOCK_OFFSET_{last}", "TIFF", bidx=band), None)
        length = _number(src.get_tag_item(f"BLOCK_SIZE_{last}", "TIFF", bidx=band), None)
        if offset and length and offset + length > size:
            raise InputError(
                f"{path}: truncated GeoTIFF ({size} bytes; its last block ends at "
                f"{int(offset + length)})"
            )


def _gdal_items(xml: str) -> tuple[dict, dict[int, dict]]:
    """Items of a raw `GDAL_METADATA` TIFF tag, as {lower name: (text, attributes)}, for the
    dataset and per band (`sample` attribute). Parsed with a regex: the tag is flat, and this
    avoids feeding file contents to an XML parser."""
    dataset: dict[str, tuple[str, dict]] = {}
    bands: dict[int, dict[str, tuple[str, dict]]] = {}
    for attr_text, body in _ITEM.findall(xml):
        attrs = {k.lower(): html.unescape(v) for k, v in _ATTR.findall(attr_text)}
        name = attrs.pop("name", "").strip().lower()
        if not name or attrs.get("role"):  # roles (scale, offset, ...) are rasterio's already
            continue
        value = (html.unescape(body).strip(), attrs)
        if "sample" in attrs and attrs["sample"].isdigit():
            bands.setdefault(int(attrs["sample"]) + 1, {})[name] = value
        else:
            dataset[name] = value
    return dataset, bands


def _first_time(items: dict[str, tuple[str, dict]]) -> tuple[np.datetime64, str] | None:
    """The first item among the usual time keys that holds a readable time."""
    for key in t.TIME_KEYS:
        item = items.get(key)
        time = _item_time(item) if item else None
        if time is not None:
            return time, key
    return None


def _item_time(item: tuple[str, dict]) -> np.datetime64 | None:
    text, attrs = item
    fmt = attrs.get("format")
    return t.parse_time_string(text, t.gdal_format_to_strftime(fmt) if fmt else None)


def _number(text: object, default: float | None) -> float | None:
    try:
        return float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return default
