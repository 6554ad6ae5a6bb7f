"""The report's figures: each score against lead time (`score_figure`) and sample panels of
inputs, truth, forecasts and the model's error (`sample_figure`).

Matplotlib is used through `matplotlib.figure.Figure` only (rendered by the Agg canvas): no pyplot,
so no global figure state and nothing is ever shown. The panels' colours are the panels' choice of
`stforecast.viz.palette`.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from stforecast.errors import ConfigError
from stforecast.evaluation.document import (
    BASELINE_ORDER,
    NO_FIGURE,
    as_lead,
    check,
    family,
    grid_spacing_km,
    key_order,
    leads_of,
    methods_of,
    scale_text,
    score_label,
    series,
    series_keys,
    sort_number,
    split_fss,
    units_of,
)
from stforecast.viz.maps import MapGrid, axes_note, draw_layers, map_layers, style_axes
from stforecast.viz.palette import Scale, colorbar, display_scale, error_scale, rain_units

__all__ = ["figure_keys", "group_keys", "png_bytes", "sample_figure", "score_figure"]

DPI = 100
MAX_LEAD_COLUMNS = 6
MAX_INPUT_PANELS = 4
PANEL_INCHES = 1.5

METHOD_COLOURS = {"model": "#1f77b4", "persistence": "#7f7f7f", "extrapolation": "#ff7f0e"}
OTHER_COLOURS = ("#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
SCALE_STYLES = ("-", "--", ":", "-.")

MINUS = "\u2212"  # typographic minus in figure and table text
ERROR_ROW = f"model {MINUS} truth"


def png_bytes(fig: Figure) -> bytes:
    """A figure as PNG bytes, without the software tag, so that equal figures are equal files."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


# ------------------------------------------------------------------------------ scores


def _colour(method: str, index: int) -> str:
    return METHOD_COLOURS.get(method, OTHER_COLOURS[index % len(OTHER_COLOURS)])


def group_keys(metrics: Mapping[str, Any], key: str) -> list[tuple[str, str | None]]:
    """The per-lead keys one figure of `key` draws: `[(key, None)]`, or `[(fss_t_s, s), ...]`."""
    all_keys = series_keys(metrics)
    if key in all_keys:
        return [(key, None)]
    scales = []
    for k in all_keys:
        split = split_fss(k)
        if split is not None and f"fss_{split[0]}" == key:
            scales.append((k, split[1]))
    if not scales:
        raise ConfigError(f"score_figure: no method has the score {key!r}")
    return sorted(scales, key=lambda ks: sort_number(ks[1] or ""))


def score_figure(metrics: dict, key: str) -> Figure:
    """One score against lead time, one line per method present (gaps where undefined).

    `key` is a per-lead key of metrics.json (`"mse"`, `"csi_1.0"`, `"fss_1.0_4"`), or
    `"fss_<threshold>"` for every neighbourhood scale at that threshold: colour per method, line
    style per scale.
    """
    check(metrics)
    leads = np.array(leads_of(metrics), dtype=float)
    methods = methods_of(metrics)
    units = units_of(metrics)
    spacing = grid_spacing_km(metrics)
    groups = group_keys(metrics, key)

    fig = Figure(figsize=(6.4, 3.6), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    plotted_methods: list[tuple[str, str]] = []
    for index, method in enumerate(methods):
        colour = _colour(method, index)
        drawn = False
        for g, (k, _scale) in enumerate(groups):
            values = series(metrics, method, k)
            if values is None:
                continue
            ax.plot(
                leads,
                values,
                color=colour,
                linestyle=SCALE_STYLES[g % len(SCALE_STYLES)],
                marker="o",
                markersize=3.5 if method == "model" else 2.5,
                linewidth=2.0 if method == "model" else 1.3,
                label=method if len(groups) == 1 else None,
                zorder=3 if method == "model" else 2,
            )
            drawn = True
        if drawn:
            plotted_methods.append((method, colour))

    ax.set_xlabel("lead time [min]")
    one = groups[0][0] if len(groups) == 1 else key
    ax.set_ylabel(score_label(one, units, axis=True, spacing_km=spacing))
    title = score_label(one, units, spacing_km=spacing) + (
        "" if len(groups) == 1 else ", all scales"
    )
    ax.set_title(f"{title} against lead time", fontsize=11)
    ax.grid(True, alpha=0.3)
    if len(leads) > 1:
        ax.set_xlim(leads.min() - 0.02 * np.ptp(leads), leads.max() + 0.02 * np.ptp(leads))
    if len(groups) == 1:
        if plotted_methods:
            ax.legend(fontsize=8)
    else:
        method_handles = [Line2D([], [], color=c, label=m) for m, c in plotted_methods]
        scale_handles = [
            Line2D(
                [],
                [],
                color="0.3",
                linestyle=SCALE_STYLES[g % len(SCALE_STYLES)],
                label=scale_text(s or "", spacing),
            )
            for g, (_k, s) in enumerate(groups)
        ]
        first = ax.legend(handles=method_handles, fontsize=8, loc="upper right", title="method")
        ax.add_artist(first)
        ax.legend(handles=scale_handles, fontsize=8, loc="lower left", title="scale")
    return fig


def figure_keys(metrics: Mapping[str, Any]) -> list[str]:
    """Keys given to `score_figure` for the report: one figure per score family / threshold."""
    keys = series_keys(metrics)
    out: list[str] = []
    fss_thresholds: list[str] = []
    for key in keys:
        kind = family(key)
        split = split_fss(key)
        if split is not None:
            if split[0] not in fss_thresholds:
                fss_thresholds.append(split[0])
            continue
        if kind in NO_FIGURE:
            continue
        if key.endswith("_pixel") and key[: -len("_pixel")] in keys:
            continue  # proportional to the per-frame sum: same curve
        out.append(key)
    out += [f"fss_{t}" for t in sorted(fss_thresholds, key=sort_number)]
    return sorted(out, key=key_order)


# ------------------------------------------------------------------------------ sample panels


def _frames(value: Any, name: str) -> np.ndarray:
    """A (T, H, W) float array; a singleton channel axis (T, 1, H, W) / (T, H, W, 1) is dropped."""
    arr = np.asarray(value, dtype=float)
    if arr.ndim == 4 and arr.shape[1] == 1:
        arr = arr[:, 0]
    elif arr.ndim == 4 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    elif arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise ConfigError(f"sample: {name} must be (T, H, W), got shape {arr.shape}")
    return arr


def _lead_columns(n: int) -> list[int]:
    """At most MAX_LEAD_COLUMNS evenly spaced indices in range(n), first and last included."""
    if n <= MAX_LEAD_COLUMNS:
        return list(range(n))
    return sorted({round(float(i)) for i in np.linspace(0, n - 1, MAX_LEAD_COLUMNS)})


def _sample_arrays(
    sample: Mapping[str, Any],
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray], list[float] | None]:
    """A sample's inputs, truth, forecasts (model and baselines first) and lead times, checked
    against one another."""
    inputs = _frames(sample.get("inputs"), "inputs")
    truth = _frames(sample.get("truth"), "truth")
    forecasts_in = sample.get("forecasts") or {}
    if not isinstance(forecasts_in, Mapping):
        raise ConfigError("sample: forecasts must map method names to (T, H, W) arrays")
    order = [m for m in BASELINE_ORDER if m in forecasts_in]
    order += [m for m in forecasts_in if m not in BASELINE_ORDER]
    forecasts = {m: _frames(forecasts_in[m], f"forecasts[{m!r}]") for m in order}
    for name, arr in forecasts.items():
        if arr.shape != truth.shape:
            raise ConfigError(
                f"sample: forecast {name!r} has shape {arr.shape}, truth has {truth.shape}"
            )
    if inputs.shape[1:] != truth.shape[1:]:
        raise ConfigError(f"sample: inputs {inputs.shape} and truth {truth.shape} differ in grid")
    n_out = truth.shape[0]
    leads_in = sample.get("lead_minutes")
    leads = [float(v) for v in leads_in] if leads_in is not None else None
    if leads is not None and len(leads) != n_out:
        raise ConfigError(f"sample: {len(leads)} lead_minutes for {n_out} truth frames")
    return inputs, truth, forecasts, leads


class _Layout:
    """Where a panel's images and colour bars go: a fixed layout in inches from the top left
    (constrained layout is slow with this many axes), as figure fractions."""

    def __init__(self, grid: tuple[int, int], ncols: int, rows: list[str], ticks: bool) -> None:
        h, w = grid
        self.pw = pw = PANEL_INCHES
        self.ph = ph = pw * min(max(h / w if w else 1.0, 0.4), 2.5)
        self.left, right, self.hgap, self.cbar = (0.72 if ticks else 0.42), 1.05, 0.06, 0.14
        gaps = [0.62] + [
            0.24 if r == 1 else 0.16 if rows[r] == ERROR_ROW else 0.05 for r in range(1, len(rows))
        ]
        self.tops = np.cumsum([g + (ph if r else 0.0) for r, g in enumerate(gaps)])
        self.width = self.left + ncols * pw + (ncols - 1) * self.hgap + right
        self.foot = 0.45 if ticks else 0.1  # x tick labels under the last row, the note
        self.height = float(self.tops[-1]) + ph + self.foot
        self.bar_x = self.left + ncols * pw + (ncols - 1) * self.hgap + 0.12
        self.interpolation = "nearest" if max(h, w) <= pw * DPI else "antialiased"

    def rect(self, x0: float, top: float, dx: float, dy: float) -> list[float]:
        return [x0 / self.width, 1.0 - (top + dy) / self.height, dx / self.width, dy / self.height]

    def panel(self, row: int, col: int) -> list[float]:
        x0 = self.left + col * (self.pw + self.hgap)
        return self.rect(x0, float(self.tops[row]), self.pw, self.ph)


def _panel_title(
    name: str, c: int, t: int, n_inputs: int, step: float | None, leads: list[float] | None
) -> str | None:
    """Inputs count back from t0; the truth row carries the lead times; other rows none."""
    if name == "inputs":
        back = n_inputs - 1 - c
        if back == 0:
            return "t0"
        if step is not None:
            return f"t{MINUS}{as_lead(back * step)} min"
        return f"t{MINUS}{back}"
    if name == "truth":
        return f"+{as_lead(leads[t])} min" if leads is not None else f"+{t + 1}"
    return None


def _colorbar(
    fig: Figure, image: Any, rect: list[float], name: str, scale: Scale, label: str
) -> None:
    """One colour bar beside the rows it belongs to, as in `stforecast plot`."""
    colorbar(fig, image, fig.add_axes(rect, label=f"colorbar:{name}"), scale, label, size=8)


def panel_grid(grid: Any, shape: tuple[int, int]) -> MapGrid | None:
    """The map of a sample's (H, W) frames: a `MapGrid`, or metrics.json's `grid` entry (its
    CRS and first and last cell centres when they fit `shape`, else its spacing alone: km
    from the corner); None when neither places it."""
    if isinstance(grid, MapGrid):
        return grid if (grid.y.size, grid.x.size) == tuple(shape) else None
    if not isinstance(grid, Mapping):
        return None
    h, w = shape
    x, y, wkt = grid.get("x"), grid.get("y"), str(grid.get("crs_wkt") or "")
    if wkt and x and y and list(grid.get("shape") or [h, w]) == [h, w] and min(h, w) > 1:
        from stforecast.io.crs import crs_unit_factor

        try:
            metres = crs_unit_factor(wkt)
        except Exception:  # an unreadable CRS: the spacing alone, below
            metres = -1.0
        if metres != -1.0:
            xs, ys = np.linspace(x[0], x[1], w), np.linspace(y[0], y[1], h)
            return MapGrid(xs, ys, wkt, metres, metres is None)
    spacing = grid.get("spacing_metres")
    if isinstance(spacing, int | float) and spacing > 0:
        xs = (np.arange(w) + 0.5) * spacing
        label = f"x, y in km from the grid's corner ({spacing / 1000:g} km cells)"
        return MapGrid(xs, (np.arange(h)[::-1] + 0.5) * spacing, "", 1.0, label=label)
    return None


def _shown(arr: np.ndarray, units: str) -> np.ndarray:
    """Rain in the units the palette shows it in (mm/h, mm), anything else as it is."""
    from stforecast.data import units as units_mod

    target = rain_units(units)
    if target is None or units_mod.equivalent(units, target):
        return arr
    return np.asarray(units_mod.convert(arr, units, target), dtype=float)


def sample_figure(sample: dict, grid: Any = None) -> Figure:
    """Panel of one sample: rows = last inputs, truth, each method's forecast, model error.

    Columns are at most six evenly spaced lead times. Data rows share one colour scale, the
    one of `stforecast plot` (`viz.palette`: rain levels in mm/h or mm, white below 0.1;
    viridis otherwise); the error row (forecast - truth of "model") uses a diverging colormap
    centred at 0; the colour bars carry the unit. NaN (no coverage) is grey. `grid` (a
    `MapGrid`, or metrics.json's `grid`; `sample["grid"]` first) puts km or degree ticks,
    the graticule and coastlines on the panels.
    """
    inputs, truth, forecasts, leads = _sample_arrays(sample)
    units = str(sample.get("units") or "")
    n_out = truth.shape[0]
    columns = _lead_columns(n_out)
    n_inputs = min(inputs.shape[0], max(len(columns), 1), MAX_INPUT_PANELS)
    shown_inputs = _shown(inputs[inputs.shape[0] - n_inputs :], units)
    truth = _shown(truth, units)
    forecasts = {name: _shown(arr, units) for name, arr in forecasts.items()}
    step = None
    if leads is not None:
        step = leads[0] if n_out == 1 or leads[0] > 0 else leads[1] - leads[0]

    rows: list[tuple[str, np.ndarray]] = [("inputs", shown_inputs), ("truth", truth)]
    rows += [(name, arr) for name, arr in forecasts.items()]
    error = forecasts["model"] - truth if "model" in forecasts else None
    if error is not None:
        rows.append((ERROR_ROW, error))
    data_stack = [shown_inputs[:, None], truth[columns][:, None]]
    data_stack += [arr[columns][:, None] for arr in forecasts.values()]
    data = np.concatenate([d.reshape(-1) for d in data_stack])
    scale, _values, unit = display_scale(data, rain_units(units) or units)
    scales = {"data": scale}
    if error is not None:
        scales["error"] = error_scale(error[columns])
    where = panel_grid(sample.get("grid") or grid, truth.shape[1:])
    layers = map_layers(where) if where is not None else None
    layout = _Layout(truth.shape[1:], len(columns), [name for name, _ in rows], where is not None)
    fig = Figure(figsize=(layout.width, layout.height), dpi=DPI)
    images = _draw_rows(fig, layout, rows, columns, scales, where, layers, (n_inputs, step, leads))
    if "data" in images:
        data_rows = [r for r, (name, _arr) in enumerate(rows) if name != ERROR_ROW]
        top = float(layout.tops[data_rows[0]])
        bottom = float(layout.tops[data_rows[-1]]) + layout.ph
        rect = layout.rect(layout.bar_x, top, layout.cbar, bottom - top)
        _colorbar(fig, images["data"], rect, "data", scales["data"], unit or "value")
    if "error" in images:
        rect = layout.rect(layout.bar_x, float(layout.tops[-1]), layout.cbar, layout.ph)
        label = f"error{' [' + unit + ']' if unit else ''}"
        _colorbar(fig, images["error"], rect, "error", scales["error"], label)
    title = str(sample.get("title") or "sample")
    fig.suptitle(title, fontsize=10, y=1.0 - 0.12 / layout.height, va="top")
    note = axes_note(where, layers) if where is not None and layers is not None else ""
    if note:
        fig.text(0.01, 0.04 / layout.height, note, fontsize=7, color="0.35", va="bottom")
    return fig


def _draw_rows(fig, layout, rows, columns, scales, where, layers, times) -> dict[str, Any]:
    """Every panel; returns the last image of each scale, for its colour bar."""
    n_inputs, step, leads = times
    images: dict[str, Any] = {}
    extent, origin = where.extent() if where is not None else (None, "upper")
    for r, (name, arr) in enumerate(rows):
        kind = "error" if name == ERROR_ROW else "data"
        for c, t in enumerate(columns):
            if name == "inputs" and c >= n_inputs:
                continue
            ax = fig.add_axes(layout.panel(r, c))
            ax.set_label(f"panel:{r}:{c}:{name}")
            style_axes(ax, where, x_labels=r == len(rows) - 1, y_labels=c == 0)
            title = _panel_title(name, c, t, n_inputs, step, leads)
            if title is not None:
                ax.set_title(title, fontsize=8, pad=2)
            frame = arr[c] if name == "inputs" else arr[t]
            scale = scales[kind]
            images[kind] = ax.imshow(
                frame, cmap=scale.cmap, norm=scale.norm, interpolation=layout.interpolation,
                extent=extent, origin=origin,
            )  # fmt: skip
            if where is not None and layers is not None:
                draw_layers(ax, where, layers, labels=r == 0 and c == 0, fontsize=5)
            if c == 0:
                ax.set_ylabel(name, fontsize=9)
    return images
