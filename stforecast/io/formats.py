"""Which reader reads a file: its format from the first bytes (`sources.kind`), then the reader,
imported only then, so reading NetCDF never loads GDAL or h5py.

- NetCDF (classic, and HDF5 named `.nc`): `io.netcdf`;
- HDF5 otherwise: `io.odim` when its root says `Conventions = ODIM_H5/...`, else `io.netcdf`
  (NetCDF-4 under another name), and an error naming the HDF5 file when that finds nothing;
- GeoTIFF, GRIB, a gzip of either, and anything else: GDAL through `io.geotiff`, and an error
  naming the format it looks like when GDAL cannot open it either.
"""

from __future__ import annotations

from pathlib import Path

from stforecast.errors import InputError
from stforecast.io import netcdf, sources
from stforecast.io.frames import ScannedFile

_EXPECTED = {"geotiff": "GeoTIFF", "grib": "GRIB"}


def scan(path: Path, wanted: set[str] | None, time_pattern: str | None) -> ScannedFile:
    """The header of `path` by the reader of its format; `ScannedFile.format` names it."""
    found = sources.kind(path)
    gzipped = found == "gzip"
    if gzipped:
        found = sources.gzip_kind(path)
    if found == "netcdf":
        if gzipped:
            raise InputError(f"{path}: gzip-compressed NetCDF is not read; decompress it first")
        scanned = netcdf.scan(path, wanted, time_pattern)
        scanned.format = "NetCDF"
        return scanned
    if found == "hdf5":
        return _hdf5(path, wanted, time_pattern, gzipped)
    from stforecast.io import geotiff  # rasterio and GDAL load only when a raster is read

    expected = _EXPECTED.get(found or "")
    if gzipped and expected is None:
        raise InputError(f"{path}: a gzip file of no format stforecast reads inside")
    return geotiff.scan(path, wanted, time_pattern, expected)


def _hdf5(path: Path, wanted: set[str] | None, time_pattern: str | None, gz: bool) -> ScannedFile:
    from stforecast.io import odim  # h5py loads only when an HDF5 file is read

    conventions = odim.conventions(path)
    if conventions.upper().startswith("ODIM_H5"):
        return odim.scan(path, wanted, time_pattern)
    found = f"Conventions {conventions!r}" if conventions else "no Conventions"
    label = f"HDF5 ({found}; neither ODIM_H5 nor NetCDF-4)"
    if gz:
        raise InputError(f"{path}: gzip-compressed {label}: only ODIM_H5 is read compressed")
    try:
        scanned = netcdf.scan(path, wanted, time_pattern)
    except InputError as err:
        raise InputError(f"{path}: {label}: {str(err).removeprefix(f'{path}: ')}") from err
    scanned.format = "NetCDF-4" if scanned.candidates else label
    return scanned
