"""The evaluation report: `report.html` (self-contained) and `report.md` with figures.

`write_report(out_dir, metrics, samples)` renders the `metrics.json` dict (see
`docs/architecture.md`) and a few sample forecasts into

- `out_dir/report.html`: one file, inline CSS, every figure embedded as a base64 PNG, no scripts and
  no links except in-page anchors, so it can be mailed or archived as is;
- `out_dir/report.md` with its figures as `out_dir/figures/*.png` (relative links).

Every file is written atomically (a temporary file beside it, then `os.replace`), so a reader never
sees a half-written report and an older report in `out_dir` is replaced as a whole.

Content: title, details (model run, data, test period, device, ... as given), a summary table of
every method's `summary` (best value per row marked), skill of the model against persistence and
against extrapolation per lead time, one figure per score family against lead time (MSE, MAE,
RMSE, SSIM, PSNR, CSI at each threshold, FSS at each threshold with one line style per
neighbourhood scale), the sample panels (inputs, truth, forecasts, model error), and the protocol.

Skill convention (`skill_table`):

- lower-is-better scores (MSE, MAE, RMSE, FAR, ...; perfect score 0): the skill score
  `1 - s_model / s_ref`, which is the generic `(s - s_ref) / (s_perfect - s_ref)` with
  `s_perfect = 0`: 1 is perfect, 0 no better than the reference, negative worse;
- higher-is-better scores (CSI, POD, ETS, FSS, SSIM, PSNR): the difference `s_model - s_ref`, in
  the score's own units (dB for PSNR); positive means better than the reference. A difference stays
  defined when the reference is perfect and is comparable across PSNR (unbounded) and the bounded
  scores.

Undefined values (None or NaN in either series, or a zero reference for a ratio) give NaN.

Matplotlib is used through `matplotlib.figure.Figure` only (rendered by the Agg canvas): no pyplot,
so no global figure state and nothing is ever shown.
"""

from __future__ import annotations

import base64
import contextlib
import html
import io
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import BoundaryNorm, Colormap, ListedColormap, Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from stforecast.errors import ConfigError
from stforecast.io.atomic import atomic_write_bytes

__all__ = ["sample_figure", "score_figure", "skill_table", "write_report"]

DPI = 100
MAX_LEAD_COLUMNS = 6
MAX_INPUT_PANELS = 4
PANEL_INCHES = 1.5

# Direction of each score family (the part of the key before the first "_").
HIGHER_IS_BETTER = frozenset({"csi", "pod", "ets", "fss", "ssim", "psnr", "hss", "acc"})
LOWER_IS_BETTER = frozenset({"mse", "mae", "rmse", "far", "lpips", "crps"})
CATEGORICAL = ("csi", "pod", "far", "ets")
CONTINUOUS_ORDER = ("mse", "mae", "rmse", "ssim", "psnr")
# Categorical scores that get no figure (they stay in the summary table and metrics.json).
NO_FIGURE = frozenset({"pod", "far", "ets"})

BASELINE_ORDER = ("model", "persistence", "extrapolation")
METHOD_COLOURS = {"model": "#1f77b4", "persistence": "#7f7f7f", "extrapolation": "#ff7f0e"}
OTHER_COLOURS = ("#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
SCALE_STYLES = ("-", "--", ":", "-.")

# Precipitation-like data: discrete levels in the data units (mm/h or mm), white below the first.
PRECIP_LEVELS = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0)
NAN_COLOUR = "0.78"
MINUS = "\u2212"  # typographic minus in figure and table text
UNDEFINED = "\u2013"  # en dash: an undefined value in a table
ERROR_ROW = f"model {MINUS} truth"

LABELS = {
    "mse": "MSE",
    "mae": "MAE",
    "rmse": "RMSE",
    "ssim": "SSIM",
    "psnr": "PSNR",
    "csi": "CSI",
    "pod": "POD",
    "far": "FAR",
    "ets": "ETS",
    "fss": "FSS",
}


# --------------------------------------------------------------------------------------------
# metrics.json helpers


def _family(key: str) -> str:
    return key.split("_", 1)[0]


def _direction(key: str) -> int | None:
    """+1 higher is better, -1 lower is better, None unknown."""
    family = _family(key)
    if family in HIGHER_IS_BETTER:
        return 1
    if family in LOWER_IS_BETTER:
        return -1
    return None


def _num(value: Any) -> float:
    """A score as a float, NaN for None / NaN / non-numbers."""
    if value is None or isinstance(value, bool):
        return math.nan
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out if math.isfinite(out) else math.nan


def _as_lead(value: Any) -> Any:
    f = float(value)
    return int(f) if f.is_integer() else f


def _leads(metrics: Mapping[str, Any]) -> list[Any]:
    leads = metrics.get("lead_minutes")
    if not isinstance(leads, Sequence) or isinstance(leads, str) or not leads:
        raise ConfigError("metrics: 'lead_minutes' must be a non-empty list of lead times")
    try:
        return [_as_lead(v) for v in leads]
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"metrics: 'lead_minutes' must hold numbers, got {leads!r}") from exc


def _methods(metrics: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """Methods in display order: model, persistence, extrapolation, then any others."""
    methods = metrics.get("methods")
    if not isinstance(methods, Mapping):
        raise ConfigError("metrics: 'methods' must be a mapping of method name to scores")
    names = [m for m in BASELINE_ORDER if m in methods]
    names += [m for m in methods if m not in BASELINE_ORDER]
    return {name: methods[name] for name in names if isinstance(methods[name], Mapping)}


def _check(metrics: Mapping[str, Any]) -> None:
    """Every list of scores is aligned with lead_minutes (a ConfigError naming it otherwise)."""
    n = len(_leads(metrics))
    for method, scores in _methods(metrics).items():
        for key, values in scores.items():
            if isinstance(values, (list, tuple)) and len(values) != n:
                raise ConfigError(
                    f"metrics: methods.{method}.{key} has {len(values)} values, must be a list "
                    f"aligned with lead_minutes ({n} values)"
                )


def _series(metrics: Mapping[str, Any], method: str, key: str) -> np.ndarray | None:
    """Per-lead values of `key` for `method` as floats (NaN where undefined), or None if absent."""
    scores = _methods(metrics).get(method)
    if scores is None or key not in scores:
        return None
    values = scores[key]
    n = len(_leads(metrics))
    if not isinstance(values, Sequence) or isinstance(values, str) or len(values) != n:
        raise ConfigError(
            f"metrics: methods.{method}.{key} must be a list aligned with lead_minutes ({n} values)"
        )
    return np.array([_num(v) for v in values], dtype=float)


def _is_series(values: Any, n: int) -> bool:
    return isinstance(values, Sequence) and not isinstance(values, str) and len(values) == n


def _split_fss(key: str) -> tuple[str, str] | None:
    m = re.fullmatch(r"fss_([^_]+)_([^_]+)", key)
    return (m.group(1), m.group(2)) if m else None


def _sort_number(text: str) -> tuple[float, str]:
    try:
        return (float(text), text)
    except ValueError:
        return (math.inf, text)


def _key_order(key: str) -> tuple:
    """Sort metric keys: continuous scores in a fixed order, then categorical, FSS, the rest."""
    family = _family(key)
    rest = key[len(family) + 1 :]
    if family in CONTINUOUS_ORDER:
        return (0, CONTINUOUS_ORDER.index(family), 0, rest, 0.0, "")
    if family in CATEGORICAL:
        return (1, CATEGORICAL.index(family), *_sort_number(rest), 0.0, "")
    fss = _split_fss(key)
    if fss is not None:
        return (2, 0, *_sort_number(fss[0]), *_sort_number(fss[1]))
    return (3, 0, 0.0, key, 0.0, "")


def _series_keys(metrics: Mapping[str, Any]) -> list[str]:
    """Every per-lead score key of any method, sorted."""
    n = len(_leads(metrics))
    keys: set[str] = set()
    for scores in _methods(metrics).values():
        keys.update(k for k, v in scores.items() if k != "summary" and _is_series(v, n))
    return sorted(keys, key=_key_order)


def _units(metrics: Mapping[str, Any]) -> str:
    units = metrics.get("units")
    return str(units) if units else ""


def _label(key: str, units: str = "", *, axis: bool = False) -> str:
    """Readable name of a score key, with its units on an axis label."""
    family = _family(key)
    name = LABELS.get(family, key)
    rest = key[len(family) + 1 :]
    fss = _split_fss(key)
    if fss is not None:
        text = f"FSS ≥ {fss[0]}{' ' + units if units else ''}, scale {fss[1]} px"
    elif family in CATEGORICAL and rest:
        text = f"{name} ≥ {rest}{' ' + units if units else ''}"
    elif family == "fss" and rest:
        text = f"FSS ≥ {rest}{' ' + units if units else ''}"
    elif rest == "pixel":
        text = f"{name} per pixel"
    elif key in LABELS:
        text = name
    else:
        text = key
    if axis:
        unit = {"mse": f"({units})²" if units else "", "mae": units, "rmse": units, "psnr": "dB"}
        if unit.get(family):
            text += f" [{unit[family]}]"
    return text


def _colour(method: str, index: int) -> str:
    return METHOD_COLOURS.get(method, OTHER_COLOURS[index % len(OTHER_COLOURS)])


def _protocol_text(metrics: Mapping[str, Any], key: str) -> str:
    protocol = metrics.get("protocol")
    if not isinstance(protocol, Mapping):
        return ""
    for candidate in (key, _family(key)):
        if candidate in protocol:
            return str(protocol[candidate])
    # A group figure ("fss_1.0"): the description of its first scale ("fss_1.0_1").
    group = sorted((k for k in protocol if str(k).startswith(key + "_")), key=_key_order)
    return str(protocol[group[0]]) if group else ""


# --------------------------------------------------------------------------------------------
# public API: skill, figures


def skill_table(
    metrics: dict, key: str = "mse", reference: str = "persistence"
) -> list[tuple[int, float]]:
    """Skill of "model" against `reference` for score `key`, per lead: `[(lead_minutes, skill)]`.

    Lower-is-better keys (mse, mae, rmse, far, ...): `1 - s_model / s_ref` (1 perfect, 0 as good
    as the reference, negative worse). Higher-is-better keys (csi, pod, ets, fss, ssim, psnr):
    `s_model - s_ref` (positive better). NaN where either value is undefined or a ratio's
    reference is 0. Raises `ConfigError` for a missing method or key or a key of unknown direction.
    """
    direction = _direction(key)
    if direction is None:
        raise ConfigError(
            f"skill_table: no skill convention for score {key!r} (known: "
            f"{', '.join(sorted(HIGHER_IS_BETTER | LOWER_IS_BETTER))})"
        )
    _check(metrics)
    leads = _leads(metrics)
    methods = _methods(metrics)
    for name in ("model", reference):
        if name not in methods:
            raise ConfigError(f"skill_table: metrics have no method {name!r}")
    model = _series(metrics, "model", key)
    ref = _series(metrics, reference, key)
    for name, values in (("model", model), (reference, ref)):
        if values is None:
            raise ConfigError(f"skill_table: method {name!r} has no score {key!r}")
    assert model is not None and ref is not None
    out: list[tuple[int, float]] = []
    for lead, m, r in zip(leads, model, ref, strict=True):
        if math.isnan(m) or math.isnan(r):
            skill = math.nan
        elif direction > 0:
            skill = float(m - r)
        else:
            skill = math.nan if r == 0 else float(1.0 - m / r)
        out.append((lead, skill))
    return out


def _group_keys(metrics: Mapping[str, Any], key: str) -> list[tuple[str, str | None]]:
    """The per-lead keys one figure of `key` draws: `[(key, None)]`, or `[(fss_t_s, s), ...]`."""
    all_keys = _series_keys(metrics)
    if key in all_keys:
        return [(key, None)]
    scales = []
    for k in all_keys:
        split = _split_fss(k)
        if split is not None and f"fss_{split[0]}" == key:
            scales.append((k, split[1]))
    if not scales:
        raise ConfigError(f"score_figure: no method has the score {key!r}")
    return sorted(scales, key=lambda ks: _sort_number(ks[1] or ""))


def score_figure(metrics: dict, key: str) -> Figure:
    """One score against lead time, one line per method present (gaps where undefined).

    `key` is a per-lead key of metrics.json (`"mse"`, `"csi_1.0"`, `"fss_1.0_4"`), or
    `"fss_<threshold>"` for every neighbourhood scale at that threshold: colour per method, line
    style per scale.
    """
    _check(metrics)
    leads = np.array(_leads(metrics), dtype=float)
    methods = _methods(metrics)
    units = _units(metrics)
    groups = _group_keys(metrics, key)

    fig = Figure(figsize=(6.4, 3.6), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    plotted_methods: list[tuple[str, str]] = []
    for index, method in enumerate(methods):
        colour = _colour(method, index)
        drawn = False
        for g, (k, _scale) in enumerate(groups):
            values = _series(metrics, method, k)
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
    ax.set_ylabel(_label(groups[0][0] if len(groups) == 1 else key, units, axis=True))
    title = _label(key, units) if len(groups) == 1 else f"{_label(key, units)}, all scales"
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
                [], [], color="0.3", linestyle=SCALE_STYLES[g % len(SCALE_STYLES)], label=f"{s} px"
            )
            for g, (_k, s) in enumerate(groups)
        ]
        first = ax.legend(handles=method_handles, fontsize=8, loc="upper right", title="method")
        ax.add_artist(first)
        ax.legend(handles=scale_handles, fontsize=8, loc="lower left", title="scale")
    return fig


# --------------------------------------------------------------------------------------------
# sample panels


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


def _is_precipitation(units: str, data: np.ndarray) -> bool:
    u = units.lower().replace(" ", "")
    rate_like = u.startswith("mm")  # mm h-1, mm/h, mm hr-1, mm (accumulation)
    finite = data[np.isfinite(data)]
    return rate_like and (finite.size == 0 or float(finite.min()) >= 0.0)


def _data_scale(data: np.ndarray, units: str) -> tuple[Colormap, Normalize, str]:
    """Colormap, norm and colorbar `extend` for the data rows (NaN drawn grey)."""
    finite = data[np.isfinite(data)]
    if _is_precipitation(units, data):
        top = float(np.percentile(finite, 99.9)) if finite.size else 1.0
        first_above = next((i for i, v in enumerate(PRECIP_LEVELS) if v >= top), None)
        n_levels = len(PRECIP_LEVELS) if first_above is None else max(first_above + 1, 3)
        levels = list(PRECIP_LEVELS[:n_levels])
        base = colormaps["YlGnBu"]
        cmap = ListedColormap(
            base(np.linspace(0.2, 1.0, len(levels) - 1)), name="precip"
        ).with_extremes(under="white", over="#d62728", bad=NAN_COLOUR)
        return cmap, BoundaryNorm(levels, cmap.N), "both"
    if finite.size:
        lo, hi = float(finite.min()), float(np.percentile(finite, 99.5))
        if finite.min() >= 0:
            lo = 0.0
        if hi <= lo:
            hi = lo + (abs(lo) or 1.0)
    else:
        lo, hi = 0.0, 1.0
    cmap = colormaps["viridis"].with_extremes(bad=NAN_COLOUR)
    return cmap, Normalize(lo, hi), "max" if finite.size and finite.max() > hi else "neither"


def _error_scale(error: np.ndarray) -> tuple[Colormap, Normalize]:
    finite = np.abs(error[np.isfinite(error)])
    limit = float(np.percentile(finite, 99.5)) if finite.size else 1.0
    if limit <= 0:
        limit = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    cmap = colormaps["RdBu_r"].with_extremes(bad=NAN_COLOUR)
    return cmap, Normalize(-limit, limit)


def _fmt_minutes(value: float) -> str:
    return f"{_as_lead(value)}"


def sample_figure(sample: dict) -> Figure:
    """Panel of one sample: rows = last inputs, truth, each method's forecast, model error.

    Columns are at most six evenly spaced lead times. Data rows share one colour scale (discrete
    rain-rate levels for units in mm, white below the first level; viridis otherwise); the error
    row (forecast - truth of "model") uses a diverging colormap centred at 0. NaN (no coverage)
    is grey.
    """
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
    units = str(sample.get("units") or "")
    n_out = truth.shape[0]
    leads_in = sample.get("lead_minutes")
    leads = [float(v) for v in leads_in] if leads_in is not None else None
    if leads is not None and len(leads) != n_out:
        raise ConfigError(f"sample: {len(leads)} lead_minutes for {n_out} truth frames")

    columns = _lead_columns(n_out)
    ncols = len(columns)
    n_inputs = min(inputs.shape[0], max(ncols, 1), MAX_INPUT_PANELS)
    shown_inputs = inputs[inputs.shape[0] - n_inputs :]
    step = None
    if leads is not None:
        step = leads[0] if n_out == 1 or leads[0] > 0 else leads[1] - leads[0]

    rows: list[tuple[str, np.ndarray | None]] = [("inputs", None), ("truth", truth)]
    rows += [(name, arr) for name, arr in forecasts.items()]
    error = forecasts["model"] - truth if "model" in forecasts else None
    if error is not None:
        rows.append((ERROR_ROW, error))

    data_stack = [shown_inputs[:, None], truth[columns][:, None]]
    data_stack += [arr[columns][:, None] for arr in forecasts.values()]
    data = np.concatenate([d.reshape(-1) for d in data_stack])
    cmap, norm, extend = _data_scale(data, units)

    # Fixed layout in inches (constrained layout is slow with this many axes).
    h, w = truth.shape[1:]
    pw = PANEL_INCHES
    ph = pw * min(max(h / w if w else 1.0, 0.4), 2.5)
    left, right, hgap, cbar = 0.42, 1.05, 0.06, 0.14
    gaps = [0.62] + [
        0.24 if r == 1 else 0.16 if rows[r][0] == ERROR_ROW else 0.05 for r in range(1, len(rows))
    ]
    tops = np.cumsum([g + (ph if r else 0.0) for r, g in enumerate(gaps)])  # inches from top
    width = left + ncols * pw + (ncols - 1) * hgap + right
    height = float(tops[-1]) + ph + 0.1
    fig = Figure(figsize=(width, height), dpi=DPI)
    interpolation = "nearest" if max(h, w) <= pw * DPI else "antialiased"

    def rect(x0: float, top: float, dx: float, dy: float) -> list[float]:
        return [x0 / width, 1.0 - (top + dy) / height, dx / width, dy / height]

    data_rows = [r for r, (name, _arr) in enumerate(rows) if name != ERROR_ROW]
    image = error_image = None
    for r, (name, arr) in enumerate(rows):
        for c, t in enumerate(columns):
            if name == "inputs" and c >= n_inputs:
                continue
            ax = fig.add_axes(rect(left + c * (pw + hgap), float(tops[r]), pw, ph))
            ax.set_label(f"panel:{r}:{c}:{name}")
            ax.set_xticks([])
            ax.set_yticks([])
            if name == "inputs":
                back = n_inputs - 1 - c
                if back == 0:
                    label = "t0"
                elif step is not None:
                    label = f"t{MINUS}{_fmt_minutes(back * step)} min"
                else:
                    label = f"t{MINUS}{back}"
                ax.set_title(label, fontsize=8, pad=2)
                frame = shown_inputs[c]
            else:
                assert arr is not None
                frame = arr[t]
                if name == "truth":
                    lead = f"+{_fmt_minutes(leads[t])} min" if leads is not None else f"+{t + 1}"
                    ax.set_title(lead, fontsize=8, pad=2)
            if name == ERROR_ROW:
                assert error is not None
                ecmap, enorm = _error_scale(error[columns])
                error_image = ax.imshow(frame, cmap=ecmap, norm=enorm, interpolation=interpolation)
            else:
                image = ax.imshow(frame, cmap=cmap, norm=norm, interpolation=interpolation)
            if c == 0:
                ax.set_ylabel(name, fontsize=9)
    x_bar = left + ncols * pw + (ncols - 1) * hgap + 0.12
    if image is not None:
        top, bottom = float(tops[data_rows[0]]), float(tops[data_rows[-1]]) + ph
        cax = fig.add_axes(rect(x_bar, top, cbar, bottom - top), label="colorbar:data")
        bar = fig.colorbar(image, cax=cax, extend=extend)
        bar.set_label(units or "value", fontsize=8)
        bar.ax.tick_params(labelsize=7)
    if error_image is not None:
        cax = fig.add_axes(rect(x_bar, float(tops[-1]), cbar, ph), label="colorbar:error")
        bar = fig.colorbar(error_image, cax=cax, extend="both")
        bar.set_label(f"error{' [' + units + ']' if units else ''}", fontsize=8)
        bar.ax.tick_params(labelsize=7)
    title = str(sample.get("title") or "sample")
    fig.suptitle(title, fontsize=10, y=1.0 - 0.12 / height, va="top")
    return fig


# --------------------------------------------------------------------------------------------
# rendering helpers


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def _fmt(value: Any) -> str:
    v = _num(value)
    if math.isnan(v):
        return UNDEFINED
    if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
        return f"{v:.3e}"
    return f"{v:.4g}"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "figure"


def _summary_values(scores: Mapping[str, Any], n: int) -> dict[str, float]:
    """A method's summary; the mean over defined lead times where `summary` lacks a key."""
    out: dict[str, float] = {}
    summary = scores.get("summary")
    for key, values in scores.items():
        if key != "summary" and _is_series(values, n):
            arr = np.array([_num(v) for v in values])
            out[key] = float(np.mean(arr[~np.isnan(arr)])) if (~np.isnan(arr)).any() else math.nan
    if isinstance(summary, Mapping):
        for key, value in summary.items():
            if not isinstance(value, (Mapping, list, str)):
                out[key] = _num(value)
    return out


class _Table:
    """A table rendered to both HTML and Markdown; cells are (text, css class)."""

    def __init__(
        self,
        header: list[str],
        rows: list[list[tuple[str, str]]],
        *,
        css: str = "",
        numeric: bool = True,
    ) -> None:
        self.header = header
        self.rows = rows
        self.css = css
        self.numeric = numeric  # right-align the columns after the first (Markdown)

    def html(self, caption: str = "") -> str:
        cls = f' class="{self.css}"' if self.css else ""
        out = [f'<div class="scroll"><table{cls}>']
        if caption:
            out.append(f"<caption>{html.escape(caption)}</caption>")
        if any(self.header):
            heads = "".join(f"<th>{html.escape(h)}</th>" for h in self.header)
            out.append(f"<thead><tr>{heads}</tr></thead>")
        out.append("<tbody>")
        for row in self.rows:
            cells = []
            for i, (text, css) in enumerate(row):
                tag = "th" if i == 0 else "td"
                cls = f' class="{css}"' if css else ""
                cells.append(f"<{tag}{cls}>{html.escape(text)}</{tag}>")
            out.append("<tr>" + "".join(cells) + "</tr>")
        out.append("</tbody></table></div>")
        return "\n".join(out)

    def markdown(self) -> str:
        def esc(text: str) -> str:
            return text.replace("|", "\\|").replace("\n", " ")

        lines = ["| " + " | ".join(esc(h) for h in self.header) + " |"]
        align = " ---: " if self.numeric else " --- "
        lines.append("|" + "|".join([" --- "] + [align] * (len(self.header) - 1)) + "|")
        for row in self.rows:
            cells = [f"**{esc(t)}**" if "best" in css.split() else esc(t) for t, css in row]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)


def _summary_table(metrics: Mapping[str, Any]) -> _Table | None:
    methods = _methods(metrics)
    n = len(_leads(metrics))
    values = {m: _summary_values(s, n) for m, s in methods.items()}
    keys = sorted({k for v in values.values() for k in v}, key=_key_order)
    if not keys:
        return None
    rows = []
    for key in keys:
        direction = _direction(key)
        row_values = [values[m].get(key, math.nan) for m in methods]
        finite = [v for v in row_values if not math.isnan(v)]
        best = None
        if direction is not None and len(finite) > 1:
            best = max(finite) if direction > 0 else min(finite)
        arrow = {1: " ↑", -1: " ↓"}.get(direction, "") if direction else ""
        row = [(key + arrow, "")]
        for v in row_values:
            row.append((_fmt(v), "best" if best is not None and v == best else ""))
        rows.append(row)
    return _Table(["metric", *methods], rows)


def _skill_keys(metrics: Mapping[str, Any], reference: str) -> list[str]:
    methods = _methods(metrics)
    if "model" not in methods or reference not in methods:
        return []
    n = len(_leads(metrics))
    both = [
        k
        for k in _series_keys(metrics)
        if _is_series(methods["model"].get(k), n) and _is_series(methods[reference].get(k), n)
    ]
    keep = []
    for key in both:
        if _direction(key) is None or _family(key) in NO_FIGURE:
            continue
        if key.endswith("_pixel") and key[: -len("_pixel")] in both:
            continue  # same skill as the per-frame sum
        keep.append(key)
    return keep


def _skill_table_render(metrics: Mapping[str, Any], reference: str) -> _Table | None:
    keys = _skill_keys(metrics, reference)
    if not keys:
        return None
    columns = {k: skill_table(dict(metrics), k, reference) for k in keys}
    header = ["lead [min]"] + [f"{k} ({'SS' if _direction(k) == -1 else 'Δ'})" for k in keys]
    rows = []
    for i, lead in enumerate(_leads(metrics)):
        row = [(f"+{lead}", "")]
        for k in keys:
            v = columns[k][i][1]
            css = "" if math.isnan(v) or v == 0 else ("pos" if v > 0 else "neg")
            row.append((UNDEFINED if math.isnan(v) else f"{v:+.3f}", css))
        rows.append(row)
    return _Table(header, rows)


def _figure_keys(metrics: Mapping[str, Any]) -> list[str]:
    """Keys given to `score_figure` for the report: one figure per score family / threshold."""
    keys = _series_keys(metrics)
    out: list[str] = []
    fss_thresholds: list[str] = []
    for key in keys:
        family = _family(key)
        split = _split_fss(key)
        if split is not None:
            if split[0] not in fss_thresholds:
                fss_thresholds.append(split[0])
            continue
        if family in NO_FIGURE:
            continue
        if key.endswith("_pixel") and key[: -len("_pixel")] in keys:
            continue  # proportional to the per-frame sum: same curve
        out.append(key)
    out += [f"fss_{t}" for t in sorted(fss_thresholds, key=_sort_number)]
    return sorted(out, key=_key_order)


def _details_rows(details: Mapping[str, Any] | None, metrics: Mapping[str, Any]) -> list[list]:
    rows = [[(str(k), ""), (str(v), "")] for k, v in (details or {}).items()]
    known = {"lead_minutes", "methods", "protocol"}
    for key, value in metrics.items():
        if key in known or (details and key in details):
            continue
        if isinstance(value, (str, int, float, bool)) or (
            isinstance(value, (list, dict)) and len(json.dumps(value, default=str)) <= 200
        ):
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            rows.append([(str(key), ""), (str(text), "")])
    leads = _leads(metrics)
    rows.append([("lead times [min]", ""), (", ".join(str(v) for v in leads), "")])
    rows.append([("methods", ""), (", ".join(_methods(metrics)), "")])
    return rows


CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1100px;padding:0 1em;color:#222;line-height:1.4}
h1{border-bottom:2px solid #1f77b4;padding-bottom:.2em}
h2{margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:.88em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th:first-child,td:first-child{text-align:left}
thead th{background:#f0f4f8}
caption{caption-side:top;text-align:left;font-weight:600;padding:.3em 0}
td.best{font-weight:700;background:#e6f2e6}
td.pos{color:#1a7f37}td.neg{color:#b42318}
table.details th{background:#f7f7f7;font-weight:600}table.details td{text-align:left}
figure{margin:1em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.85em;color:#555}
dl dt{font-weight:600;font-family:monospace}dl dd{margin:0 0 .6em 1.5em}
.note{font-size:.88em;color:#555}nav a{margin-right:1em}.scroll{overflow-x:auto}
"""

SKILL_NOTE = (
    f"SS: skill score 1 {MINUS} s_model / s_ref for lower-is-better scores (1 perfect, 0 no "
    f"better than the reference, negative worse). Δ: difference s_model {MINUS} s_ref for "
    f"higher-is-better scores (positive better). {UNDEFINED}: undefined."
)
SUMMARY_NOTE = (
    "Mean over lead times. ↑ higher is better, ↓ lower is better; the best value per row is "
    "highlighted (bold)."
)


def write_report(
    out_dir: str | Path,
    metrics: dict,
    samples: list[dict] | None = None,
    *,
    title: str = "stforecast evaluation",
    details: dict[str, str] | None = None,
) -> dict[str, Path]:
    """Write `out_dir/report.html`, `out_dir/report.md` and `out_dir/figures/*.png`.

    Returns `{"html": Path, "markdown": Path, "figures": [Path, ...]}`. Every file is replaced
    atomically; figures of an older report in `out_dir/figures` that this one does not produce
    (`score_*.png`, `sample_*.png`) are removed.
    """
    out_dir = Path(out_dir)
    fig_dir = out_dir / "figures"
    _check(metrics)
    methods = _methods(metrics)
    units = _units(metrics)

    # Figures: (file name, alt text, caption, png bytes).
    figures: list[tuple[str, str, str, bytes]] = []
    for key in _figure_keys(metrics):
        name = _slug(f"score_{key}") + ".png"
        label = _label(key, units) + (
            ", all scales" if key.startswith("fss_") and _split_fss(key) is None else ""
        )
        drawn = [m for m in methods if any(k in methods[m] for k, _s in _group_keys(metrics, key))]
        alt = f"Figure {len(figures) + 1}: {label} against lead time, " + " vs ".join(drawn)
        caption = _protocol_text(metrics, key)
        figures.append((name, alt, caption, _png(score_figure(metrics, key))))
    n_score_figures = len(figures)
    for i, sample in enumerate(samples or [], start=1):
        name = f"sample_{i:02d}.png"
        sample_title = str(sample.get("title") or f"sample {i}")
        alt = f"Figure {len(figures) + 1}: sample panel {i}, {sample_title}"
        shown = list(sample.get("forecasts") or {})
        caption = f"Rows: last inputs, truth, forecasts ({', '.join(shown) or 'none'})"
        if "model" in shown:
            caption += f", model error (forecast {MINUS} truth)"
        caption += ". Grey: no data."
        figures.append((name, alt, caption, _png(sample_figure(sample))))

    # Tables.
    details_table = _Table(["", ""], _details_rows(details, metrics), css="details", numeric=False)
    summary = _summary_table(metrics)
    skills = [
        (ref, table)
        for ref in ("persistence", "extrapolation")
        if (table := _skill_table_render(metrics, ref)) is not None
    ]
    protocol = metrics.get("protocol") if isinstance(metrics.get("protocol"), Mapping) else {}

    # HTML.
    h: list[str] = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        '<nav><a href="#details">Details</a><a href="#summary">Summary</a>'
        '<a href="#skill">Skill</a><a href="#scores">Scores</a><a href="#samples">Samples</a>'
        '<a href="#protocol">Protocol</a></nav>',
        '<h2 id="details">Details</h2>',
        details_table.html(),
        '<h2 id="summary">Summary</h2>',
    ]
    md: list[str] = [
        f"# {title}",
        "",
        "## Details",
        "",
        details_table.markdown(),
        "",
        "## Summary",
        "",
    ]
    if summary is not None:
        h += [f'<p class="note">{html.escape(SUMMARY_NOTE)}</p>', summary.html()]
        md += [SUMMARY_NOTE, "", summary.markdown(), ""]
    else:
        h.append('<p class="note">No scores.</p>')
        md += ["No scores.", ""]

    h.append('<h2 id="skill">Skill of the model against the baselines</h2>')
    md += ["## Skill of the model against the baselines", ""]
    if skills:
        h.append(f'<p class="note">{html.escape(SKILL_NOTE)}</p>')
        md += [SKILL_NOTE, ""]
        for ref, table in skills:
            h.append(table.html(caption=f"Skill against {ref}, per lead time"))
            md += [f"### Against {ref}", "", table.markdown(), ""]
    else:
        note = "No baseline scores to compare the model with."
        h.append(f'<p class="note">{note}</p>')
        md += [note, ""]

    def figure_html(name: str, alt: str, caption: str, png: bytes) -> str:
        data = base64.b64encode(png).decode("ascii")
        cap = f"<figcaption>{html.escape(alt)}{'. ' + html.escape(caption) if caption else ''}"
        return (
            f'<figure id="{html.escape(name[:-4])}"><img src="data:image/png;base64,{data}" '
            f'alt="{html.escape(alt, quote=True)}">{cap}</figcaption></figure>'
        )

    def figure_md(name: str, alt: str, caption: str) -> list[str]:
        clean_alt = alt.replace("[", "(").replace("]", ")")
        lines = [f"![{clean_alt}](figures/{name})", ""]
        if caption:
            lines += [f"*{caption}*", ""]
        return lines

    h.append('<h2 id="scores">Scores against lead time</h2>')
    md += ["## Scores against lead time", ""]
    for name, alt, caption, png in figures[:n_score_figures]:
        h.append(figure_html(name, alt, caption, png))
        md += figure_md(name, alt, caption)
    h.append('<h2 id="samples">Samples</h2>')
    md += ["## Samples", ""]
    if n_score_figures == len(figures):
        h.append('<p class="note">No samples.</p>')
        md += ["No samples.", ""]
    for name, alt, caption, png in figures[n_score_figures:]:
        h.append(figure_html(name, alt, caption, png))
        md += figure_md(name, alt, caption)

    h.append('<h2 id="protocol">Protocol</h2>')
    md += ["## Protocol", ""]
    if protocol:
        h.append("<dl>")
        for key, text in protocol.items():
            h.append(f"<dt>{html.escape(str(key))}</dt><dd>{html.escape(str(text))}</dd>")
            md.append(f"- `{key}`: {text}")
        h.append("</dl>")
        md.append("")
    else:
        h.append('<p class="note">metrics.json has no protocol.</p>')
        md += ["metrics.json has no protocol.", ""]
    h.append("</body></html>")

    # Files: figures first, then the documents that reference them.
    figure_paths = []
    for name, _alt, _caption, png in figures:
        path = fig_dir / name
        atomic_write_bytes(path, png)
        figure_paths.append(path)
    md_path = out_dir / "report.md"
    html_path = out_dir / "report.html"
    atomic_write_bytes(md_path, ("\n".join(md).rstrip() + "\n").encode("utf-8"))
    atomic_write_bytes(html_path, ("\n".join(h) + "\n").encode("utf-8"))
    _remove_stale_figures(fig_dir, {p.name for p in figure_paths})
    return {"html": html_path, "markdown": md_path, "figures": figure_paths}


def _remove_stale_figures(fig_dir: Path, keep: Iterable[str]) -> None:
    keep = set(keep)
    if not fig_dir.is_dir():
        return
    for pattern in ("score_*.png", "sample_*.png"):
        for path in fig_dir.glob(pattern):
            if path.name not in keep:
                with contextlib.suppress(OSError):
                    path.unlink()
