"""Small ODIM_H5 files written with h5py after the ODIM_H5 v2.3 specification (EUMETNET OPERA):
cartesian composites and images, one file per frame, for the reader's tests. No third-party data."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import h5py
import numpy as np
import pyproj

# OPERA's composite projection (lambert azimuthal equal area) and a polar stereographic one.
LAEA = "+proj=laea +lat_0=55 +lon_0=10 +x_0=1950000 +y_0=-2100000 +ellps=WGS84 +units=m +no_defs"
STERE = "+proj=stere +lat_0=90 +lon_0=0 +lat_ts=60 +a=6378137 +b=6356752 +x_0=0 +y_0=0 +units=m"
ORIGINS = {LAEA: (1_000_000.0, 1_500_000.0), STERE: (0.0, -4_000_000.0)}  # LL corner, metres


def corners(projdef: str, nx: int, ny: int, scale: float) -> dict[str, float]:
    """The `where` corner lon/lats of a grid whose lower-left corner is ORIGINS[projdef]."""
    proj = pyproj.Proj(projdef)
    x0, y0 = ORIGINS[projdef]
    x1, y1 = x0 + nx * scale, y0 + ny * scale
    out = {}
    for name, (x, y) in {"LL": (x0, y0), "UL": (x0, y1), "UR": (x1, y1), "LR": (x1, y0)}.items():
        lon, lat = proj(x, y, inverse=True)
        out[f"{name}_lon"], out[f"{name}_lat"] = float(lon), float(lat)
    return out


def _strings(group: h5py.Group, **attrs: object) -> None:
    for key, value in attrs.items():
        group.attrs[key] = np.bytes_(value) if isinstance(value, str) else value


def write_odim(
    path: Path,
    raw: np.ndarray,
    when: dt.datetime,
    *,
    quantity: str = "DBZH",
    gain: float = 0.5,
    offset: float = -32.0,
    nodata: float = 255.0,
    undetect: float = 0.0,
    projdef: str = LAEA,
    scale: float = 2000.0,
    obj: str = "COMP",
    period: dt.timedelta = dt.timedelta(minutes=5),
    nominal: dt.datetime | None = None,
    extra: dict[str, np.ndarray] | None = None,
) -> Path:
    """One frame: `raw` codes (rows north to south) in `dataset1/data1/data`, acquired over
    `period` ending at `when` (the nominal time unless `nominal` is given); `extra` adds
    quantities as `data2`, `data3`, ... with the same packing."""
    ny, nx = raw.shape
    nominal = nominal or when
    with h5py.File(path, "w") as f:
        _strings(f, Conventions="ODIM_H5/V2_3")
        what = f.create_group("what")
        _strings(what, object=obj, version="H5rad 2.3", date=nominal.strftime("%Y%m%d"),
                 time=nominal.strftime("%H%M%S"), source="ORG:247,CMT:stforecast test")  # fmt: skip
        where = f.create_group("where")
        _strings(where, projdef=projdef, xsize=np.int64(nx), ysize=np.int64(ny),
                 xscale=np.float64(scale), yscale=np.float64(scale),
                 **corners(projdef, nx, ny, scale))  # fmt: skip
        _strings(f.create_group("how"), software="stforecast tests")
        dataset = f.create_group("dataset1")
        start = when - period
        _strings(dataset.create_group("what"), product="PCAPPI",
                 startdate=start.strftime("%Y%m%d"), starttime=start.strftime("%H%M%S"),
                 enddate=when.strftime("%Y%m%d"), endtime=when.strftime("%H%M%S"))  # fmt: skip
        for k, (name, codes) in enumerate({quantity: raw, **(extra or {})}.items(), start=1):
            data = dataset.create_group(f"data{k}")
            array = data.create_dataset("data", data=codes, compression="gzip")
            _strings(array, CLASS="IMAGE", IMAGE_VERSION="1.2")
            _strings(data.create_group("what"), quantity=name, gain=np.float64(gain),
                     offset=np.float64(offset), nodata=np.float64(nodata),
                     undetect=np.float64(undetect))  # fmt: skip
    return path
