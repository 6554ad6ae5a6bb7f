"""The precipitation palette: what counts as rain, and how rain, other fields and errors are
coloured, in one place for `stforecast plot`'s maps and the evaluation report's sample panels.

The two pictures have each kept the look they had before this module existed, so there are two
named choices here rather than one:

- **maps** (`map_scale`, the quick looks): rain is what `data.units` calls a rate or an
  accumulation; it is converted to mm/h or mm and drawn on the fixed `MAP_LEVELS` (0.1 to 100)
  with `MAP_COLOURS`, darkest purple above; any other quantity is viridis from its minimum to
  its maximum. Missing is `MAP_MISSING`.
- **panels** (`panel_scale`, `error_scale`, the report): rain is units that start with "mm" and
  no negative value; it stays in the data units and is drawn on `PANEL_LEVELS` (0.1 to 500) cut
  just above the 99.9th percentile, with YlGnBu, red above; any other quantity is viridis from 0
  (or its minimum, if negative) to the 99.5th percentile. Errors are RdBu_r, symmetric about 0.
  Missing is `PANEL_MISSING`.

Both draw values below the first rain level white. Matplotlib is imported only when a scale is
built, so importing this module (and `stforecast plot`) stays quick.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "MAP_LEVELS",
    "PANEL_LEVELS",
    "Scale",
    "error_scale",
    "is_panel_rain",
    "map_rain_units",
    "map_scale",
    "panel_scale",
]

BELOW = "white"  # under the first rain level: no rain, distinct from missing

MAP_LEVELS = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0)
# One colour per interval between MAP_LEVELS: light blue through green and yellow to red/purple.
MAP_COLOURS = (
    "#c6dbef",
    "#6baed6",
    "#2171b5",
    "#31a354",
    "#a1d99b",
    "#fed976",
    "#fd8d3c",
    "#e31a1c",
    "#ae017e",
)
MAP_ABOVE = "#49006a"  # above the top level
MAP_MISSING = "#b0b0b0"  # NaN: no coverage

PANEL_LEVELS = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0)
PANEL_ABOVE = "#d62728"
PANEL_MISSING = "0.78"


@dataclass(frozen=True)
class Scale:
    """What `imshow` and `colorbar` need to colour one group of images alike."""

    cmap: Any  # matplotlib Colormap
    norm: Any  # matplotlib Normalize (BoundaryNorm for rain levels)
    extend: str = "neither"
    ticks: tuple[float, ...] | None = None

    @property
    def discrete(self) -> bool:
        """Rain levels: colour-bar boxes of equal size rather than proportional ones."""
        from matplotlib.colors import BoundaryNorm

        return isinstance(self.norm, BoundaryNorm)


# ------------------------------------------------------------------------------ maps


def map_rain_units(units: str) -> str | None:
    """The units a map shows rain in (`mm h-1` for a rate, `mm` for an accumulation), or None
    when `units` are not precipitation."""
    from stforecast.data import units as units_mod

    kind = units_mod.quantity(units) if units else None
    if kind == "rate":
        return "mm h-1"
    if kind == "accumulation":
        return "mm"
    return None


def map_scale(values: np.ndarray, units: str) -> tuple[Scale, np.ndarray, str]:
    """A quick-look map's scale, its values in the units shown and the colour-bar label."""
    from matplotlib import colormaps
    from matplotlib.colors import BoundaryNorm, ListedColormap, Normalize

    from stforecast.data import units as units_mod

    target = map_rain_units(units)
    if target is not None:
        if not units_mod.equivalent(units, target):
            values = np.asarray(units_mod.convert(values, units, target), np.float32)
        cmap = ListedColormap(list(MAP_COLOURS), name="stforecast_rain")
        cmap = cmap.with_extremes(under=BELOW, over=MAP_ABOVE, bad=MAP_MISSING)
        norm = BoundaryNorm(list(MAP_LEVELS), ncolors=len(MAP_COLOURS))
        label = "mm/h" if target == "mm h-1" else "mm"
        return Scale(cmap, norm, "both", MAP_LEVELS), values, label
    finite = values[np.isfinite(values)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    cmap = colormaps["viridis"].with_extremes(bad=MAP_MISSING)
    return Scale(cmap, Normalize(lo, hi)), values, units


# ------------------------------------------------------------------------------ panels


def is_panel_rain(units: str, data: np.ndarray) -> bool:
    """Whether the report draws `data` as rain: units in mm (mm h-1, mm/h, mm hr-1, mm) and no
    negative value."""
    rate_like = units.lower().replace(" ", "").startswith("mm")
    finite = data[np.isfinite(data)]
    return rate_like and (finite.size == 0 or float(finite.min()) >= 0.0)


def panel_scale(data: np.ndarray, units: str) -> Scale:
    """The scale shared by a sample panel's data rows (inputs, truth, forecasts)."""
    from matplotlib import colormaps
    from matplotlib.colors import BoundaryNorm, ListedColormap, Normalize

    finite = data[np.isfinite(data)]
    if is_panel_rain(units, data):
        top = float(np.percentile(finite, 99.9)) if finite.size else 1.0
        first_above = next((i for i, v in enumerate(PANEL_LEVELS) if v >= top), None)
        n_levels = len(PANEL_LEVELS) if first_above is None else max(first_above + 1, 3)
        levels = list(PANEL_LEVELS[:n_levels])
        colours = colormaps["YlGnBu"](np.linspace(0.2, 1.0, len(levels) - 1))
        cmap = ListedColormap(colours, name="precip").with_extremes(
            under=BELOW, over=PANEL_ABOVE, bad=PANEL_MISSING
        )
        return Scale(cmap, BoundaryNorm(levels, cmap.N), "both")
    if finite.size:
        lo, hi = float(finite.min()), float(np.percentile(finite, 99.5))
        if finite.min() >= 0:
            lo = 0.0
        if hi <= lo:
            hi = lo + (abs(lo) or 1.0)
    else:
        lo, hi = 0.0, 1.0
    cmap = colormaps["viridis"].with_extremes(bad=PANEL_MISSING)
    extend = "max" if finite.size and finite.max() > hi else "neither"
    return Scale(cmap, Normalize(lo, hi), extend)


def error_scale(error: np.ndarray) -> Scale:
    """A diverging scale centred at 0 for forecast minus truth, clipped at the 99.5th
    percentile of the absolute error so that a few outliers do not wash it out."""
    from matplotlib import colormaps
    from matplotlib.colors import Normalize

    finite = np.abs(error[np.isfinite(error)])
    limit = float(np.percentile(finite, 99.5)) if finite.size else 1.0
    if limit <= 0:
        limit = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    cmap = colormaps["RdBu_r"].with_extremes(bad=PANEL_MISSING)
    return Scale(cmap, Normalize(-limit, limit), "both")
