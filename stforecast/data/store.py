"""The prepared store: a zarr directory that xarray opens, plus `manifest.json`.

    frames    (time, [channel,] y, x) float32   normalised values; missing data filled
    coverage  (time, y, x) bool                  True where every channel had a valid value
    split     (time,) int8                       0 train, 1 validation, 2 test, -1 none
    segment   (time,) int32                      runs of frames without gaps

The manifest holds what training, forecasting and evaluation need to use the data and to treat new
data the same way: the data contract (`contract`: variable and units, transform and fitted
parameters, grid and CRS, time step, window lengths, fill values, processing; see
`stforecast.data.contract`), the sources with checksums, the time line, splits and windows.
Format 2; stores of format 1 (the same facts spread over the top level) still open. Format 3
holds several archives of different grids: one zarr group per archive (`<name>/frames`, ...),
`manifest["archives"]` one entry each, and windows as `[archive index, start]` pairs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import xarray as xr

from stforecast.errors import InputError
from stforecast.io.atomic import atomic_write_bytes

MANIFEST = "manifest.json"
FORMAT_VERSION = 2
ARCHIVES_FORMAT = 3  # several archives (`data.archives`, `data.spacing`): one group each
READABLE = (1, 2, 3)  # format 1: before the data contract had its own section


def read_manifest(store: str | Path) -> dict[str, Any]:
    """The manifest of a prepared store (InputError when the directory is not one)."""
    path = Path(store) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{store} is not a prepared store (no {MANIFEST})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{path} is corrupt: {err}") from None
    if manifest.get("format_version") not in READABLE:
        raise InputError(f"{path}: unsupported store format {manifest.get('format_version')!r}")
    return manifest


def write_manifest(store: str | Path, manifest: dict[str, Any]) -> None:
    """Write the manifest atomically (`io.atomic`)."""
    text = json.dumps(manifest, indent=2) + "\n"
    atomic_write_bytes(Path(store) / MANIFEST, text.encode())


def open_store(store: str | Path) -> tuple[xr.Dataset, dict[str, Any]]:
    """The store as a lazy xarray Dataset, with its manifest."""
    manifest = read_manifest(store)
    if manifest.get("format_version") == ARCHIVES_FORMAT:
        raise InputError(
            f"{store} holds several archives ({', '.join(archive_names(manifest))}): open one "
            "with open_archive(store, name)"
        )
    ds = xr.open_zarr(store, consolidated=True)
    return ds, manifest


def archive_names(manifest: dict[str, Any]) -> list[str]:
    """The archives of a store of format 3, in their order (none for older formats)."""
    return [a["name"] for a in manifest.get("archives", [])]


def open_archive(store: str | Path, name: str) -> xr.Dataset:
    """One archive of a store of format 3 as a lazy xarray Dataset."""
    return xr.open_zarr(store, group=name, consolidated=False)
