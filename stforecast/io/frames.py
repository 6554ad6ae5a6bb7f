"""What the format readers hand to the assembler, and the lazy array that reads frames on demand.

A reader describes each file once (variables, grid, times, where each frame lives) without reading
data; `FrameStack` then reads exactly the frames dask asks for, one chunk per time step, so a
caller that computes frame by frame holds one frame at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from stforecast.errors import ConfigError, InputError
from stforecast.io.grid import Grid
from stforecast.io.packing import Packing

# Reads one frame's window (y slice, x slice) as float32 with NaN.
Reader = Callable[["FrameRef", slice, slice], np.ndarray]


@dataclass(frozen=True)
class FrameRef:
    """Where one 2-D frame is stored: small and picklable, so it travels in dask graphs.

    `index` is reader-specific (NetCDF: the index per dimension, `None` on the spatial ones;
    GDAL rasters: the 1-based band; ODIM: the HDF5 path of the data set). `cached`: the file
    holds several frames, keep it open.
    """

    reader: Reader
    path: str
    variable: str
    index: tuple
    packing: Packing
    cached: bool = False

    def read(self, ys: slice, xs: slice) -> np.ndarray:
        try:
            return self.reader(self, ys, xs)
        except (InputError, MemoryError):
            raise
        except Exception as err:  # any library failure on a bad file becomes one clear line
            where = f"{self.variable!r}" if self.variable else f"band {self.index[0]}"
            cause = err.__cause__ or err.__context__
            reason = " ".join(f"{err} {cause or ''}".split()) or type(err).__name__
            raise InputError(f"{self.path}: cannot read {where}: {reason}") from err


@dataclass
class Variable:
    """One variable of one file: its grid, its frames and their times (None: not found, and
    `time_note` says where we looked)."""

    name: str
    path: str
    grid: Grid
    refs: list[FrameRef]
    times: np.ndarray | None
    time_note: str
    attrs: dict[str, str] = field(default_factory=dict)


@dataclass
class ScannedFile:
    """A file's header: every variable with spatial dimensions, the ones `variable=None` may pick
    (`candidates`), and the others for error messages; `format` names what the file was read as
    (`NetCDF`, `GeoTIFF`, `GRIB`, `ODIM_H5/V2_3 COMP`, ...), so an error can say it."""

    path: str
    variables: dict[str, Variable]
    candidates: list[str]
    others: list[str] = field(default_factory=list)
    format: str = ""


class FrameStack:
    """A lazy `(time, y, x)` or `(time, channel, y, x)` float32 array over frame references,
    indexable like numpy with slices and integers (what `dask.array.from_array` passes)."""

    dtype = np.dtype(np.float32)

    def __init__(self, refs: list[list[FrameRef]], shape_yx: tuple[int, int], channels: bool):
        self._refs = refs
        self._channels = channels
        n_ch = len(refs[0]) if refs else 0
        lead = (len(refs), n_ch) if channels else (len(refs),)
        self.shape = (*lead, *shape_yx)
        self.ndim = len(self.shape)

    def __dask_tokenize__(self) -> object:
        return ("stforecast.io.FrameStack", self.shape, self.token_parts())

    def token_parts(self) -> list[tuple]:
        return [(r.path, r.variable, r.index) for row in self._refs for r in row]

    def __getitem__(self, key: object) -> np.ndarray:
        key = _full_key(key, self.ndim)
        lead_n = 2 if self._channels else 1
        lead = [_positions(k, n) for k, n in zip(key[:lead_n], self.shape[:lead_n], strict=True)]
        ys, y_post = _window(key[-2], self.shape[-2])
        xs, x_post = _window(key[-1], self.shape[-1])
        times, t_scalar = lead[0]
        chans, c_scalar = lead[1] if self._channels else ([0], True)
        shape = (len(times), len(chans), ys.stop - ys.start, xs.stop - xs.start)
        if shape[0] * shape[1] == 1:  # the usual dask chunk: no copy of a possibly huge frame
            out = self._refs[times[0]][chans[0]].read(ys, xs).reshape(shape)
        else:
            out = np.empty(shape, dtype=np.float32)
            for i, t in enumerate(times):
                for j, c in enumerate(chans):
                    out[i, j] = self._refs[t][c].read(ys, xs)
        out = out[:, :, y_post]
        out = out[..., x_post]
        if c_scalar:
            out = out[:, 0]
        if t_scalar:
            out = out[0]
        return out


def _full_key(key: object, ndim: int) -> tuple:
    key = key if isinstance(key, tuple) else (key,)
    if any(k is Ellipsis for k in key):
        at = next(i for i, k in enumerate(key) if k is Ellipsis)
        fill = (slice(None),) * (ndim - len(key) + 1)
        key = key[:at] + fill + key[at + 1 :]
    return key + (slice(None),) * (ndim - len(key))


def _positions(key: object, n: int) -> tuple[list[int], bool]:
    """Indices selected along a lead axis and whether the axis is dropped (integer key)."""
    if isinstance(key, slice):
        return list(range(*key.indices(n))), False
    if np.ndim(key) == 0:
        return [int(key) % n], True
    return [int(k) % n for k in np.asarray(key).ravel()], False


def _window(key: object, n: int) -> tuple[slice, object]:
    """A contiguous window to read along a spatial axis and the indexing to apply to it after."""
    if isinstance(key, slice):
        start, stop, step = key.indices(n)
        if step == 1:
            return slice(start, max(start, stop)), slice(None)
        idx = list(range(start, stop, step))
    elif np.ndim(key) == 0:
        i = int(key) % n
        return slice(i, i + 1), 0
    else:
        idx = [int(k) % n for k in np.asarray(key).ravel()]
    if not idx:
        return slice(0, 0), slice(None)
    lo = min(idx)
    return slice(lo, max(idx) + 1), np.asarray(idx) - lo


def requested(variable: str | Sequence[str] | None) -> tuple[list[str] | None, bool]:
    """`variable=` as (names or None, whether the caller asked for a channel list)."""
    if variable is None:
        return None, False
    if isinstance(variable, str):
        return [variable], False
    names = [str(v) for v in variable]
    if not names:
        raise ConfigError("variable: the list of names is empty")
    if len(set(names)) != len(names):
        raise ConfigError(f"variable: names repeat in {names}")
    return names, True
