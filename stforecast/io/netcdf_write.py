"""The CF NetCDF-4 forecast writer: the file's structure from the template, then one lead at a
time (`stforecast.io.write.write_forecast` drives it and makes the file appear atomically).

netCDF4 directly: every call holds the HDF5 lock the readers share, so a dask thread reading
input frames for the next lead never runs HDF5 at the same time.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np

from stforecast.io import cf
from stforecast.io.layout import Layout
from stforecast.io.times import NS

ZLIB_LEVEL = 4


class NetCDFWriter:
    def __init__(self, tmp: Path, template: Any, layout: Layout) -> None:
        import netCDF4

        from stforecast.io.netcdf import LOCK

        self.lock = LOCK
        self.layout = layout
        self.nc = None
        with self.lock:
            self.nc = netCDF4.Dataset(tmp, "w", format="NETCDF4")
        try:
            with self.lock:
                self._define(template)
        except BaseException:
            self.abort()
            raise

    def _define(self, template: Any) -> None:
        nc, lay = self.nc, self.layout
        nc.set_fill_off()  # every value is written; no need to prefill
        geospatial = cf.grid_geospatial(template, lay.ydim, lay.xdim, lay.grid_mapping)
        nc.setncatts(cf.global_attrs(template.attrs, lay.valid_ns, geospatial))
        nc.createDimension("time", lay.n)
        nc.createDimension(lay.ydim, lay.ny)
        nc.createDimension(lay.xdim, lay.nx)
        self._define_times(template)
        self._define_grid(template)
        self._define_fields(template)

    def _define_times(self, template: Any) -> None:
        """`time`, `forecast_reference_time` and `forecast_period` in seconds: int64 when all
        are whole seconds, else float64."""
        nc, lay = self.nc, self.layout
        whole = all(
            int(v) % NS == 0
            for v in (*lay.valid_ns.tolist(), lay.reference_ns, *lay.period_ns.tolist())
        )
        dtype = "i8" if whole else "f8"

        def seconds(ns: Any) -> np.ndarray:
            ns = np.asarray(ns, dtype=np.int64)
            return ns // NS if whole else ns / NS

        time = nc.createVariable("time", dtype, ("time",), fill_value=False)
        time.setncatts(cf.lead_coord_attrs("time", template["time"].attrs))
        time[:] = seconds(lay.valid_ns)
        if any(cf.has_time_bounds(template[name].attrs) for name in lay.fields):
            # values over the time step ending at each valid time (CF 7.1, 7.3): bounds in the
            # units and calendar of `time`, which they take from it
            nc.createDimension(cf.BOUNDS_DIM, 2)
            dims = ("time", cf.BOUNDS_DIM)
            bounds = nc.createVariable(cf.TIME_BOUNDS, dtype, dims, fill_value=False)
            bounds[:] = seconds(cf.time_bounds_ns(lay.valid_ns, lay.reference_ns))
            time.bounds = cf.TIME_BOUNDS

        reference = nc.createVariable("forecast_reference_time", dtype, (), fill_value=False)
        given = template["forecast_reference_time"].attrs
        reference.setncatts(cf.lead_coord_attrs("forecast_reference_time", given))
        reference.assignValue(seconds(lay.reference_ns))

        period = nc.createVariable("forecast_period", dtype, ("time",), fill_value=False)
        given = template["forecast_period"].attrs if "forecast_period" in template.coords else {}
        period.setncatts(cf.lead_coord_attrs("forecast_period", given))
        period[:] = seconds(lay.period_ns)

    def _define_grid(self, template: Any) -> None:
        """The grid-mapping variable, `y`, `x` and any auxiliary coordinates."""
        nc, lay = self.nc, self.layout
        mapping = self._grid_mapping(template)
        for dim, axis in ((lay.ydim, "Y"), (lay.xdim, "X")):
            coord = template[dim]
            values = np.asarray(coord.values)
            kind = "f8" if values.dtype.kind != "f" else values.dtype.str[1:]
            var = nc.createVariable(dim, kind, (dim,), fill_value=False)
            var.setncatts(cf.file_axis_attrs(coord.attrs, axis, mapping))
            var[:] = values

        for name in lay.aux:
            coord = template[name]
            values = np.asarray(coord.values)
            packed = {"zlib": True, "complevel": ZLIB_LEVEL} if values.ndim > 1 else {}
            kind = values.dtype.str[1:]
            var = nc.createVariable(name, kind, coord.dims, fill_value=False, **packed)
            var.setncatts(cf.file_attrs(coord.attrs, skip=cf.FILL_ATTRS))
            if values.ndim:
                var[:] = values
            else:
                var.assignValue(values)

    def _grid_mapping(self, template: Any) -> dict | None:
        lay = self.layout
        if lay.grid_mapping is None:
            return None
        attrs = cf.file_attrs(template[lay.grid_mapping].attrs, skip=cf.FILL_ATTRS)
        if "crs_wkt" not in attrs:
            from stforecast.io.crs import wkt_from_cf

            attrs["crs_wkt"] = wkt_from_cf(template[lay.grid_mapping].attrs)
        var = self.nc.createVariable(lay.grid_mapping, "i4", (), fill_value=False)
        var.setncatts(attrs)
        var.assignValue(0)
        return attrs

    def _define_fields(self, template: Any) -> None:
        """The forecast variables: float32, compressed, one chunk per lead."""
        lay = self.layout
        coordinates = " ".join([*cf.LEAD_COORDS[::-1], *lay.aux])
        self.vars = {}
        for name in lay.fields:
            var = self.nc.createVariable(
                name,
                "f4",
                ("time", lay.ydim, lay.xdim),
                zlib=True,
                complevel=ZLIB_LEVEL,
                shuffle=True,
                chunksizes=(1, lay.ny, lay.nx),
                fill_value=cf.FILL_VALUE,
            )
            var.setncatts(cf.field_attrs(template[name].attrs, coordinates, lay.grid_mapping))
            var.set_auto_maskandscale(False)  # NaN was replaced by the fill value already
            self.vars[name] = var

    def write(self, k: int, lead: dict[str, np.ndarray]) -> None:
        with self.lock:
            for name, values in lead.items():
                self.vars[name][k, :, :] = values

    def close(self) -> None:
        with self.lock:
            nc, self.nc = self.nc, None
            nc.close()

    def abort(self) -> None:
        if self.nc is not None:
            with contextlib.suppress(Exception), self.lock:
                self.nc.close()
            self.nc = None
