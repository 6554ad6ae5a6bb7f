"""Raw stored numbers to physical float32 values: fill values to NaN, then scale and offset.

One rule for NetCDF (`_FillValue`, `missing_value`, `valid_*`, `scale_factor`, `add_offset`,
`_Unsigned`) and GeoTIFF (nodata, GDAL scale/offset or `Gain`/`Offset` metadata). Missing values
are recognised on the raw numbers, before scaling, as CF and GDAL define them. Codes that stand
for a value rather than for nothing (ODIM's `undetect`: "no echo", 0 mm/h) are `replace`d by it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Packing:
    """How one variable or band is stored; `apply` turns a raw array into float32 with NaN."""

    scale: float = 1.0
    offset: float = 0.0
    fills: tuple[float, ...] = ()
    valid_min: float | None = None
    valid_max: float | None = None
    unsigned: bool = False
    replace: tuple[tuple[float, float], ...] = ()  # (raw code, physical value); fills win

    def apply(self, raw: np.ndarray) -> np.ndarray:
        raw = np.asarray(raw)
        if self.unsigned and raw.dtype.kind == "i":
            raw = raw.view(raw.dtype.str.replace("i", "u"))
        if raw.dtype.kind in "iub" and raw.dtype.itemsize <= 2:
            # Small integers (radar DN, packed int16): one table lookup does mask, scale and offset.
            codes = raw.view(raw.dtype.str.replace("i", "u").replace("b", "u"))
            return _table(self, raw.dtype.str)[codes]
        return self._decode(raw)

    def _decode(self, raw: np.ndarray) -> np.ndarray:
        wide = (raw.dtype.kind in "iu" and raw.dtype.itemsize > 2) or raw.dtype == np.float64
        data = raw.astype(np.float64 if wide else np.float32)
        missing = self._missing(raw)
        if self.scale != 1.0:
            data *= self.scale
        if self.offset != 0.0:
            data += self.offset
        data = data.astype(np.float32, copy=False)
        for code, value in self.replace:
            stored = _as_stored(code, raw.dtype)
            if stored is not None:
                data[raw == stored] = value
        if missing is not None:
            data[missing] = np.nan
        return data

    def _missing(self, raw: np.ndarray) -> np.ndarray | None:
        missing = None
        for fill in self.fills:
            if np.isnan(fill):
                continue  # NaN stays NaN through the arithmetic
            if self.unsigned and fill < 0 and raw.dtype.kind == "u":
                fill += 2 ** (8 * raw.dtype.itemsize)  # written in the signed type
            stored = _as_stored(fill, raw.dtype)
            if stored is None:
                continue
            hit = raw == stored
            missing = hit if missing is None else missing | hit
        if self.valid_min is not None:
            low = raw < self.valid_min
            missing = low if missing is None else missing | low
        if self.valid_max is not None:
            high = raw > self.valid_max
            missing = high if missing is None else missing | high
        return missing


def _as_stored(value: float, dtype: np.dtype) -> np.generic | None:
    """`value` in the raw dtype, or None when the dtype cannot hold it (it then never matches)."""
    if dtype.kind in "iub":
        info = np.iinfo(dtype) if dtype.kind != "b" else np.iinfo(np.uint8)
        if value != int(value) or not info.min <= value <= info.max:
            return None
        return dtype.type(int(value))
    return dtype.type(value)


@functools.lru_cache(maxsize=32)
def _table(packing: Packing, dtype_str: str) -> np.ndarray:
    dtype = np.dtype(dtype_str)
    unsigned = np.dtype(dtype.str.replace("i", "u").replace("b", "u"))
    codes = np.arange(2 ** (8 * dtype.itemsize), dtype=np.int64).astype(unsigned).view(dtype)
    return packing._decode(codes)
