"""What makes a field a map a forecaster can read: axes in km (projected grids) or degrees
(lat-lon grids), a labelled graticule of meridians and parallels computed with pyproj from the
grid's CRS, and coastlines and land borders where their data is on this machine.

    grid = map_grid(ds["precipitation"], ds)          # x/y and the CRS of a forecast
    layers = map_layers(grid)                         # graticule + coastlines, computed once
    draw_layers(ax, grid, layers)                     # on an axes whose extent is grid.extent()

Coastlines and borders come from files already on this machine (`stforecast.viz.coastlines`:
a file or directory given, `$STFORECAST_COASTLINES`, or Natural Earth files that cartopy already
has); nothing here ever reaches the network.

A grid without a CRS gets km ticks when its coordinates are metres (or pixel ticks) and no
graticule; a grid without coordinates is drawn as an image, without ticks.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stforecast.viz.coastlines import coastline_files, file_crs, read_lines

__all__ = [
    "Line",
    "MapGrid",
    "MapLayers",
    "axes_note",
    "crossing",
    "degrees_text",
    "draw_layers",
    "graticule",
    "map_grid",
    "map_layers",
    "style_axes",
]

_STEPS = (0.05, 0.1, 0.2, 0.25, 0.5, 1.0, 2.0, 2.5, 5.0, 10.0, 15.0, 30.0, 45.0, 90.0)
_SAMPLES = 200  # points along each graticule line
LINE_COLOUR = "0.35"  # graticule
COAST_COLOUR = "0.1"


@dataclass(frozen=True)
class MapGrid:
    """Cell centres `x`, `y` (1-D, in the CRS's units), the CRS (WKT, "" when unknown), metres
    per coordinate unit (None for degrees or unknown units) and whether it is lat-lon."""

    x: np.ndarray
    y: np.ndarray
    crs_wkt: str = ""
    metres: float | None = None
    geographic: bool = False
    units: str = ""  # the coordinates' own units, where neither metres nor degrees
    label: str = ""  # what the axes are, where not the CRS's coordinates (`axes_note`)

    @property
    def factor(self) -> float:
        """Coordinate units -> the units shown on the axes (km for metric grids)."""
        return self.metres / 1000.0 if self.metres else 1.0

    @property
    def axis_unit(self) -> str:
        return "km" if self.metres else "°" if self.geographic else self.units

    def extent(self) -> tuple[list[float], str]:
        """imshow's extent (cell edges, in the units shown) and origin, north up whichever
        way the rows run."""
        x, y = self.x * self.factor, self.y * self.factor
        dx, dy = (x[-1] - x[0]) / (x.size - 1), (y[-1] - y[0]) / (y.size - 1)
        left, right = x[0] - dx / 2, x[-1] + dx / 2
        first, last = y[0] - dy / 2, y[-1] + dy / 2
        if dy < 0:  # rows run north to south (the usual raster order): row 0 at the top
            return [left, right, last, first], "upper"
        return [left, right, first, last], "lower"

    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) cell edges in CRS units."""
        (left, right, bottom, top), _ = self.extent()
        return left / self.factor, bottom / self.factor, right / self.factor, top / self.factor

    def lonlat_box(self) -> tuple[float, float, float, float] | None:
        """(lon_min, lat_min, lon_max, lat_max) of the grid, or None without a CRS."""
        if not self.crs_wkt:
            return None
        left, bottom, right, top = self.bounds()
        edge = np.linspace(0.0, 1.0, 50)
        xs = np.concatenate([left + (right - left) * edge, np.full(50, right)])
        xs = np.concatenate([xs, right - (right - left) * edge, np.full(50, left)])
        ys = np.concatenate([np.full(50, bottom), bottom + (top - bottom) * edge])
        ys = np.concatenate([ys, np.full(50, top), top - (top - bottom) * edge])
        lon, lat = _transformer(self.crs_wkt, "EPSG:4326").transform(xs, ys)
        ok = np.isfinite(lon) & np.isfinite(lat)
        if not ok.any():
            return None
        return (
            float(lon[ok].min()),
            float(lat[ok].min()),
            float(lon[ok].max()),
            float(lat[ok].max()),
        )


def _transformer(src: str, dst: str) -> Any:
    from pyproj import Transformer

    return Transformer.from_crs(src, dst, always_xy=True)


# ------------------------------------------------------------------------------ the grid


def _grid_mapping_wkt(da: Any, ds: Any) -> str:
    """The CRS of `da` as WKT: its grid-mapping variable, a `crs`/`spatial_ref` variable, or a
    `crs_wkt` attribute (a GeoTIFF read back); "" when there is none."""
    from stforecast.io.crs import wkt_from_cf

    names = [str(da.attrs.get("grid_mapping", "")), "crs", "spatial_ref"]
    variables = getattr(ds, "variables", {}) if ds is not None else {}
    coords = da.coords
    for name in names:
        holder = variables.get(name) if name in variables else coords.get(name)
        if name and holder is not None and holder.attrs:
            try:
                return wkt_from_cf(dict(holder.attrs))
            except Exception:  # pyproj.CRSError, or attributes that are no grid mapping
                continue
    for attrs in (da.attrs, getattr(ds, "attrs", {}) or {}):
        text = attrs.get("crs_wkt")
        if isinstance(text, str) and text.strip():
            return text
    return ""


def map_grid(da: Any, ds: Any = None) -> MapGrid | None:
    """The grid of a (…, y, x) DataArray from its 1-D coordinates and CRS; None when its
    coordinates cannot place it (none, not numbers, fewer than two, not regular)."""
    from stforecast.io.crs import crs_unit_factor, length_unit_factor

    ydim, xdim = da.dims[-2], da.dims[-1]
    if ydim not in da.coords or xdim not in da.coords:
        return None
    try:
        x = np.asarray(da[xdim].values, dtype=np.float64)
        y = np.asarray(da[ydim].values, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if x.size < 2 or y.size < 2 or not (np.isfinite(x).all() and np.isfinite(y).all()):
        return None
    if x[-1] == x[0] or y[-1] == y[0]:
        return None
    wkt = _grid_mapping_wkt(da, ds)
    x_units = str(da[xdim].attrs.get("units", ""))
    names = {str(xdim).lower(), str(da[xdim].attrs.get("standard_name", "")).lower()}
    lonlat = bool(names & {"lon", "longitude"}) or x_units.startswith("degree")
    metres = None
    if wkt:
        try:
            metres = crs_unit_factor(wkt)
        except Exception:  # an unreadable WKT: place the grid by its coordinates only
            wkt, metres = "", None
    if wkt and metres is None:
        lonlat = True
    elif not wkt and not lonlat:
        metres = length_unit_factor(x_units)
    if lonlat and not wkt:
        wkt = "EPSG:4326"
    return MapGrid(x, y, wkt, metres, lonlat and metres is None, x_units)


# ------------------------------------------------------------------------------ graticule


@dataclass(frozen=True)
class Line:
    """A meridian (`kind="meridian"`, `value` its longitude) or a parallel (latitude), as
    points in the grid's CRS units."""

    kind: str
    value: float
    x: np.ndarray
    y: np.ndarray


def _step(span: float, lines: int) -> float:
    return next((s for s in _STEPS if span / s <= lines), _STEPS[-1])


def graticule(grid: MapGrid, *, lines: int = 6) -> list[Line]:
    """Meridians and parallels across a projected grid, every 0.05° to 90°, at most about
    `lines` of each; computed with pyproj from the grid's CRS. None on a lat-lon grid (its
    axes are degrees already) or a grid without a CRS."""
    box = grid.lonlat_box() if not grid.geographic else None
    if box is None:
        return []
    lon0, lat0, lon1, lat1 = box
    step = _step(max(lon1 - lon0, lat1 - lat0, 1e-6), lines)
    inverse = _transformer("EPSG:4326", grid.crs_wkt)
    out: list[Line] = []
    lats = np.linspace(max(lat0 - step, -89.9), min(lat1 + step, 89.9), _SAMPLES)
    lons = np.linspace(lon0 - step, lon1 + step, _SAMPLES)
    for value in np.arange(math.ceil(lon0 / step) * step, lon1 + 1e-9, step):
        x, y = inverse.transform(np.full(_SAMPLES, value), lats)
        out.append(Line("meridian", round(float(value), 6), np.asarray(x), np.asarray(y)))
    for value in np.arange(math.ceil(lat0 / step) * step, lat1 + 1e-9, step):
        x, y = inverse.transform(lons, np.full(_SAMPLES, value))
        out.append(Line("parallel", round(float(value), 6), np.asarray(x), np.asarray(y)))
    return out


def degrees_text(value: float, kind: str) -> str:
    """`153.5°E`, `27°S`, `0°`."""
    hemisphere = ("E", "W") if kind == "meridian" else ("N", "S")
    text = f"{abs(value):.2f}".rstrip("0").rstrip(".")
    if abs(value) < 1e-9 or (kind == "meridian" and abs(abs(value) - 180) < 1e-9):
        return f"{text}°"
    return f"{text}°{hemisphere[0] if value > 0 else hemisphere[1]}"


def crossing(line: Line, edge: str, grid: MapGrid) -> float | None:
    """Where `line` crosses an edge of the grid (`bottom`/`top`: the x there; `left`/`right`:
    the y), in CRS units, interpolated between its points; None when it does not."""
    left, bottom, right, top = grid.bounds()
    along, across = (line.x, line.y) if edge in ("bottom", "top") else (line.y, line.x)
    level = {"bottom": bottom, "top": top, "left": left, "right": right}[edge]
    lo, hi = (left, right) if edge in ("bottom", "top") else (bottom, top)
    d = across - level
    ok = np.isfinite(d[:-1]) & np.isfinite(d[1:]) & (np.sign(d[:-1]) != np.sign(d[1:]))
    for i in np.flatnonzero(ok):
        t = d[i] / (d[i] - d[i + 1]) if d[i] != d[i + 1] else 0.0
        value = float(along[i] + t * (along[i + 1] - along[i]))
        if min(lo, hi) <= value <= max(lo, hi):
            return value
    return None


# ------------------------------------------------------------------------------ layers


@dataclass
class MapLayers:
    """What is drawn over a map, computed once for every panel of a figure."""

    graticule: list[Line] = field(default_factory=list)
    coasts: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)  # CRS units
    note: str = ""  # where the coastlines came from, "" for none


def _project(
    parts: list[np.ndarray], src: str, grid: MapGrid
) -> list[tuple[np.ndarray, np.ndarray]]:
    """`parts` in the grid's CRS, cut where they leave it (non-finite points)."""
    to_grid = _transformer(src, grid.crs_wkt)
    left, bottom, right, top = grid.bounds()
    pad_x, pad_y = 0.1 * abs(right - left), 0.1 * abs(top - bottom)
    out = []
    for part in parts:
        x, y = to_grid.transform(part[:, 0], part[:, 1])
        x, y = np.asarray(x), np.asarray(y)
        inside = (x >= min(left, right) - pad_x) & (x <= max(left, right) + pad_x)
        inside &= (y >= min(bottom, top) - pad_y) & (y <= max(bottom, top) + pad_y)
        if inside.sum() >= 1 and np.isfinite(x).sum() >= 2:
            out.append((x, y))
    return out


def map_layers(grid: MapGrid | None, coastlines: str | os.PathLike[str] | None = None) -> MapLayers:
    """The graticule and the coastlines of `grid` (none for a grid without a CRS)."""
    if grid is None or not grid.crs_wkt:
        return MapLayers()
    layers = MapLayers(graticule=graticule(grid))
    box = grid.lonlat_box()
    left, bottom, right, top = grid.bounds()
    span_km = max(abs(right - left), abs(top - bottom)) * (grid.metres or 111_000.0) / 1000
    files, note = coastline_files(coastlines, span_km)
    for path in files:
        src = file_crs(path) if path.suffix.lower() == ".shp" else "EPSG:4326"
        lonlat = src == "EPSG:4326"
        bbox = None
        if lonlat and box is not None:
            pad = 0.5
            bbox = (box[0] - pad, box[1] - pad, box[2] + pad, box[3] + pad)
        parts, src = read_lines(path, bbox)
        layers.coasts += _project(parts, src, grid)
    layers.note = note if files else ""
    return layers


def draw_layers(
    ax: Any, grid: MapGrid, layers: MapLayers, *, labels: bool = True, fontsize: float = 6
) -> None:
    """The coastlines, the graticule and its labels (inside the frame, by the bottom and left
    edges) on an axes drawn at `grid.extent()`; the axes keep their limits."""
    xlim, ylim = ax.get_xlim(), ax.get_ylim()
    f = grid.factor
    for x, y in layers.coasts:
        ax.plot(x * f, y * f, color=COAST_COLOUR, linewidth=0.7, zorder=4)
    for line in layers.graticule:
        ax.plot(line.x * f, line.y * f, color=LINE_COLOUR, linewidth=0.4, linestyle=(0, (4, 3)),
                alpha=0.8, zorder=3)  # fmt: skip
    ax.set_xlim(xlim)
    ax.set_ylim(ylim)
    if not labels:
        return
    box = {"boxstyle": "round,pad=0.1", "facecolor": "white", "edgecolor": "none", "alpha": 0.7}
    left, bottom, _right, _top = grid.bounds()
    for line, edge, at in label_positions(grid, layers.graticule):
        bottom_edge = edge == "bottom"
        xy = (at * f, bottom * f) if bottom_edge else (left * f, at * f)
        ax.annotate(
            degrees_text(line.value, line.kind),
            xy,
            xytext=(0, 2) if bottom_edge else (2, 0),
            textcoords="offset points",
            fontsize=fontsize,
            color="0.2",
            zorder=5,
            bbox=box,
            ha="center" if bottom_edge else "left",
            va="bottom" if bottom_edge else "center",
            annotation_clip=False,
        )


def label_positions(grid: MapGrid, lines: list[Line]) -> list[tuple[Line, str, float]]:
    """The graticule labels that fit: each meridian where it crosses the bottom edge, each
    parallel where it crosses the left one (CRS units), none within 12% of a corner, every
    other one where more than four would crowd an edge."""
    left, bottom, right, top = grid.bounds()
    out = []
    for kind, edge, lo, hi in (
        ("meridian", "bottom", left, right),
        ("parallel", "left", bottom, top),
    ):
        margin = 0.12 * abs(hi - lo)
        found = [
            (line, at)
            for line in lines
            if line.kind == kind
            and (at := crossing(line, edge, grid)) is not None
            and min(lo, hi) + margin <= at <= max(lo, hi) - margin
        ]
        if len(found) > 4:
            found = found[::2]
        out += [(line, edge, at) for line, at in found]
    return out


def style_axes(
    ax: Any, grid: MapGrid | None, *, x_labels: bool = True, y_labels: bool = True, size: float = 6
) -> None:
    """Ticks in the units shown (km, degrees, the coordinates' own) on a map's axes, labelled
    where asked; no ticks for a grid without coordinates. A thin grey frame."""
    for spine in ax.spines.values():
        spine.set_linewidth(0.5)
        spine.set_color("0.5")
    if grid is None:
        ax.set_xticks([])
        ax.set_yticks([])
        return
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(nbins=4, steps=[1, 2, 2.5, 5, 10]))
    ax.yaxis.set_major_locator(MaxNLocator(nbins=4, steps=[1, 2, 2.5, 5, 10]))
    ax.tick_params(labelsize=size, length=2, pad=1, colors="0.3")
    if grid.geographic:
        ax.xaxis.set_major_formatter(lambda v, _pos: degrees_text(v, "meridian"))
        ax.yaxis.set_major_formatter(lambda v, _pos: degrees_text(v, "parallel"))
        ax.grid(True, color=LINE_COLOUR, linewidth=0.4, linestyle=(0, (4, 3)), alpha=0.8)
    else:
        ax.xaxis.set_major_formatter(lambda v, _pos: f"{v:g}")
        ax.yaxis.set_major_formatter(lambda v, _pos: f"{v:g}")
    if not x_labels:
        ax.tick_params(labelbottom=False)
    if not y_labels:
        ax.tick_params(labelleft=False)


def axes_note(grid: MapGrid | None, layers: MapLayers) -> str:
    """One line under a map saying what its axes and lines are: `x, y in km (EPSG:3577);
    graticule every 0.5°; coastlines: Natural Earth 10m`."""
    if grid is None:
        return ""
    parts = []
    name = _crs_name(grid.crs_wkt)
    unit = {"km": "km", "°": "degrees"}.get(grid.axis_unit, grid.axis_unit or "grid units")
    parts.append(grid.label or f"x, y in {unit}" + (f" ({name})" if name else ""))
    meridians = sorted({line.value for line in layers.graticule if line.kind == "meridian"})
    if len(meridians) >= 2:
        parts.append(f"graticule every {meridians[1] - meridians[0]:g}°")
    if layers.note:
        parts.append(layers.note)
    elif grid.crs_wkt:
        parts.append("no coastline data on this machine")
    return "; ".join(parts)


def _crs_name(wkt: str) -> str:
    if not wkt:
        return ""
    try:
        from pyproj import CRS

        crs = CRS.from_user_input(wkt)
    except Exception:  # pyproj.CRSError
        return ""
    ident = crs.to_json_dict().get("id") or {}  # the CRS's own code: no database search
    if ident.get("authority") and ident.get("code"):
        return f"{ident['authority']}:{ident['code']}"
    if crs.name and crs.name.lower() not in ("undefined", "unknown", "unnamed"):
        return crs.name
    operation = crs.coordinate_operation
    return operation.method_name if operation is not None else ""
