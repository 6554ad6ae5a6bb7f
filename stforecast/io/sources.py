"""From what the user typed (files, directories, globs) to a list of files and their formats."""

from __future__ import annotations

import glob
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

from stforecast.errors import InputError

NETCDF_SUFFIXES = (".nc", ".nc4", ".cdf")
GEOTIFF_SUFFIXES = (".tif", ".tiff")
SUFFIXES = NETCDF_SUFFIXES + GEOTIFF_SUFFIXES

_MAGIC = (
    (b"CDF\x01", "netcdf"),
    (b"CDF\x02", "netcdf"),
    (b"CDF\x05", "netcdf"),
    (b"\x89HDF\r\n\x1a\n", "netcdf"),
    (b"II*\x00", "geotiff"),
    (b"MM\x00*", "geotiff"),
    (b"II+\x00", "geotiff"),
    (b"MM\x00+", "geotiff"),
)

Source = str | os.PathLike


def resolve(sources: Source | Sequence[Source]) -> list[Path]:
    """Absolute files in the order given; a directory's and a glob's files sorted by name.

    A directory contributes its `.nc .nc4 .cdf .tif .tiff` files (any case, hidden ones skipped);
    a glob the matches with those suffixes or a NetCDF/TIFF signature; a named file is taken
    whatever its suffix. A file named twice is read once.
    """
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    if not sources:
        raise InputError("no sources given (files, directories or glob patterns)")
    files: dict[Path, None] = {}
    for source in sources:
        for path in _expand(source):
            files.setdefault(path.resolve(), None)
    return list(files)


def _expand(source: Source) -> list[Path]:
    text = os.fspath(source)
    path = Path(text).expanduser()
    if path.is_dir():
        found = sorted(
            p
            for p in path.iterdir()
            if p.is_file() and p.suffix.lower() in SUFFIXES and not p.name.startswith(".")
        )
        if not found:
            raise InputError(f"{path}: directory holds no {'/'.join(SUFFIXES)} files")
        return found
    if path.is_file():
        return [path]
    if path.exists():
        raise InputError(f"{path}: not a regular file or directory")
    if not any(char in text for char in "*?["):
        raise InputError(f"{path}: no such file or directory")
    matches = [Path(m) for m in sorted(glob.glob(os.path.expanduser(text), recursive=True))]
    if not matches:
        raise InputError(f"{text}: the pattern matches nothing")
    found = [m for m in matches if m.is_file() and (m.suffix.lower() in SUFFIXES or kind(m))]
    if not found:
        raise InputError(f"{text}: the pattern matches no NetCDF or GeoTIFF file")
    return found


def kind(path: Path) -> str | None:
    """'netcdf' or 'geotiff' from the file's first bytes, else from its suffix, else None."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as err:
        raise InputError(f"{path}: cannot be read ({err.strerror or err})") from err
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    suffix = path.suffix.lower()
    if suffix in NETCDF_SUFFIXES:
        return "netcdf"
    if suffix in GEOTIFF_SUFFIXES:
        return "geotiff"
    return None


def sha256(path: str | Path, block: int = 1 << 20) -> str:
    """A file's SHA-256, read in blocks: provenance of inputs and recipes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            digest.update(chunk)
    return digest.hexdigest()
