"""The spatial grid every frame of a stack must share: cell-centre coordinates, CRS, transform.

`geotransform` is the one place where cell centres become a GDAL transform: the readers, the
forecast template and the GeoTIFF writer all use it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from stforecast.io.crs import same_crs


@dataclass(frozen=True, eq=False)
class Grid:
    """Cell centres `y`, `x` (1-D, in the CRS's units, in the file's order) and the CRS as WKT2
    (`""` when the file has none). `x_attrs`/`y_attrs` are the coordinates' CF attributes."""

    y: np.ndarray
    x: np.ndarray
    crs_wkt: str
    x_attrs: dict = field(default_factory=dict)
    y_attrs: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.y.size, self.x.size)

    @property
    def transform(self) -> list[float]:
        """GDAL/affine `[a, b, c, d, e, f]` (as `rasterio.Affine`) of cells around the centres.

        Irregular coordinates get their mean spacing: the transform is then an approximation.
        """
        return geotransform(self.y, self.x)

    def difference(self, other: Grid) -> str | None:
        """What differs from `other` (shape, x, y or CRS), or None when they are the same grid."""
        if self.shape != other.shape:
            return f"shape {other.shape} instead of {self.shape}"
        for name in ("x", "y"):
            mine, theirs = getattr(self, name), getattr(other, name)
            tolerance = 1e-6 * max(abs(_spacing(mine)), 1e-12)
            if not np.allclose(mine, theirs, rtol=0, atol=tolerance):
                k = int(np.argmax(np.abs(mine - theirs)))
                return f"{name} coordinates differ ({theirs[k]!r} instead of {mine[k]!r} at {k})"
        if not same_crs(self.crs_wkt, other.crs_wkt):
            return "CRS differs"
        return None


def geotransform(
    y: np.ndarray, x: np.ndarray, given: Sequence[float] | str | None = None
) -> list[float]:
    """GDAL/affine `[a, b, c, d, e, f]` of the cells around centres `y`, `x` (mean spacing; 1
    along an axis of one cell). `given` (6 numbers, or their JSON) is returned instead, after a
    check that a north-up transform puts the cell centres where `y` and `x` say (`ValueError`
    otherwise: a template that contradicts itself)."""
    dx, dy = _spacing(x), _spacing(y)
    derived = [dx, 0.0, float(x[0]) - dx / 2, 0.0, dy, float(y[0]) - dy / 2]
    if given is None:
        return derived
    if isinstance(given, str):
        given = json.loads(given)
    given = [float(v) for v in np.asarray(given, dtype=np.float64).ravel()]
    if len(given) != 6:
        raise ValueError(f"geotransform must have 6 numbers, got {len(given)}")
    if given[1] == 0 and given[3] == 0 and (x.size > 1 and y.size > 1):
        a, c, e, f = given[0], given[2], given[4], given[5]
        tol = 1e-3 * max(abs(a), abs(e))
        if not (
            abs(a - derived[0]) <= tol
            and abs(e - derived[4]) <= tol
            and abs(c + a / 2 - x[0]) <= tol
            and abs(f + e / 2 - y[0]) <= tol
        ):
            raise ValueError(
                f"the geotransform attribute {given} does not match the x/y coordinates "
                f"(which give {derived})"
            )
    return given


def _spacing(values: np.ndarray) -> float:
    if values.size < 2:
        return 1.0
    return float((values[-1] - values[0]) / (values.size - 1))


PIXEL_SPACE = "in pixels (no coordinates in the file)"  # the long_name's tail on such axes


def pixel_space(attrs: dict) -> bool:
    """Whether a coordinate (by its attrs) is pixel indices standing in for missing coordinates:
    a CRS, if the file names one, cannot place such a grid."""
    return str(attrs.get("long_name", "")).endswith(PIXEL_SPACE)


def pixel_centres(n: int) -> np.ndarray:
    """Centres of pixels in GDAL's pixel/line space (0.5, 1.5, ...) for files without coordinates,
    which makes the transform the identity, as GDAL reports for ungeoreferenced rasters."""
    return np.arange(n, dtype=np.float64) + 0.5
