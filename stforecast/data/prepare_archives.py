"""`prepare` for several archives (`data.archives`, or `data.spacing`): one store, one zarr
group per archive, windows from all of them.

Each archive is brought to the model's time step and grid spacing (`data.archives.process`),
split on its own times (`data.split`, or the archive's own `split`: fractions are applied to
each archive, so the validation and test splits cover every archive), and written with its own
coverage mask. The transform is fitted on the training frames of all archives together; the
manifest (format 3) lists every archive, and windows are `[archive index, start]` pairs.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import zarr

from stforecast import __version__
from stforecast.config import DataConfig
from stforecast.data import transforms
from stforecast.data.archives import (
    ArchiveSettings,
    archive_entry,
    archive_grid,
    archive_settings,
    process,
)
from stforecast.data.contract import DataContract, Grid, Processing, Transform
from stforecast.data.prepare import (
    Progress,
    fill_values,
    normalise_group,
    physical_fills,
    publish_store,
    source_records,
    write_physical,
)
from stforecast.data.store import ARCHIVES_FORMAT
from stforecast.data.timestep import check_divides
from stforecast.data.windows import (
    SPLITS,
    assign_splits,
    split_bounds,
    time_record,
    timeline,
    window_starts,
)
from stforecast.errors import ConfigError, InputError
from stforecast.io import open_frames

__all__ = ["prepare_archives", "processed_shape"]


def _open_all(cfg: DataConfig) -> tuple[list[ArchiveSettings], list[Any], int]:
    """Open every archive (headers only) and choose the model step: `data.time_step`, else
    the coarsest archive's."""
    items = archive_settings(cfg)
    opened = []
    for item in items:
        c = item.cfg
        opened.append(open_frames(c.sources, variable=c.variable, time_pattern=c.time_pattern,
                                  recursive=c.recursive))  # fmt: skip
    pairs = zip(items, opened, strict=True)
    steps = {item.name: int(da.attrs.get("time_step") or 0) for item, da in pairs}
    if not all(steps.values()) and not cfg.time_step:
        raise InputError("cannot infer the time step from a single frame; set data.time_step")
    step = int(cfg.time_step or max(steps.values()))
    check_divides(step, {k: v for k, v in steps.items() if v})
    return items, opened, step


def _layout(item: ArchiveSettings, da, step: int, spacing: float | None) -> dict[str, Any]:
    """One archive processed (lazily), with its time line, splits and windows."""
    source_step = int(da.attrs.get("time_step") or step)
    model, native = process(da, item.cfg, step, spacing, item.pixel_size)
    if "channel" not in model.dims:
        model = model.expand_dims("channel", axis=1)
    times = model["time"].values
    line = timeline(times, step)
    split_ids = assign_splits(times, item.cfg.split)
    starts = window_starts(split_ids, line.segment, item.cfg.window, item.cfg.stride)
    entry = archive_entry(item, model, native, source_step)
    return {
        "item": item,
        "da": model,
        "line": line,
        "split": split_ids,
        "starts": starts,
        "entry": entry,
        "sources": da.attrs.get("sources", []),
    }


def prepare_archives(
    cfg: DataConfig, out: str | Path, *, overwrite: bool = False, progress: Progress | None = None
) -> dict[str, Any]:
    """Build the store of several archives at `out`; returns its manifest."""
    transform = transforms.get(cfg.transform, **cfg.transform_options)
    out = Path(out)
    if out.exists() and not overwrite:
        raise ConfigError(f"{out} already exists and overwrite was not asked for")
    report = progress or (lambda stage, done, total: None)
    items, opened, step = _open_all(cfg)
    parts = [_layout(item, da, step, cfg.spacing) for item, da in zip(items, opened, strict=True)]
    channels = {p["da"].sizes["channel"] for p in parts}
    if len(channels) > 1:
        raise InputError(f"the archives have different numbers of channels: {sorted(channels)}")
    physical_fills(cfg, channels.pop())
    if sum(p["starts"]["train"].size for p in parts) == 0:
        raise InputError(
            f"fewer frames than one window ({cfg.input_frames} + {cfg.output_frames}) in the "
            f"training split of every archive ({', '.join(p['item'].name for p in parts)})"
        )
    return publish_store(out, lambda tmp: _write_all(cfg, parts, transform, tmp, step, report))


def _write_all(cfg, parts, transform, tmp: Path, step: int, report: Progress) -> dict[str, Any]:
    n_ch = parts[0]["da"].sizes["channel"]
    fitters = [transform.fitter() for _ in range(n_ch)]
    zarr.open_group(tmp, mode="w", zarr_format=2)
    for p in parts:
        name = p["item"].name
        p["valid"] = write_physical(cfg, p["da"], p["line"], p["split"], tmp, name, fitters, report)
    params = [f.result() for f in fitters]
    fills = fill_values(cfg, params, transform)
    for p in parts:
        normalise_group(tmp, p["item"].name, cfg.chunk_frames, transform, params, fills, report)
    contract = _contract(cfg, parts, transform, params, fills, step)
    return _manifest(cfg, parts, contract, report)


def _contract(cfg, parts, transform, params, fills, step: int) -> DataContract:
    """The contract of a store of several archives: the model's units, transform, spacing and
    step, and every archive (`archives`). Its `grid` is the one archive's, or for several the
    largest frame all archives hold (`shape`) at the spacing, in no CRS."""
    da = parts[0]["da"]
    names = [str(c) for c in da["channel"].values] if "channel" in da.coords else None
    one = names is None
    entries = tuple(p["entry"] for p in parts)
    if len(entries) == 1:
        grid = entries[0].grid
    else:
        shape = (min(e.grid.shape[0] for e in entries), min(e.grid.shape[1] for e in entries))
        s = float(cfg.spacing)
        grid = Grid(shape=shape, transform=(s, 0.0, 0.0, 0.0, -s, 0.0))
    patterns = {e.processing.time_pattern for e in entries}
    variable = da.attrs.get("source_variable", da.name)
    return DataContract(
        variable=variable if one else tuple(names),
        units=da.attrs.get("units", ""),
        channel_units=None if one else tuple(da.attrs.get("channel_units") or ()),
        long_name=da.attrs.get("long_name", ""),
        transform=Transform(transform.name, transform.options, params[0] if one else params),
        fill_value=fills["physical"][0] if one else tuple(fills["physical"]),
        fill_value_normalised=fills["normalised"][0] if one else tuple(fills["normalised"]),
        grid=grid,
        time_step_seconds=step,
        input_frames=cfg.input_frames,
        output_frames=cfg.output_frames,
        processing=Processing(
            units=cfg.units,
            source_units=None,
            zr=tuple(cfg.zr),
            spacing=cfg.spacing,
            time_pattern=patterns.pop() if len(patterns) == 1 else None,
        ),
        channels=1 if one else len(names),
        archives=entries,
    )


def _archive_manifest(p: dict[str, Any], report: Progress) -> dict[str, Any]:
    line, split_ids, starts, valid = p["line"], p["split"], p["starts"], p["valid"]
    ny, nx = p["da"].shape[-2:]
    return {
        "name": p["item"].name,
        "grid": archive_grid(p["da"]).to_dict(),
        "sources": source_records(p["sources"], report),
        "time": time_record(line),
        "missing": {
            "frames_with_missing": int((valid.min(axis=1) < ny * nx).sum()),
            "missing_fraction": float(1 - valid.sum() / (valid.size * ny * nx)),
        },
        "split": {
            "bounds": split_bounds(line.times, split_ids, line.step),
            "frames": {name: int((split_ids == k).sum()) for k, name in enumerate(SPLITS)},
        },
        "windows": {name: int(starts[name].size) for name in SPLITS},
    }


def _manifest(cfg, parts, contract: DataContract, report: Progress) -> dict[str, Any]:
    starts = {
        name: [[a, int(s)] for a, p in enumerate(parts) for s in p["starts"][name]]
        for name in SPLITS
    }
    archives = [_archive_manifest(p, report) for p in parts]
    return {
        "format_version": ARCHIVES_FORMAT,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "software": f"stforecast {__version__}",
        "contract": contract.to_manifest(),
        "archives": archives,
        "sources": [s for a in archives for s in a["sources"]],
        "time": {
            "start": min(a["time"]["start"] for a in archives),
            "end": max(a["time"]["end"] for a in archives),
            "frames": sum(a["time"]["frames"] for a in archives),
            "gaps": [{**g, "archive": a["name"]} for a in archives for g in a["time"]["gaps"]],
        },
        "missing": {
            "frames_with_missing": sum(a["missing"]["frames_with_missing"] for a in archives),
            "note": "missing values are filled in the store; `coverage` marks valid pixels",
        },
        "split": {
            "method": "per archive",
            "frames": {n: sum(a["split"]["frames"][n] for a in archives) for n in SPLITS},
        },
        "windows": {
            "stride": cfg.stride,
            "counts": {name: len(starts[name]) for name in SPLITS},
            "starts": starts,
            "layout": "[archive index, start frame] pairs; archives in the order of `archives`",
        },
        "config": cfg.model_dump(mode="json"),
    }


def processed_shape(cfg: DataConfig) -> tuple[tuple[int, int], int]:
    """The largest frame all archives hold after their processing, and the channels, from the
    files' headers (nothing is read): what `train --dry-run` needs."""
    items, opened, step = _open_all(cfg)
    shapes, channels = [], set()
    for item, da in zip(items, opened, strict=True):
        model, _ = process(da, item.cfg, step, cfg.spacing, item.pixel_size)
        shapes.append((model.sizes["y"], model.sizes["x"]))
        channels.add(model.sizes.get("channel", 1))
    return (min(s[0] for s in shapes), min(s[1] for s in shapes)), max(channels)
