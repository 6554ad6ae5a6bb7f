"""The GeoTIFF forecast writer: one variable, band k = lead k, written band after band
(`stforecast.io.write.write_forecast` drives it and makes the file appear atomically).

Band-interleaved and tiled, so bands are written one after the other and GDAL never rewrites a
compressed block; written bands wait in GDAL's block cache (bounded by `GDAL_CACHEMAX`) until
flushed, never in Python. The template's global attributes become file tags, as the NetCDF
writer makes them global attributes, with the grid's ACDD extent (`geospatial_lat_min`, ...).

A Cloud-Optimized GeoTIFF (`cog=True`) is that file copied, once complete, by GDAL's COG
driver (which creates by copy only) to a second temporary name that replaces it: the same tags,
descriptions and band tags, DEFLATE with the floating-point predictor, 256-pixel tiles, overviews
by averaging (nodata is skipped) down to one tile, and the IFDs before the data (`LAYOUT=COG`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from stforecast.io import cf
from stforecast.io.grid import geotransform
from stforecast.io.layout import Layout
from stforecast.io.times import iso_duration, iso_time, tiff_datetime

TILE = 256  # tile edge, pixels


def _block(size: int) -> int:
    """Tile edge: 256, or the size rounded up to a multiple of 16 (TIFF's rule) when smaller."""
    return min(TILE, 16 * math.ceil(size / 16))


class GeoTIFFWriter:
    def __init__(self, tmp: Path, template: Any, layout: Layout, cog: bool = False) -> None:
        import rasterio
        from rasterio.transform import Affine

        self.layout = layout
        self.name = layout.fields[0]
        self.dst = None
        # a COG is copied from the plain tiled GeoTIFF at `tmp` to a second temporary name
        # (swept as `tmp` is by `atomic.remove_stale_temps` after a kill), then renamed to `tmp`
        self.path = tmp
        self.cog = tmp.with_name(tmp.name.removesuffix(".tmp") + "_cog.tmp") if cog else None
        self.units = str(template[self.name].attrs.get("units", ""))
        self.reference = iso_time(layout.reference_ns)
        # No .aux.xml sidecar next to the temporary name: everything fits in the TIFF's tags.
        self.env = rasterio.Env(GDAL_PAM_ENABLED="NO")
        self.env.__enter__()
        self.env_open = True
        try:
            y = np.asarray(template[layout.ydim].values, dtype=np.float64)
            x = np.asarray(template[layout.xdim].values, dtype=np.float64)
            transform = Affine(*geotransform(y, x, template.attrs.get("geotransform")))
            with warnings.catch_warnings():
                # pixel space (a source without coordinates) is meant: no warning on the terminal
                warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
                self.dst = rasterio.open(
                    self.path,
                    "w",
                    driver="GTiff",
                    width=layout.nx,
                    height=layout.ny,
                    count=layout.n,
                    dtype="float32",
                    crs=_rasterio_crs(template, layout),
                    transform=transform,
                    nodata=float(cf.FILL_VALUE),
                    compress="deflate",
                    predictor=3,
                    tiled=True,
                    blockxsize=_block(layout.nx),
                    blockysize=_block(layout.ny),
                    interleave="band",
                    bigtiff="if_safer",
                )
            self.dst.update_tags(**self._file_tags(template))
        except BaseException:
            self.abort()
            raise

    def _file_tags(self, template: Any) -> dict[str, str]:
        """Every global attribute, the variable's names and units, and TIFF's own tags."""
        lay = self.layout
        geospatial = cf.grid_geospatial(template, lay.ydim, lay.xdim, lay.grid_mapping)
        tags = cf.file_attrs({**template.attrs, **geospatial}, numeric_lists=False)
        tags = {
            k: v if isinstance(v, str) else json.dumps(v, default=cf.json_default)
            for k, v in tags.items()
        }
        tags["variable"] = self.name
        var_attrs = template[self.name].attrs
        for key in ("standard_name", "long_name", "units", "cell_methods"):
            if key in var_attrs:
                tags[key] = str(var_attrs[key])
        tags["forecast_reference_time"] = self.reference
        tags["TIFFTAG_DATETIME"] = tiff_datetime(self.layout.reference_ns)
        source = template.attrs["source"] if "source" in template.attrs else _software()
        tags["TIFFTAG_SOFTWARE"] = str(source)
        if "title" in template.attrs:
            tags["TIFFTAG_IMAGEDESCRIPTION"] = str(template.attrs["title"])
        return tags

    def write(self, k: int, lead: dict[str, np.ndarray]) -> None:
        band = k + 1
        period = int(self.layout.period_ns[k])
        lead_time = np.timedelta64(period, "ns")
        self.dst.write(lead[self.name], band)
        self.dst.set_band_description(
            band, ("-" if period < 0 else "+") + iso_duration(lead_time, days=False).lstrip("-")
        )
        self.dst.set_band_unit(band, self.units)
        self.dst.update_tags(
            band,
            valid_time=iso_time(int(self.layout.valid_ns[k])),
            forecast_reference_time=self.reference,
            forecast_period=iso_duration(lead_time, days=False),
            units=self.units,
        )

    def close(self) -> None:
        dst, self.dst = self.dst, None
        try:
            dst.close()
            if self.cog is not None:
                self._copy_to_cog()
        finally:
            self._remove_part()
            self._exit_env()

    def _copy_to_cog(self) -> None:
        from rasterio.shutil import copy

        copy(
            self.path,
            self.cog,
            driver="COG",
            compress="DEFLATE",
            predictor="YES",
            blocksize=TILE,
            overview_resampling="AVERAGE",
            bigtiff="IF_SAFER",
        )
        os.replace(self.cog, self.path)

    def abort(self) -> None:
        if self.dst is not None:
            with contextlib.suppress(Exception):
                self.dst.close()
            self.dst = None
        self._remove_part()
        self._exit_env()

    def _remove_part(self) -> None:
        if self.cog is not None:
            with contextlib.suppress(OSError):
                self.cog.unlink()

    def _exit_env(self) -> None:
        if self.env_open:
            self.env_open = False
            self.env.__exit__(None, None, None)


def _software() -> str:
    """What wrote a file whose template names no `source`: this stforecast (by its installed
    version: io does not import the package above it)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"{cf.SOURCE_PREFIX} {version('stforecast')}"
    except PackageNotFoundError:  # run from a source tree that was never installed
        return cf.SOURCE_PREFIX


def _rasterio_crs(template: Any, layout: Layout) -> Any:
    """The template's CRS for GDAL: its EPSG code when pyproj identifies one exactly (GeoTIFF
    keys every reader understands), else its WKT; None without a grid mapping."""
    if layout.grid_mapping is None:
        return None
    import pyproj
    from rasterio.crs import CRS

    from stforecast.io.crs import wkt_from_cf

    wkt = wkt_from_cf(template[layout.grid_mapping].attrs)
    epsg = pyproj.CRS.from_wkt(wkt).to_epsg(min_confidence=100)
    return CRS.from_epsg(epsg) if epsg else CRS.from_wkt(wkt)
