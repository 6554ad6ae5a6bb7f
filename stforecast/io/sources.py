"""From what the user typed (files, directories, globs) to a list of files and their formats.

Formats are told by their first bytes, never by importing a reader: this module stays cheap, and
a reader (netCDF4, rasterio, h5py) loads only when a file of its format is read.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import os
import stat
import zlib
from collections.abc import Sequence
from pathlib import Path

from stforecast.errors import InputError, environment_error

NETCDF_SUFFIXES = (".nc", ".nc4", ".cdf")
GEOTIFF_SUFFIXES = (".tif", ".tiff")
HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf")  # ODIM_H5 radar files (OPERA, national composites)
GRIB_SUFFIXES = (".grib", ".grib2", ".grb", ".grb2", ".grib1", ".grb1")
SUFFIXES = NETCDF_SUFFIXES + GEOTIFF_SUFFIXES + HDF5_SUFFIXES + GRIB_SUFFIXES
GZIP_SUFFIX = ".gz"  # `x.grib2.gz`: read through GDAL's /vsigzip/ (h5py from memory for HDF5)

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
GZIP_MAGIC = b"\x1f\x8b"
_MAGIC = (
    (b"CDF\x01", "netcdf"),
    (b"CDF\x02", "netcdf"),
    (b"CDF\x05", "netcdf"),
    (HDF5_MAGIC, "hdf5"),
    (b"II*\x00", "geotiff"),
    (b"MM\x00*", "geotiff"),
    (b"II+\x00", "geotiff"),
    (b"MM\x00+", "geotiff"),
    (b"GRIB", "grib"),
    (GZIP_MAGIC, "gzip"),
)

Source = str | os.PathLike


def resolve(sources: Source | Sequence[Source], *, recursive: bool = False) -> list[Path]:
    """Absolute files in the order given; a directory's and a glob's files sorted by name.

    A directory contributes its files with a known suffix (`.nc .nc4 .cdf .tif .tiff .h5 .hdf5
    .hdf .grib .grib2 .grb .grb2`, each also `.gz`; any case, hidden ones skipped), and with
    `recursive` those of its subdirectories too (date folders `YYYY/MM/DD/`); a glob (`**`
    spans folders) the matches with those suffixes or a known signature; a named file is taken
    whatever its suffix. A file named twice is read once. A path the OS refuses to follow (a
    symbolic link loop, no permission) is a `FileSystemError`, never "no such file".
    """
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    if not sources:
        raise InputError("no sources given (files, directories or glob patterns)")
    files: dict[Path, None] = {}
    for source in sources:
        for path in _expand(source, recursive):
            files.setdefault(path.resolve(), None)
    return list(files)


def recursive_patterns(sources: Sequence[str]) -> list[str]:
    """Each directory among `sources` as the glob of everything below it (`DIR/**`), the rest
    as given: `--recursive` for commands whose sources travel as text (`forecast --socket`)."""
    out = []
    for source in sources:
        st = _stat(Path(source).expanduser())
        is_dir = st is not None and stat.S_ISDIR(st.st_mode)
        out.append(os.path.join(glob.escape(source), "**") if is_dir else source)
    return out


def _expand(source: Source, recursive: bool = False) -> list[Path]:
    text = os.fspath(source)
    path = Path(text).expanduser()
    st = _stat(path)
    if st is not None and stat.S_ISDIR(st.st_mode):
        found = sorted(p for p in _entries(path, recursive) if _regular(p, strict=True))
        if not found:
            raise InputError(_empty_directory(path, recursive))
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
    found = [m for m in matches if _regular(m, strict=_ours(m)) and (_known(m.name) or kind(m))]
    if not found:
        raise InputError(f"{text}: the pattern matches no file of a format stforecast reads")
    return found


def _empty_directory(path: Path, recursive: bool) -> str:
    """Why a directory gave nothing, and what to try: most often an archive in date folders."""
    known = "/".join(SUFFIXES)
    if recursive:
        return f"{path}: neither the directory nor its subdirectories hold {known} files"
    try:
        folders = sorted(p.name for p in path.iterdir() if p.is_dir() and p.name[:1] != ".")
    except OSError:
        folders = []
    where = f" (it holds folders: {', '.join(folders[:3])}{', ...' if len(folders) > 3 else ''})"
    return (
        f"{path}: directory holds no {known} files{where if folders else ''}; for an archive in "
        f"date folders (YYYY/MM/DD/) pass --recursive (recipe: data.recursive = true) or a "
        f"glob such as '{path}/**/*.h5'"
    )


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
    """A visible name with a known suffix: what a directory contributes."""
    return _known(path.name) and not path.name.startswith(".")


def _known(name: str) -> bool:
    """A known suffix, alone or before `.gz`."""
    return name.lower().removesuffix(GZIP_SUFFIX).endswith(SUFFIXES)


def _entries(directory: Path, recursive: bool = False) -> list[Path]:
    """The directory's files with our suffixes (not yet checked to be regular files); with
    `recursive`, those of its visible subdirectories too (symbolic links to folders are not
    followed, so a link loop cannot make the walk endless)."""
    try:
        if not recursive:
            return [p for p in directory.iterdir() if _ours(p)]
        found = []
        for root, dirs, names in os.walk(directory, onerror=_raise):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            found += [p for p in (Path(root, n) for n in names) if _ours(p)]
        return found
    except OSError as err:
        raise environment_error(err, getattr(err, "filename", None) or directory,
                                "list the directory") from None  # fmt: skip


def _raise(err: OSError) -> None:
    raise err


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
    """The format from the file's first bytes, else from its suffix, else None: 'netcdf',
    'geotiff', 'hdf5' (ODIM_H5 or NetCDF-4 without a NetCDF suffix: the reader looks inside),
    'grib' or 'gzip' (see `gzip_kind`). An HDF5 file named `.nc` is NetCDF-4, as before."""
    head = _head(path)
    for magic, name in _MAGIC:
        if head.startswith(magic):
            if name == "hdf5" and path.suffix.lower() in NETCDF_SUFFIXES:
                return "netcdf"
            return name
    return _by_suffix(path.name.lower())


def gzip_kind(path: Path) -> str | None:
    """The format inside a gzip file, from its first decompressed bytes (then its suffix
    before `.gz`); `InputError` when the stream is not gzip after all."""
    try:
        with gzip.open(path, "rb") as f:
            head = f.read(8)
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:
        raise InputError(f"{path}: a damaged gzip file ({err or type(err).__name__})") from err
    except OSError as err:
        raise environment_error(err, path, "read") from err
    for magic, name in _MAGIC:
        if head.startswith(magic) and name != "gzip":
            return name
    return _by_suffix(path.name.lower().removesuffix(GZIP_SUFFIX))


def describe(path: Path) -> str:
    """What a file of no format we read looks like, for the error that names it."""
    head = _head(path, 64)
    if not head:
        return "an empty file"
    if all(32 <= b < 127 or b in b"\t\r\n" for b in head):
        return "a text file"
    return f"unknown signature {head[:8].hex(' ')}"


def _head(path: Path, n: int = 8) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(n)
    except OSError as err:
        raise environment_error(err, path, "read") from err


def _by_suffix(name: str) -> str | None:
    for suffixes, found in (
        (NETCDF_SUFFIXES, "netcdf"),
        (GEOTIFF_SUFFIXES, "geotiff"),
        (HDF5_SUFFIXES, "hdf5"),
        (GRIB_SUFFIXES, "grib"),
    ):
        if name.endswith(suffixes):
            return found
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
