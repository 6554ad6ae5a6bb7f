"""`prepare`: frames on disk -> a normalised, split, windowed store that training reads.

In order, each step configurable in `[data]`:
  1. open the sources lazily (`stforecast.io.open_frames`), selecting the variable(s);
  2. check the time step and find gaps (segments);
  3. convert units (dBZ <-> rain rate with Z = a R^b, accumulation per step -> rate);
  4. crop (bounding box in the data's CRS, or pixels), then coarsen (NaN-aware block mean) or
     resize to the model grid;
  5. split chronologically (fractions or time ranges) and lay out windows of T_in + T_out frames
     that never span a gap or mix splits;
  6. stream the frames once: physical values and the coverage mask into the store, the transform's
     statistics from the training frames; then normalise the store in place, chunk by chunk;
  7. write the manifest and move the finished store into place.

Memory stays flat in the number of frames: data moves `chunk_frames` frames at a time. The store is
built in a temporary directory beside the target and renamed at the end, so a failure leaves
nothing behind and an existing store is only replaced (with `overwrite`) once the new one is whole.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dask
import dask.array
import numpy as np
import xarray as xr
import zarr

from stforecast import __version__
from stforecast.config import DataConfig
from stforecast.data import transforms
from stforecast.data.contract import DataContract, Grid, Processing, Transform
from stforecast.data.resample import grid_frames
from stforecast.data.store import FORMAT_VERSION, write_manifest
from stforecast.data.windows import (
    SPLITS,
    assign_splits,
    fmt,
    split_bounds,
    time_record,
    timeline,
    window_starts,
)
from stforecast.errors import ConfigError, InputError, environment_error, writing
from stforecast.io import open_frames
from stforecast.io.sources import sha256

Progress = Callable[[str, int, int], None]


def _channels(da: xr.DataArray) -> list[str] | None:
    return [str(c) for c in da["channel"].values] if "channel" in da.dims else None


def prepare(
    cfg: DataConfig,
    out: str | Path,
    *,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Build the prepared store at `out`; returns its manifest."""
    if cfg.archives or cfg.spacing is not None:  # a store of one group per archive
        from stforecast.data.prepare_archives import prepare_archives

        return prepare_archives(cfg, out, overwrite=overwrite, progress=progress)
    if not cfg.sources:
        raise ConfigError("[data] sources: nothing to prepare (give files, directories or globs)")
    transform = transforms.get(cfg.transform, **cfg.transform_options)  # unknown -> exit 2 early
    out = Path(out)
    if out.exists() and not overwrite:
        raise ConfigError(f"{out} already exists and overwrite was not asked for")
    report = progress or (lambda stage, done, total: None)

    da = open_frames(
        cfg.sources, variable=cfg.variable, time_pattern=cfg.time_pattern, recursive=cfg.recursive
    )
    physical_fills(cfg, da.sizes.get("channel", 1))  # a wrong count fails before any reading
    step = cfg.time_step or da.attrs.get("time_step")
    if not step:
        raise InputError("cannot infer the time step from a single frame; set data.time_step")
    times = da["time"].values
    line = timeline(times, int(step))
    da = grid_frames(cfg, da, int(step))
    if "channel" not in da.dims:
        da = da.expand_dims("channel", axis=1)
        channel_names = None
    else:
        channel_names = _channels(da)
    split_ids = assign_splits(times, cfg.split)
    starts = window_starts(split_ids, line.segment, cfg.window, cfg.stride)
    if starts["train"].size == 0:
        counts = {SPLITS[k]: int((split_ids == k).sum()) for k in range(3)}
        raise InputError(
            f"fewer frames than one window ({cfg.input_frames} + {cfg.output_frames}) "
            f"in the training split (frames per split: {counts}; gaps: {len(line.gaps)})"
        )

    def fill(tmp: Path) -> dict[str, Any]:
        stats = _write(cfg, da, line, split_ids, transform, tmp, report)
        manifest = _manifest(cfg, da, line, split_ids, starts, transform, channel_names, stats)
        manifest["sources"] = source_records(da.attrs.get("sources", []), report)
        return manifest

    return publish_store(out, fill)


def publish_store(out: Path, fill: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:
    """Write a store beside `out` (`fill(tmp)` writes its arrays and returns its manifest),
    consolidate it, and swap it into place; on any failure, or a signal, the half-written store
    is removed and `out` is left as it was. Returns the manifest."""
    tmp = out.parent / f".{out.name}.tmp"
    # Any OSError while writing (a read-only or full disk; zarr's may name no file) is the
    # store's: the sources' read errors are InputErrors already (`io.frames`, `sha256`).
    with writing(out, "write the store"):
        if tmp.exists():
            shutil.rmtree(tmp)  # left by a killed run: ours, never the user's
        try:
            manifest = fill(tmp)
            zarr.consolidate_metadata(str(tmp))
            write_manifest(tmp, manifest)
            replace_store(tmp, out)
        except BaseException:
            discard_store(tmp)
            raise
    return manifest


def source_records(sources: list, report: Progress) -> list[dict[str, Any]]:
    """Path, checksum and size of each source, for the manifest."""
    entries = []
    for i, path in enumerate(sources):
        try:
            size = Path(path).stat().st_size
        except OSError as err:
            raise environment_error(err, path, "read") from None
        entries.append({"path": str(path), "sha256": sha256(path), "bytes": size})
        report("checksums", i + 1, len(sources))
    return entries


def discard_store(tmp: Path) -> None:
    """Remove a failed store, for good. When one of zarr's concurrent writes fails (a full
    disk), the others run on in its thread pool for a moment and may create files, even the
    directory, after a first removal: remove again until it stays gone (a second at most)."""
    for pause in (0.05, 0.15, 0.3, 0.5):
        shutil.rmtree(tmp, ignore_errors=True)
        time.sleep(pause)
        if not os.path.lexists(tmp):
            return
    shutil.rmtree(tmp, ignore_errors=True)


def replace_store(tmp: Path, out: Path) -> None:
    """Move the finished store into place; an old store is removed only after the swap."""
    if out.exists():
        old = out.parent / f".{out.name}.old"
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
        try:
            tmp.rename(out)
        except BaseException:
            old.rename(out)  # the old store back in place
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out)


def _write(cfg, da, line, split_ids, transform, tmp: Path, report: Progress) -> dict:
    """Stream physical frames into the store (one read of the sources), fit the transform on the
    training frames as they pass, then normalise in place."""
    fitters = [transform.fitter() for _ in range(da.shape[1])]
    valid_counts = write_physical(cfg, da, line, split_ids, tmp, None, fitters, report)
    params = [f.result() for f in fitters]
    fills = fill_values(cfg, params, transform)
    normalise_group(tmp, None, cfg.chunk_frames, transform, params, fills, report)
    return {"params": params, "fills": fills, "valid_counts": valid_counts}


def write_physical(cfg, da, line, split_ids, tmp: Path, group: str | None, fitters,
                   report: Progress) -> np.ndarray:  # fmt: skip
    """Physical frames and coverage of `da` into the zarr group `group` of `tmp` (the root for
    None), the training frames passed to `fitters`; returns valid values per (frame, channel)."""
    n, n_ch, ny, nx = da.shape
    chunk = cfg.chunk_frames
    template = xr.Dataset(
        {
            "frames": (
                ("time", "channel", "y", "x"),
                dask.array.zeros((n, n_ch, ny, nx), chunks=(chunk, n_ch, ny, nx), dtype="f4"),
            ),
            "coverage": (
                ("time", "y", "x"),
                dask.array.zeros((n, ny, nx), chunks=(chunk, ny, nx), dtype=bool),
            ),
            "split": ("time", split_ids),
            "segment": ("time", line.segment),
        },
        coords={k: da[k].values for k in ("time", "channel", "y", "x") if k in da.coords},
    )
    template.to_zarr(tmp, group=group, mode="w" if group is None else "a", compute=False,
                     consolidated=False, zarr_format=2)  # fmt: skip
    root = zarr.open_group(tmp, mode="r+")
    node = root if group is None else root[group]
    frames, coverage = node["frames"], node["coverage"]
    valid_counts = np.zeros((n, n_ch), dtype=np.int64)
    with dask.config.set(scheduler="threads"):
        for i in range(0, n, chunk):
            j = min(i + chunk, n)
            block = np.asarray(da.isel(time=slice(i, j)).values, dtype=np.float32)
            valid = np.isfinite(block)
            valid_counts[i:j] = valid.sum(axis=(2, 3))
            empty = np.flatnonzero(valid_counts[i:j].min(axis=1) == 0)
            if empty.size:
                raise InputError(f"frame at {fmt(line.times[i + empty[0]])} has no valid value")
            train = split_ids[i:j] == 0
            if train.any():
                for c in range(n_ch):
                    fitters[c].update(block[train, c])
            frames[i:j] = block
            coverage[i:j] = valid.all(axis=1)
            report("reading" if group is None else f"reading {group}", j, n)
    return valid_counts


def normalise_group(tmp: Path, group: str | None, chunk: int, transform, params, fills,
                    report: Progress) -> None:  # fmt: skip
    """Normalise the physical frames of one group in place, chunk by chunk."""
    root = zarr.open_group(tmp, mode="r+")
    frames = (root if group is None else root[group])["frames"]
    n = frames.shape[0]
    for i in range(0, n, chunk):
        j = min(i + chunk, n)
        frames[i:j] = transforms.normalise_frames(
            frames[i:j], transform, params, fills["normalised"]
        )
        report("normalising" if group is None else f"normalising {group}", j, n)


def physical_fills(cfg: DataConfig, channels: int) -> list[float]:
    if not isinstance(cfg.fill_value, list):
        return [float(cfg.fill_value)] * channels
    if len(cfg.fill_value) != channels:
        raise ConfigError(f"fill_value: {len(cfg.fill_value)} values for {channels} channel(s)")
    return [float(v) for v in cfg.fill_value]


def fill_values(cfg: DataConfig, params: list[dict], transform) -> dict:
    """The value written where data is missing: `fill_value` (physical units; one for every
    channel, or one per channel), through the transform."""
    physical = physical_fills(cfg, len(params))
    normalised = [
        float(np.asarray(transform.forward(np.array([p], dtype=np.float64), params[c]))[0])
        for c, p in enumerate(physical)
    ]
    return {"physical": physical, "normalised": normalised}


def _contract(cfg, da, line, transform, channels, stats) -> DataContract:
    """The data contract of the prepared frames (`stforecast.data.contract`)."""
    _, _, ny, nx = da.shape
    variable = da.attrs.get("source_variable", da.name)
    one = channels is None
    return DataContract(
        variable=variable if one else tuple(channels),
        units=da.attrs.get("units", ""),
        channel_units=None if one else _tuple(da.attrs.get("channel_units")),
        long_name=da.attrs.get("long_name", ""),
        transform=Transform(
            transform.name, transform.options, stats["params"][0] if one else stats["params"]
        ),
        fill_value=stats["fills"]["physical"][0] if one else tuple(stats["fills"]["physical"]),
        fill_value_normalised=stats["fills"]["normalised"][0]
        if one
        else tuple(stats["fills"]["normalised"]),
        grid=Grid(
            shape=(ny, nx),
            crs_wkt=da.attrs.get("crs_wkt", ""),
            transform=tuple(da.attrs.get("transform", [])),
            x=(float(da["x"].values[0]), float(da["x"].values[-1])),
            y=(float(da["y"].values[0]), float(da["y"].values[-1])),
        ),
        time_step_seconds=line.step,
        input_frames=cfg.input_frames,
        output_frames=cfg.output_frames,
        processing=Processing(
            units=cfg.units,
            source_units=cfg.source_units,
            zr=tuple(cfg.zr),
            crop_bbox=_tuple(cfg.crop_bbox),
            crop_pixels=_tuple(cfg.crop_pixels),
            coarsen=cfg.coarsen,
            resize=_tuple(cfg.resize),
            time_pattern=cfg.time_pattern,
        ),
        channels=1 if one else len(channels),
    )


def _tuple(value: Any) -> Any:
    return None if value is None else tuple(value)


def _manifest(cfg, da, line, split_ids, starts, transform, channels, stats) -> dict[str, Any]:
    n, n_ch, ny, nx = da.shape
    valid_counts = stats["valid_counts"]
    per_frame = valid_counts.min(axis=1) / float(ny * nx)
    frames_missing = int((per_frame < 1).sum())
    contract = _contract(cfg, da, line, transform, channels, stats)
    return {
        "format_version": FORMAT_VERSION,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "software": f"stforecast {__version__}",
        "contract": contract.to_manifest(),
        "missing": {
            "frames_with_missing": frames_missing,
            "missing_fraction": float(1 - valid_counts.sum() / (n * n_ch * ny * nx)),
            "note": "missing values are filled in the store; `coverage` marks valid pixels",
        },
        "time": time_record(line),
        "split": {
            "method": "time ranges" if cfg.split.by_time else "fractions",
            "fractions": None if cfg.split.by_time else list(cfg.split.fractions),
            "bounds": split_bounds(line.times, split_ids, line.step),
            "frames": {name: int((split_ids == k).sum()) for k, name in enumerate(SPLITS)},
        },
        "windows": {
            "stride": cfg.stride,
            "counts": {name: int(starts[name].size) for name in SPLITS},
            "starts": {name: starts[name].tolist() for name in SPLITS},
        },
        "config": cfg.model_dump(mode="json"),
    }
