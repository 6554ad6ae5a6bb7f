"""Readers: frame stacks on disk (NetCDF, GeoTIFF; one file or one file per frame) to xarray.

`open_frames` is the one entry point; it returns a lazy `(time, y, x)` or `(time, channel, y, x)`
float32 DataArray with the grid, CRS and time step in its attributes. See `assemble.open_frames`.
"""

from stforecast.io.assemble import open_frames

__all__ = ["open_frames"]
