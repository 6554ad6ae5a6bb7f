"""What a forecast may replace: nothing, or a forecast that stforecast wrote (issue 13).

A forecast is renamed onto its output path, and a rename replaces whatever is there: a text
file, a FIFO, even a device node (`--out /dev/full` as root). So the forecast writers and the
forecast job check the output path first with `replaceable`: nothing there, or a regular file
that is a stforecast forecast (a NetCDF or GeoTIFF with the marks every forecast carries, see
`cf.is_forecast_metadata`), may be replaced; a symbolic link is followed to such a file, which
is replaced in place (the link keeps pointing at it). Anything else raises `ConfigError`
(exit 2) and is left untouched. Only a regular file's metadata is ever read: a FIFO or device
is never opened.
"""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path

from stforecast.errors import ConfigError, InputError
from stforecast.io.cf import is_forecast_metadata

_NETCDF_MAGIC = (b"\x89HDF\r\n\x1a\n", b"CDF\x01", b"CDF\x02", b"CDF\x05")
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


def replaceable(path: str | os.PathLike[str]) -> Path:
    """The file a forecast for output `path` is written to: `path`, or the forecast file a
    symbolic link at `path` points to. Raises `ConfigError` when something is there that a
    forecast must not replace (`InputError` for a directory, as the writers always have)."""
    path = Path(path)
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return path  # nothing there (a missing directory is the writer's to report)
    except OSError as err:
        raise InputError(f"{path}: cannot look at what is there ({err.strerror})") from None
    if stat.S_ISLNK(st.st_mode):
        return _link_target(path)
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"{path}: is a directory, expected a file name for the forecast")
    if not stat.S_ISREG(st.st_mode):
        kind = _KINDS.get(stat.S_IFMT(st.st_mode), "not a regular file")
        raise ConfigError(f"{path}: exists and is {kind}, not a forecast file; not replaced")
    if not is_forecast(path):
        raise ConfigError(f"{path}: exists and is not a stforecast forecast; not replaced")
    return path


def _link_target(link: Path) -> Path:
    target = Path(os.path.realpath(link))
    try:
        st = os.stat(target)
    except FileNotFoundError:
        raise ConfigError(
            f"{link}: a symbolic link to {target}, which does not exist; not replaced"
        ) from None
    except OSError as err:
        raise ConfigError(
            f"{link}: a symbolic link that cannot be followed ({err.strerror}); not replaced"
        ) from None
    if not stat.S_ISREG(st.st_mode) or not is_forecast(target):
        raise ConfigError(
            f"{link}: a symbolic link to {target}, which is not a stforecast forecast; not replaced"
        )
    return target


def is_forecast(path: str | os.PathLike[str]) -> bool:
    """Whether the regular file `path` is a forecast stforecast wrote, by its metadata."""
    magic = _magic(Path(path))
    if magic.startswith(_NETCDF_MAGIC):
        return _netcdf_is_forecast(Path(path))
    if magic[:4] in _TIFF_MAGIC:
        return _geotiff_is_forecast(Path(path))
    return False


def _magic(path: Path) -> bytes:
    """The first bytes of a regular file (empty for anything else: never blocks on a FIFO)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return b""
    try:
        return os.read(fd, 8) if stat.S_ISREG(os.fstat(fd).st_mode) else b""
    except OSError:
        return b""
    finally:
        os.close(fd)


def _netcdf_is_forecast(path: Path) -> bool:
    import netCDF4

    from stforecast.io.netcdf import LOCK

    try:
        with LOCK, netCDF4.Dataset(path, "r") as nc:
            names = set(nc.ncattrs())
            attrs = {k: nc.getncattr(k) for k in ("source", "provenance") if k in names}
            return is_forecast_metadata(attrs, "forecast_reference_time" in nc.variables)
    except OSError:
        return False


def _geotiff_is_forecast(path: Path) -> bool:
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioError

    try:
        with warnings.catch_warnings():  # any GeoTIFF is looked at: no warning on the terminal
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.Env(GDAL_PAM_ENABLED="NO"), rasterio.open(path) as src:
                tags = src.tags()
    except (RasterioError, OSError):
        return False
    return is_forecast_metadata(tags, "forecast_reference_time" in tags)
