"""The one precipitation palette: what counts as rain, and how rain, other fields and errors are
coloured, for `stforecast plot`'s maps and the evaluation report's sample panels alike.

- **Rain** is a field whose `units` (`stforecast.data.units.quantity`) are a rate or an
  accumulation per time step. Rates are shown in mm/h, accumulations in mm (converted from the
  data's units, e.g. `kg m-2 s-1`), on the fixed levels `RAIN_LEVELS` (0.1 to 100) with
  `RAIN_COLOURS`, dark purple above the top level. A value below `RAIN_THRESHOLD` (0.1 mm/h, or
  0.1 mm) is "no rain" and drawn white (`BELOW`); `rain_threshold(units)` gives it in the data's
  own units. The same levels on every picture, so that a colour means one rain rate in the
  quick look of a forecast and in the report's panels.
- **Any other quantity** (temperature, reflectivity, Moving MNIST's [0, 1]) is viridis from its
  minimum to its maximum.
- **Errors** (forecast minus truth) are RdBu_r, symmetric about 0, clipped at the 99.5th
  percentile of the absolute error.
- **Missing** (NaN, no radar coverage) is `MISSING`, a mid grey distinct from white.

`display_scale(values, units)` returns the scale, the values in the units shown and the
colour-bar label with that unit (`mm/h`, `mm`, or the data's units). Matplotlib is imported only
when a scale is built, so importing this module (and `stforecast plot`) stays quick.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "BELOW",
    "MISSING",
    "RAIN_COLOURS",
    "RAIN_LEVELS",
    "RAIN_THRESHOLD",
    "Scale",
    "display_scale",
    "error_scale",
    "rain_threshold",
    "rain_units",
    "unit_label",
]

BELOW = "white"  # under the first rain level: no rain, distinct from missing
RAIN_THRESHOLD = 0.1  # mm/h (or mm): the first level, below it "no rain"
RAIN_LEVELS = (RAIN_THRESHOLD, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0)
# One colour per interval between RAIN_LEVELS: light to dark blue, light to dark green, yellow,
# orange, red, magenta; each hue darker as the rain gets heavier.
RAIN_COLOURS = (
    "#c6dbef",  # 0.1-0.2
    "#6baed6",  # 0.2-0.5
    "#2171b5",  # 0.5-1
    "#a1d99b",  # 1-2
    "#31a354",  # 2-5
    "#fed976",  # 5-10
    "#fd8d3c",  # 10-20
    "#e31a1c",  # 20-50
    "#ae017e",  # 50-100
)
RAIN_ABOVE = "#49006a"  # above the top level
MISSING = "#b0b0b0"  # NaN: no coverage


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


def rain_units(units: str | None) -> str | None:
    """The units rain is shown in (`mm h-1` for a rate, `mm` for an accumulation), or None when
    `units` are not precipitation."""
    from stforecast.data import units as units_mod

    kind = units_mod.quantity(units) if units else None
    if kind == "rate":
        return "mm h-1"
    if kind == "accumulation":
        return "mm"
    return None


def rain_threshold(units: str | None) -> float | None:
    """`RAIN_THRESHOLD` (0.1 mm/h, or 0.1 mm for an accumulation) in `units`; None when `units`
    are not precipitation."""
    from stforecast.data import units as units_mod

    shown = rain_units(units)
    if shown is None or units is None:
        return None
    return float(units_mod.convert(RAIN_THRESHOLD, shown, units))


def unit_label(units: str | None) -> str:
    """Units as a reader writes them: `mm h-1` -> `mm/h`; others as given ("" for none)."""
    from stforecast.data import units as units_mod

    if not units:
        return ""
    if units_mod.quantity(units) == "rate" and units_mod.equivalent(units, "mm h-1"):
        return "mm/h"
    return str(units)


def _rain_scale() -> Scale:
    from matplotlib.colors import BoundaryNorm, ListedColormap

    cmap = ListedColormap(list(RAIN_COLOURS), name="stforecast_rain")
    cmap = cmap.with_extremes(under=BELOW, over=RAIN_ABOVE, bad=MISSING)
    norm = BoundaryNorm(list(RAIN_LEVELS), ncolors=len(RAIN_COLOURS))
    return Scale(cmap, norm, "both", RAIN_LEVELS)


def display_scale(values: np.ndarray, units: str | None) -> tuple[Scale, np.ndarray, str]:
    """The scale for `values` in `units`, the values in the units shown and that unit as text
    for the colour bar (`mm/h`, `mm`, the data's units, or "" when there are none)."""
    from matplotlib import colormaps
    from matplotlib.colors import Normalize

    from stforecast.data import units as units_mod

    shown = rain_units(units)
    if shown is not None and units:
        if not units_mod.equivalent(units, shown):
            values = np.asarray(units_mod.convert(values, units, shown), np.float32)
        return _rain_scale(), values, unit_label(shown)
    finite = values[np.isfinite(values)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    cmap = colormaps["viridis"].with_extremes(bad=MISSING)
    return Scale(cmap, Normalize(lo, hi)), values, unit_label(units)


def error_scale(error: np.ndarray) -> Scale:
    """A diverging scale centred at 0 for forecast minus truth, clipped at the 99.5th
    percentile of the absolute error so that a few outliers do not wash it out."""
    from matplotlib import colormaps
    from matplotlib.colors import Normalize

    finite = np.abs(error[np.isfinite(error)])
    limit = float(np.percentile(finite, 99.5)) if finite.size else 1.0
    if limit <= 0:
        limit = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    cmap = colormaps["RdBu_r"].with_extremes(bad=MISSING)
    return Scale(cmap, Normalize(-limit, limit), "both")


def colorbar(fig: Any, image: Any, cax: Any, scale: Scale, label: str, size: int = 8) -> Any:
    """The colour bar of `scale` in axes `cax`, one look for `plot` and the report: rain levels
    as equal boxes labelled with their values, other scales proportional; `label` (with its
    unit) in `size` points, the ticks a point smaller."""
    ticks = list(scale.ticks) if scale.ticks else None
    bar = fig.colorbar(
        image, cax=cax, extend=scale.extend, ticks=ticks,
        spacing="uniform" if scale.discrete else "proportional",
    )  # fmt: skip
    if ticks:
        bar.ax.set_yticklabels([f"{t:g}" for t in ticks])
    bar.ax.tick_params(labelsize=size - 1)
    if label:
        bar.set_label(label, fontsize=size)
    return bar
