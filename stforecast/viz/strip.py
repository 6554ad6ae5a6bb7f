"""The quick-look figures: a PNG strip (the last observation, then the leads, side by side) and
an animated GIF (the last observation beside the forecast, one frame per lead), both maps on
the grid's coordinates (`stforecast.viz.maps`) with one colour scale and its unit
(`stforecast.viz.palette`). Matplotlib through `Figure` only: no pyplot, no global state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stforecast.viz.maps import MapGrid, MapLayers, axes_note, draw_layers, style_axes
from stforecast.viz.palette import Scale, colorbar

__all__ = ["Panel", "Picture", "draw_gif", "draw_png"]

COLUMNS = 6  # leads per row of the PNG strip (the observation comes first)
FPS = 2  # GIF frames per second


@dataclass(frozen=True)
class Panel:
    """One map: its values (as shown) and its title (two short lines)."""

    values: np.ndarray
    title: str


@dataclass
class Picture:
    """Everything a quick look draws: the observation (or None), the leads, one scale."""

    leads: list[Panel]
    scale: Scale
    label: str  # colour-bar label, with the unit
    heading: str
    grid: MapGrid | None
    layers: MapLayers = field(default_factory=MapLayers)
    observation: Panel | None = None

    @property
    def panels(self) -> list[Panel]:
        return ([self.observation] if self.observation is not None else []) + self.leads

    @property
    def extent(self) -> tuple[list[float] | None, str]:
        return self.grid.extent() if self.grid is not None else (None, "upper")

    @property
    def note(self) -> str:
        return axes_note(self.grid, self.layers)


def _map(ax: Any, picture: Picture, values: np.ndarray, *, x_labels: bool, y_labels: bool) -> Any:
    extent, origin = picture.extent
    image = ax.imshow(
        values, cmap=picture.scale.cmap, norm=picture.scale.norm, extent=extent, origin=origin,
        interpolation="nearest", resample=False,
    )  # fmt: skip
    ax.set_aspect("equal")
    style_axes(ax, picture.grid, x_labels=x_labels, y_labels=y_labels)
    if picture.grid is not None:
        draw_layers(ax, picture.grid, picture.layers)
    return image


def _colorbar(fig: Any, image: Any, picture: Picture, cax: Any) -> None:
    colorbar(fig, image, cax, picture.scale, picture.label, size=9)


def _footer(fig: Any, picture: Picture, height: float) -> None:
    if picture.note:
        fig.text(0.01, 0.06 / height, picture.note, fontsize=7, color="0.35", va="bottom")


def draw_png(tmp: Path, picture: Picture) -> None:
    """The strip: rows of six panels, the observation first, one colour bar on the right."""
    from matplotlib.figure import Figure

    panels = picture.panels
    n = len(panels)
    ny, nx = panels[0].values.shape
    cols = min(n, COLUMNS + (picture.observation is not None))
    rows = -(-n // cols)
    ticks = picture.grid is not None
    # A fixed layout in inches (constrained layout would cost more than the drawing itself)
    panel_w, title_h, head_h, bar_w = 2.2, 0.42, 0.45, 1.25
    gap, left_m = (0.12, 0.45) if ticks else (0.1, 0.1)
    tick_h, foot_h = (0.2, 0.3) if ticks else (0.0, 0.15 + 0.15 * bool(picture.note))
    panel_h = min(panel_w * ny / nx, 2 * panel_w)
    width = left_m + cols * (panel_w + gap) + bar_w
    height = head_h + rows * (title_h + panel_h + tick_h) + foot_h
    fig = Figure(figsize=(width, height), dpi=100)
    image = None
    for k, panel in enumerate(panels):
        r, c = divmod(k, cols)
        left = left_m + c * (panel_w + gap)
        bottom = height - head_h - (r + 1) * (title_h + panel_h + tick_h) + tick_h
        ax = fig.add_axes((left / width, bottom / height, panel_w / width, panel_h / height))
        image = _map(ax, picture, panel.values, x_labels=True, y_labels=c == 0)
        observed = picture.observation is not None and k == 0
        ax.set_title(panel.title, fontsize=8, fontweight="bold" if observed else "normal")
    plots_h = height - head_h - foot_h
    bar_h = min(plots_h - title_h, 4.0)
    bar_bottom = foot_h + (plots_h - title_h - bar_h) / 2
    cax = fig.add_axes(
        ((width - bar_w + 0.15) / width, bar_bottom / height, 0.15 / width, bar_h / height)
    )
    _colorbar(fig, image, picture, cax)
    fig.suptitle(picture.heading, fontsize=10, y=1 - 0.12 / height, va="top")
    _footer(fig, picture, height)
    fig.savefig(tmp, format="png")


def draw_gif(tmp: Path, picture: Picture) -> None:
    """The animation: the observation (fixed) beside the forecast, one frame per lead."""
    from matplotlib.animation import PillowWriter
    from matplotlib.figure import Figure

    ny, nx = picture.leads[0].values.shape
    maps = 2 if picture.observation is not None else 1
    ticks = picture.grid is not None
    map_w, gap, left_m, bar_w = 3.9, (0.25 if ticks else 0.1), (0.5 if ticks else 0.15), 1.15
    map_h = min(map_w * ny / nx, 6.0)
    foot = 0.5 if ticks else 0.25 + 0.15 * bool(picture.note)
    width = math.ceil((left_m + maps * (map_w + gap) + bar_w) * 4) / 4
    height = math.ceil((map_h + 0.85 + foot) * 4) / 4  # quarter inches: whole pixels
    bottom = foot / height
    fig = Figure(figsize=(width, height), dpi=100)
    axes = []
    for m in range(maps):
        x0 = (left_m + m * (map_w + gap)) / width
        axes.append(fig.add_axes((x0, bottom, map_w / width, map_h / height)))
    if picture.observation is not None:
        _map(axes[0], picture, picture.observation.values, x_labels=True, y_labels=True)
        axes[0].set_title(picture.observation.title, fontsize=9, fontweight="bold")
    ax = axes[-1]
    image = _map(ax, picture, picture.leads[0].values, x_labels=True, y_labels=maps == 1)
    cax = fig.add_axes(
        ((width - bar_w + 0.2) / width, bottom + 0.05 * map_h / height, 0.15 / width,
         0.9 * map_h / height)
    )  # fmt: skip
    _colorbar(fig, image, picture, cax)
    fig.suptitle(picture.heading, fontsize=10, y=1 - 0.1 / height, va="top")
    _footer(fig, picture, height)
    title = ax.set_title(picture.leads[0].title, fontsize=9)
    writer = PillowWriter(fps=FPS)
    with writer.saving(fig, str(tmp), 100):
        for panel in picture.leads:
            image.set_data(panel.values)
            title.set_text(panel.title)
            writer.grab_frame()
