"""Coastlines and land borders to draw over a map, from files already on this machine; never
downloads (`coastline_files` says where they come from, in this order):

1. `source` (`stforecast plot --coastlines PATH`), else `$STFORECAST_COASTLINES`: a shapefile
   (`.shp`, read with cartopy's reader, the `[maps]` extra; its `.prj` gives the CRS, else
   lon/lat), a GeoJSON file (`.geojson`/`.json`, lon/lat as RFC 7946 says; read with the
   standard library) or a directory of them. `none` (or `off`) draws none.
2. Natural Earth shapefiles (coastline, land borders) that cartopy already has on disk, under
   `cartopy.config["pre_existing_data_dir"]` or `["data_dir"]`: the files are looked for here
   and read with `cartopy.io.shapereader.Reader`; cartopy's `natural_earth()` / `path()`, which
   download what is missing, are never called.
3. Nothing: the maps get their graticule alone.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stforecast.errors import InputError

__all__ = ["COASTLINES_ENV", "coastline_files", "file_crs", "natural_earth_file", "read_lines"]

COASTLINES_ENV = "STFORECAST_COASTLINES"
OFF = ("none", "off", "no", "")
NATURAL_EARTH = (("physical", "coastline"), ("cultural", "admin_0_boundary_lines_land"))


def natural_earth_file(resolution: str, category: str, name: str) -> Path | None:
    """A Natural Earth shapefile that cartopy already has on disk (its pre-existing data
    directory, then its data directory), or None: without cartopy, or when cartopy would have
    to download it. Never downloads: the paths are checked here, cartopy's own `path()` (which
    downloads what is missing) is not called."""
    try:
        import cartopy
        from cartopy.io import Downloader
    except ImportError:
        return None
    try:
        downloader = Downloader.from_config(
            ("shapefiles", "natural_earth", resolution, category, name)
        )
        spec = {
            "config": cartopy.config,
            "category": category,
            "name": name,
            "resolution": resolution,
        }
        candidates = [downloader.pre_downloaded_path(spec), downloader.target_path(spec)]
    except Exception:  # a configuration cartopy does not know: no data
        return None
    return next((Path(c) for c in candidates if c is not None and Path(c).is_file()), None)


def _resolutions(span_km: float) -> tuple[str, ...]:
    if span_km <= 1000:
        return ("10m", "50m", "110m")
    if span_km <= 5000:
        return ("50m", "10m", "110m")
    return ("110m", "50m", "10m")


def coastline_files(
    source: str | os.PathLike[str] | None = None, span_km: float = 500.0
) -> tuple[list[Path], str]:
    """The files to draw coastlines from and a note saying where they come from (see the
    module docstring for the order); `([], "")` when there are none. A `source` that does not
    exist raises `InputError`."""
    given = source if source is not None else os.environ.get(COASTLINES_ENV)
    if given is not None:
        if str(given).strip().lower() in OFF:
            return [], ""
        path = Path(given).expanduser()
        if path.is_dir():
            files = sorted(
                p for p in path.iterdir() if p.suffix.lower() in (".shp", ".geojson", ".json")
            )
            return files, f"coastlines: {path.name}"
        if path.is_file():
            return [path], f"coastlines: {path.name}"
        raise InputError(f"{path}: no such coastline file or directory ({COASTLINES_ENV})")
    for resolution in _resolutions(span_km):
        files = [natural_earth_file(resolution, c, n) for c, n in NATURAL_EARTH]
        found = [f for f in files if f is not None]
        if found:
            return found, f"coastlines: Natural Earth {resolution}"
    return [], ""


def file_crs(path: Path) -> str:
    prj = path.with_suffix(".prj")
    if path.suffix.lower() == ".shp" and prj.is_file():
        return prj.read_text(errors="replace")
    return "EPSG:4326"


def _geojson_parts(node: Any) -> Iterator[np.ndarray]:
    """Every line of a GeoJSON object (rings of polygons included) as (N, 2) arrays."""
    if not isinstance(node, dict):
        return
    kind = node.get("type")
    if kind == "FeatureCollection":
        for feature in node.get("features") or []:
            yield from _geojson_parts(feature)
    elif kind == "Feature":
        yield from _geojson_parts(node.get("geometry"))
    elif kind == "GeometryCollection":
        for geometry in node.get("geometries") or []:
            yield from _geojson_parts(geometry)
    else:
        depth = {"LineString": 0, "MultiLineString": 1, "Polygon": 1, "MultiPolygon": 2}
        if kind not in depth:
            return
        parts: list[Any] = [node.get("coordinates") or []]
        for _ in range(depth[kind]):
            parts = [p for group in parts for p in group]
        for part in parts:
            arr = np.asarray(part, dtype=np.float64)
            if arr.ndim == 2 and arr.shape[0] >= 2 and arr.shape[1] >= 2:
                yield arr[:, :2]


def _shapefile_parts(path: Path, bbox: Sequence[float] | None) -> Iterator[np.ndarray]:
    import shapely
    from cartopy.io.shapereader import Reader

    reader = Reader(path, bbox=tuple(bbox) if bbox is not None else None)
    try:
        for geometry in reader.geometries():
            if geometry.geom_type in ("Polygon", "MultiPolygon"):
                geometry = geometry.boundary
            for part in shapely.get_parts(geometry):
                arr = np.asarray(part.coords, dtype=np.float64)
                if arr.shape[0] >= 2:
                    yield arr[:, :2]
    finally:
        reader.close()


def read_lines(path: Path, bbox: Sequence[float] | None = None) -> tuple[list[np.ndarray], str]:
    """The lines of a shapefile or GeoJSON file (polygons as their rings) in the file's CRS,
    and that CRS; `bbox` (in the file's CRS) keeps a shapefile's shapes that touch it."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".shp":
            try:
                parts = list(_shapefile_parts(path, bbox))
            except ImportError:
                raise InputError(
                    f"{path}: reading shapefiles needs cartopy (pip install 'stforecast[maps]'); "
                    "a GeoJSON file needs nothing"
                ) from None
            return parts, file_crs(path)
        with open(path, encoding="utf-8") as f:
            return list(_geojson_parts(json.load(f))), "EPSG:4326"
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: not a readable shapefile or GeoJSON file ({err})") from None
