"""Several archives, one model: each archive's settings, and one path that brings an archive's
frames (or a new forecast input) to the model's time step and grid spacing.

`[[data.archives]]` tables each give what differs between archives (sources, variable, source
units, crop, pixel size, split); the rest of `[data]` applies to all. The single-archive form
(`data.sources`) with `data.spacing` is one archive named `archive1`.

The order of operations, for training frames and new inputs alike: time step (`data.timestep`,
on the source units), units (`resample.grid_frames`), crop, then the spacing
(`data.spacing.to_spacing`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr

from stforecast.config import ArchiveConfig, DataConfig
from stforecast.data.contract import Archive, DataContract, Grid, Processing
from stforecast.data.resample import crop, grid_frames
from stforecast.data.spacing import to_spacing
from stforecast.data.timestep import to_time_step
from stforecast.errors import ConfigError

__all__ = [
    "PIXEL_SIZE",
    "ArchiveSettings",
    "archive_grid",
    "archive_settings",
    "declare",
    "for_input",
    "model_frames",
    "process",
]


#: Attribute of a new input's frames that carries its declared metres per pixel (`declare`).
PIXEL_SIZE = "declared_pixel_size_metres"


@dataclass(frozen=True)
class ArchiveSettings:
    """One archive's `[data]` settings (a whole `DataConfig`) and its pixel size."""

    name: str
    cfg: DataConfig
    pixel_size: float | None = None


def archive_settings(cfg: DataConfig) -> list[ArchiveSettings]:
    """The archives of a `[data]` section, each with the shared settings filled in."""
    if not cfg.archives:
        if not cfg.sources:
            raise ConfigError("[data] sources: nothing to prepare (give sources or archives)")
        return [ArchiveSettings("archive1", cfg.model_copy(update={"archives": []}))]
    out = []
    for i, a in enumerate(cfg.archives):
        update = {
            "sources": list(a.sources),
            "archives": [],
            "variable": a.variable if a.variable is not None else cfg.variable,
            "time_pattern": a.time_pattern or cfg.time_pattern,
            "source_units": a.source_units or cfg.source_units,
            "zr": a.zr or cfg.zr,
            "crop_bbox": a.crop_bbox,
            "crop_pixels": a.crop_pixels,
            "split": a.split or cfg.split,
        }
        out.append(
            ArchiveSettings(
                a.name or f"archive{i + 1}", cfg.model_copy(update=update), a.pixel_size
            )
        )
    return out


def process(
    da: xr.DataArray, cfg: DataConfig, step: int, spacing: float | None, pixel_size: float | None
) -> tuple[xr.DataArray, xr.DataArray]:
    """`da` at the model step and spacing, and on its own grid (units and crop done, before
    the spacing): the model's frames and the grid a forecast is written back on."""
    source_units = cfg.source_units or da.attrs.get("units", "")
    da = to_time_step(da, step, source_units)
    native = grid_frames(cfg, da, step)
    model = native if spacing is None else to_spacing(native, spacing, pixel_size)
    return model, native


def archive_grid(da: xr.DataArray) -> Grid:
    """The grid of a processed stack, as the contract records it."""
    ny, nx = da.sizes["y"], da.sizes["x"]
    return Grid(
        shape=(ny, nx),
        crs_wkt=da.attrs.get("crs_wkt", ""),
        transform=tuple(float(v) for v in da.attrs.get("transform", [])),
        x=(float(da["x"].values[0]), float(da["x"].values[-1])),
        y=(float(da["y"].values[0]), float(da["y"].values[-1])),
    )


def archive_entry(
    item: ArchiveSettings, model: xr.DataArray, native: xr.DataArray, source_step: int
) -> Archive:
    """The contract's entry of one prepared archive."""
    c = item.cfg
    return Archive(
        name=item.name,
        grid=archive_grid(model),
        native=archive_grid(native),
        time_step_seconds=int(source_step),
        time_resampling=model.attrs.get("time_resampling", "none"),
        processing=Processing(
            units=c.units,
            source_units=c.source_units,
            zr=tuple(c.zr),
            crop_bbox=None if c.crop_bbox is None else tuple(c.crop_bbox),
            crop_pixels=None if c.crop_pixels is None else tuple(c.crop_pixels),
            time_pattern=c.time_pattern,
            spacing=c.spacing,
            pixel_size=item.pixel_size,
        ),
    )


def for_input(da: xr.DataArray, contract: DataContract) -> tuple[DataConfig, float | None]:
    """The processing a new input gets from a model trained on several archives: that of the
    training archive whose own grid it has (same CRS, shape and transform after that archive's
    crop), else the model's units and spacing alone (no crop; the pixel size must be known
    from the input's CRS)."""
    from stforecast.config import data_config

    for archive in contract.archives:
        p = archive.processing
        if _same_grid(da, archive.native, p):
            return data_config(
                units=p.units,
                source_units=p.source_units,
                zr=p.zr,
                crop_bbox=p.crop_bbox,
                crop_pixels=p.crop_pixels,
                spacing=p.spacing,
            ), p.pixel_size
    p = contract.processing
    return data_config(units=p.units, zr=p.zr, spacing=p.spacing), da.attrs.get(PIXEL_SIZE)


def declare(da: xr.DataArray, archive: ArchiveConfig, contract: DataContract) -> xr.DataArray:
    """A new input (one no model archive matches, e.g. the radar left out of training) with
    what its files do not say, given as a `[[data.archives]]` entry would give it: its
    `source_units` replace the files' `units` (KNMI: 'mm'), `pixel_size` gives a grid without
    coordinates its metres per pixel, `crop_bbox`/`crop_pixels` cut it first, `zr` must be the
    model's; `variable` (read by the caller) stands for the model's variable, the units check
    still applies. For a model of `data.spacing` only: others take their card's processing."""
    if not contract.processing.spacing:
        raise ConfigError(
            "an archive declaration (--archive) needs a model trained with data.spacing; "
            "this model takes its card's processing"
        )
    if archive.zr is not None and tuple(archive.zr) != tuple(contract.processing.zr):
        model_zr = tuple(contract.processing.zr)
        raise ConfigError(f"zr {tuple(archive.zr)} differs from the model's {model_zr}")
    attrs: dict = {}
    if archive.source_units:
        attrs["units"] = archive.source_units
    if archive.variable is not None:
        attrs["source_variable"] = contract.selection
    if archive.pixel_size is not None:
        attrs[PIXEL_SIZE] = float(archive.pixel_size)
    if archive.crop_bbox is not None or archive.crop_pixels is not None:
        da = crop(da, bbox=archive.crop_bbox, pixels=archive.crop_pixels)
    return da.assign_attrs(attrs)


def _same_grid(da: xr.DataArray, native: Grid, p: Processing) -> bool:
    import pyproj

    try:
        if p.crop_bbox is not None or p.crop_pixels is not None:
            da = crop(da, bbox=p.crop_bbox, pixels=p.crop_pixels)
    except Exception:  # a crop outside this input: not this archive
        return False
    if (da.sizes["y"], da.sizes["x"]) != native.shape:
        return False
    mine, theirs = da.attrs.get("crs_wkt", ""), native.crs_wkt
    if bool(mine) != bool(theirs):
        return False
    if mine and not pyproj.CRS.from_wkt(mine).equals(pyproj.CRS.from_wkt(theirs)):
        return False
    t = da.attrs.get("transform") or []
    return len(t) == len(native.transform) and np.allclose(t, native.transform, rtol=1e-6)


def model_frames(
    da: xr.DataArray, contract: DataContract, step: int
) -> tuple[xr.DataArray, xr.DataArray]:
    """A new input at the model's step and spacing, and on its own grid (see `process`):
    the one path `forecast` and `evaluate`'s hindcast take for a model of `data.spacing`."""
    cfg, pixel_size = for_input(da, contract)
    return process(da, cfg, step, contract.processing.spacing, pixel_size)
