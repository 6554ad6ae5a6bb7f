"""Readers: frame stacks on disk (NetCDF, GeoTIFF; one file or one file per frame) to xarray.

`open_frames` is the one entry point; it returns a lazy `(time, y, x)` or `(time, channel, y, x)`
float32 DataArray with the grid, CRS and time step in its attributes, from files
(`assemble.open_frames`) or from xarray objects in memory (`memory.from_xarray`).
It loads on first use, so that `io.atomic` or `io.lock` alone import no xarray.
"""

from typing import Any

__all__ = ["open_frames"]


def __getattr__(name: str) -> Any:
    if name == "open_frames":
        from stforecast.io.memory import open_frames

        return open_frames
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
