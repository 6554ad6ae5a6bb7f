"""Writing a synthetic data set to a file: atomically (`stforecast.io.atomic`), so a training or
cron job never reads half a file, and never over an existing file unless asked, refused as a
usage error (exit 2) the way `prepare` refuses to replace a store.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from stforecast.errors import ConfigError, InputError, write_failure


def exists_error(path: Path) -> ConfigError:
    """Usage, as in `prepare` (exit 2): the data is fine, the command would replace a file."""
    return ConfigError(f"{path}: already exists and overwrite was not asked for")


def write_file(
    path: str | os.PathLike[str], write: Callable[[Path], None], overwrite: bool
) -> Path:
    """Have `write(tmp)` write a temporary file beside `path`, then move it into place.

    A directory at `path` is an `InputError`, an existing file a `ConfigError` unless
    `overwrite`; missing parent folders are made; a failed write (a full or read-only disk) is
    an `InputError` (`FileSystemError`) and leaves neither a partial file nor a temporary one.
    """
    # Imported here: `stforecast.io` loads the readers (xarray), which `import
    # stforecast.data.synthetic` should not pay for.
    from stforecast.io.atomic import atomic_path

    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected a file name")
    if path.exists() and not overwrite:
        raise exists_error(path)
    try:
        with atomic_path(path) as tmp:
            write(tmp)
    except (OSError, RuntimeError) as err:  # netCDF4 reports a full disk as "NetCDF: HDF error"
        raise write_failure(err, path) from None
    return path
