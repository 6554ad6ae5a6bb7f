"""From what the user typed (files, directories, globs) to a list of files and their formats."""

from __future__ import annotations

import glob
import hashlib
import os
import stat
from collections.abc import Sequence
from pathlib import Path

from stforecast.errors import InputError, environment_error

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
    whatever its suffix. A file named twice is read once. A path the OS refuses to follow (a
    symbolic link loop, no permission) is a `FileSystemError`, never "no such file".
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
    st = _stat(path)
    if st is not None and stat.S_ISDIR(st.st_mode):
        found = sorted(p for p in _entries(path) if _regular(p, strict=True))
        if not found:
            raise InputError(f"{path}: directory holds no {'/'.join(SUFFIXES)} files")
        return found
    if st is not None and stat.S_ISREG(st.st_mode):
        return [path]
    if st is not None:
        raise InputError(f"{path}: not a regular file or directory")
    if not any(char in text for char in "*?["):
        raise InputError(f"{path}: no such file or directory")
    matches = [Path(m) for m in sorted(glob.glob(os.path.expanduser(text), recursive=True))]
    if not matches:
        raise InputError(f"{text}: the pattern matches nothing")
    found = [
        m
        for m in matches
        if _regular(m, strict=_ours(m)) and (m.suffix.lower() in SUFFIXES or kind(m))
    ]
    if not found:
        raise InputError(f"{text}: the pattern matches no NetCDF or GeoTIFF file")
    return found


def _stat(path: Path) -> os.stat_result | None:
    """What is at `path`, links followed; None when nothing is. `Path.exists()` would call a
    symbolic link loop absent: a path the OS refuses (ELOOP, EACCES) is a `FileSystemError`."""
    try:
        return os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as err:
        raise environment_error(err, path, "open") from None


def _ours(path: Path) -> bool:
    """A visible name with a NetCDF or GeoTIFF suffix: what a directory contributes."""
    return path.suffix.lower() in SUFFIXES and not path.name.startswith(".")


def _entries(directory: Path) -> list[Path]:
    """The directory's files with our suffixes (not yet checked to be regular files)."""
    try:
        return [p for p in directory.iterdir() if _ours(p)]
    except OSError as err:
        raise environment_error(err, directory, "list the directory") from None


def _regular(path: Path, strict: bool) -> bool:
    """Whether `path` is a regular file (links followed); a path the OS refuses is an error
    when `strict` (a file we would read), else just not one (a stray name a glob matched)."""
    if not strict:
        try:
            return stat.S_ISREG(os.stat(path).st_mode)
        except OSError:
            return False
    st = _stat(path)
    return st is not None and stat.S_ISREG(st.st_mode)


def kind(path: Path) -> str | None:
    """'netcdf' or 'geotiff' from the file's first bytes, else from its suffix, else None."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as err:
        raise environment_error(err, path, "read") from err
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
    """A file's SHA-256, read in blocks: provenance of inputs and recipes. A file that cannot
    be read is a `FileSystemError` naming it (exit 3), not an OSError from deep inside."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(block):
                digest.update(chunk)
    except OSError as err:
        raise environment_error(err, path, "read") from err
    return digest.hexdigest()
