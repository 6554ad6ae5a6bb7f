"""The metrics document, `metrics.json` (architecture.md contract): written once from the
scores (`metrics_document`), read back by the report, the skill tables and the command line's
summary table, so that the format lives in one place.

Reading is forgiving where the report can be and precise where it cannot: a list not aligned
with `lead_minutes` is a `ConfigError` that names it; None, NaN or a non-number is an
undefined score (NaN).
"""

from __future__ import annotations

import datetime as dt
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stforecast import __version__
from stforecast.errors import ConfigError
from stforecast.viz.palette import unit_label

if TYPE_CHECKING:
    from stforecast.evaluation.metrics import Scores

FORMAT = "stforecast-metrics"
VERSION = 1
METHOD = "model"  # the trained model's entry among the methods

# Direction of each score family (the part of the key before the first "_").
HIGHER_IS_BETTER = frozenset({"csi", "pod", "ets", "fss", "ssim", "psnr", "hss", "acc"})
LOWER_IS_BETTER = frozenset({"mse", "mae", "rmse", "far", "lpips", "crps"})
CATEGORICAL = ("csi", "pod", "far", "ets")
CONTINUOUS_ORDER = ("mse", "mae", "rmse", "ssim", "psnr")
BASELINE_ORDER = (METHOD, "persistence", "extrapolation")
# Categorical scores that get no figure and no skill column (they stay in the summary table and
# metrics.json).
NO_FIGURE = frozenset({"pod", "far", "ets"})

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


# ------------------------------------------------------------------------------ writing


def _clean(values: list[float]) -> list[float | None]:
    return [None if not math.isfinite(v) else float(v) for v in values]


def lead_times(step: float | None, leads: int) -> list[float]:
    """Lead times in minutes for a time step in seconds; frames counted from 1 without one
    (Moving MNIST)."""
    minutes = [k * step / 60 for k in range(1, leads + 1)] if step else list(range(1, leads + 1))
    return [int(v) if float(v).is_integer() else v for v in minutes]


PYSTEPS_PROTOCOL = {
    "pysteps_extrapolation": "pysteps: dense Lucas-Kanade motion on the last 4 frames in dB "
    "(10 log10 R, R < 0.1 mm/h as -15 dB) and semi-Lagrangian extrapolation of the last frame",
    "sprog": "pysteps S-PROG (Seed 2003): 6-level FFT cascade of the last 3 frames in dB, AR(2) "
    "per level along the Lucas-Kanade motion, back to mm/h (below 0.1 mm/h: 0)",
    "steps_mean": "mean rain rate of a 12-member pysteps STEPS ensemble (seed 24, no velocity "
    "perturbation, observed-rain mask), same cascade and motion as sprog",
}


def metrics_document(
    run: Any,
    scores: dict[str, Scores],
    *,
    lead_minutes: list[float],
    cases: int,
    data: dict[str, Any],
    data_range: float,
    clip: Any,
    skipped: list[dict[str, str]],
    base: str | Path | None = None,
) -> dict[str, Any]:
    """`metrics.json` (architecture.md contract): lists aligned with `lead_minutes`. `base`
    (the directory metrics.json and the report go to) writes absolute paths relative to it."""
    methods = {}
    protocol: dict[str, str] = {}
    for name, s in scores.items():
        result = {k: _clean(v) for k, v in s.result().items()}
        summary = {k: (v if math.isfinite(v) else None) for k, v in s.summary().items()}
        methods[name] = {**result, "summary": summary}
        protocol.update(s.protocol())
    contract = run.contract
    protocol.update(
        {
            "values": f"de-normalised to data units ({contract.units}); forecasts "
            f"clipped to {list(clip)} before scoring",
            "exclusions": "pixels missing or without radar coverage in the truth, and pixels "
            "where a forecast is missing, are left out of every score",
            "data_range": f"{data_range:g}, the observed value range of the scored truth, "
            "unless [evaluate] data_range sets it",
            "summary": "mean over lead times of each list, ignoring undefined values",
            "channels": "multi-channel runs are scored on their first channel",
            "persistence": "the last observed frame repeated",
            "extrapolation": "optical flow (scikit-image ILK on the last frames) and "
            "semi-Lagrangian backward advection of the last frame",
        }
    )
    protocol.update({k: v for k, v in PYSTEPS_PROTOCOL.items() if k in scores})
    from stforecast.rundir.load import loaded_weights

    card = run.card
    weights = loaded_weights(card)
    doc = {
        "format": FORMAT,
        "version": VERSION,
        "lead_minutes": lead_minutes,
        "units": contract.units,
        "variable": contract.selection,
        "methods": methods,
        "protocol": protocol,
        "cases": cases,
        "frames_per_lead": list(scores[METHOD].frames),
        "skipped": skipped,
        "data": data,
        "grid": grid_entry(contract, test_split=data.get("mode") == "test split"),
        "model": {
            "run": str(run.path) if run.path else None,
            "architecture": card["architecture"].get("name"),
            "parameters": card["architecture"].get("parameters"),
            "weights_sha256": weights["sha256"],
            "weights": weights["label"],
        },
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "software": f"stforecast {__version__}",
    }
    return portable_paths(doc, base) if base is not None else doc


def grid_entry(contract: Any, *, test_split: bool) -> dict[str, Any]:
    """The scored grid: `shape` and `spacing_metres` (the model's `data.spacing`, else the
    cell size of a projected grid, else `pixel_size`; null where unknown, e.g. Moving MNIST),
    and for the test split (the store's own grid) its `crs_wkt` and first and last cell
    centres `x`, `y`, which place the report's sample panels on a map."""
    from stforecast.io.crs import crs_unit_factor

    grid, processing = contract.grid, contract.processing
    spacing = processing.spacing if processing is not None else None
    known = grid.x is not None and grid.y is not None and grid.shape[1] > 1
    if spacing is None and known and grid.crs_wkt:
        try:
            factor = crs_unit_factor(grid.crs_wkt)
        except Exception:  # an unreadable CRS: no spacing from it
            factor = None
        if factor:
            spacing = abs(grid.x[1] - grid.x[0]) / (grid.shape[1] - 1) * factor
    if spacing is None and processing is not None and processing.pixel_size:
        spacing = processing.pixel_size
    out: dict[str, Any] = {
        "shape": list(grid.shape),
        "spacing_metres": None if spacing is None else float(spacing),
    }
    if test_split and known and grid.crs_wkt:
        out.update(crs_wkt=grid.crs_wkt, x=list(grid.x), y=list(grid.y))
    return out


# An absolute POSIX path inside a text: "/" after a space, a quote or the start, two parts or more.
_ABSOLUTE = re.compile(r"(?<![\w/:.~-])/(?:[^\s/'\"`,;()\[\]{}<>|]+/)+[^\s/'\"`,;()\[\]{}<>|]*")


def portable_paths(value: Any, base: str | Path) -> Any:
    """`value` (the metrics document, a details table, any JSON-like value) with every
    absolute path, whole or inside a text, written relative to `base` (the report's
    directory), so that no path of the machine is left in metrics.json or the report. Paths
    given relative stay as given."""
    root = os.path.abspath(base)

    def rel(match: re.Match[str]) -> str:
        return os.path.relpath(match.group(0), root)

    if isinstance(value, str):
        if os.path.isabs(value) and "\n" not in value:
            return os.path.relpath(value, root)
        return _ABSOLUTE.sub(rel, value)
    if isinstance(value, Mapping):
        return {k: portable_paths(v, base) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [portable_paths(v, base) for v in value]
    return value


def paper_table(doc: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """Rows `(method, MSE per frame, MAE per frame, SSIM)` averaged over lead times, as the
    papers' Moving MNIST tables report them."""
    rows = []
    for name, m in doc["methods"].items():
        s = m["summary"]
        rows.append(
            (name, *(f"{s[k]:.1f}" if s.get(k) is not None else "-" for k in ("mse", "mae")),
             f"{s['ssim']:.3f}" if s.get("ssim") is not None else "-")
        )  # fmt: skip
    return rows


# ------------------------------------------------------------------------------ score keys


def family(key: str) -> str:
    """`"fss_1.0_4"` -> `"fss"`: the score a key belongs to."""
    return key.split("_", 1)[0]


def direction(key: str) -> int | None:
    """+1 higher is better, -1 lower is better, None unknown."""
    kind = family(key)
    if kind in HIGHER_IS_BETTER:
        return 1
    if kind in LOWER_IS_BETTER:
        return -1
    return None


def split_fss(key: str) -> tuple[str, str] | None:
    """`"fss_1.0_4"` -> `("1.0", "4")` (threshold, scale); None for any other key."""
    m = re.fullmatch(r"fss_([^_]+)_([^_]+)", key)
    return (m.group(1), m.group(2)) if m else None


def sort_number(text: str) -> tuple[float, str]:
    """Sort key of a threshold or scale written as text: by value, non-numbers last."""
    try:
        return (float(text), text)
    except ValueError:
        return (math.inf, text)


def key_order(key: str) -> tuple:
    """Sort metric keys: continuous scores in a fixed order, then categorical, FSS, the rest."""
    kind = family(key)
    rest = key[len(kind) + 1 :]
    if kind in CONTINUOUS_ORDER:
        return (0, CONTINUOUS_ORDER.index(kind), 0, rest, 0.0, "")
    if kind in CATEGORICAL:
        return (1, CATEGORICAL.index(kind), *sort_number(rest), 0.0, "")
    fss = split_fss(key)
    if fss is not None:
        return (2, 0, *sort_number(fss[0]), *sort_number(fss[1]))
    return (3, 0, 0.0, key, 0.0, "")


def threshold_text(text: str) -> str:
    """A threshold as written in a key (`"1.0"`) as a reader writes it (`"1"`)."""
    try:
        return f"{float(text):g}"
    except ValueError:
        return text


def _with_unit(value: str, units: str) -> str:
    shown = unit_label(units)
    return f"{value} {shown}" if shown else value


def score_label(
    key: str, units: str = "", *, axis: bool = False, spacing_km: float | None = None
) -> str:
    """Readable name of a score key: thresholds with their unit (`CSI ≥ 1 mm/h`), FSS scales in
    pixels and, with the grid spacing, km (`FSS ≥ 1 mm/h, 8 px (16 km)`); the score's unit on an
    axis label (`MAE per pixel [mm/h]`)."""
    kind = family(key)
    name = LABELS.get(kind, key)
    rest = key[len(kind) + 1 :]
    fss = split_fss(key)
    if fss is not None:
        text = (
            f"FSS ≥ {_with_unit(threshold_text(fss[0]), units)}, {scale_text(fss[1], spacing_km)}"
        )
    elif kind in CATEGORICAL and rest:
        text = f"{name} ≥ {_with_unit(threshold_text(rest), units)}"
    elif kind == "fss" and rest:
        text = f"FSS ≥ {_with_unit(threshold_text(rest), units)}"
    elif rest == "pixel":
        text = f"{name} per pixel"
    elif kind in ("mse", "mae") and not rest:
        text = f"{name} per frame"
    elif key in LABELS:
        text = name
    else:
        text = key
    if axis:
        shown = unit_label(units)
        squared = f"({shown})²" if (" " in shown or "/" in shown) else f"{shown}²"
        unit = {"mse": squared if shown else "", "mae": shown, "rmse": shown, "psnr": "dB"}
        if unit.get(kind):
            text += f" [{unit[kind]}]"
    return text


def scale_text(scale: str, spacing_km: float | None) -> str:
    """An FSS neighbourhood: `8 px`, or `8 px (16 km)` with the grid spacing."""
    text = f"{scale} px"
    size = sort_number(scale)[0]
    if spacing_km and math.isfinite(size):
        text += f" ({size * spacing_km:.3g} km)"
    return text


def verdict_label(key: str, units: str, spacing_km: float | None) -> str:
    """A score as a verdict names it: `MSE`, `CSI ≥1 mm/h`, `FSS ≥1 mm/h at 16 km`."""
    kind = family(key)
    rest = key[len(kind) + 1 :]
    fss = split_fss(key)
    if fss is not None:
        size = sort_number(fss[1])[0]
        where = f"{size * spacing_km:.3g} km" if spacing_km else f"{fss[1]} px"
        return f"FSS ≥{_with_unit(threshold_text(fss[0]), units)} at {where}"
    if kind in CATEGORICAL and rest:
        return f"{LABELS[kind]} ≥{_with_unit(threshold_text(rest), units)}"
    return LABELS.get(kind, key)


def grid_spacing_km(metrics: Mapping[str, Any]) -> float | None:
    """The scored grid's spacing in km (`grid.spacing_metres`), None where unknown."""
    grid = metrics.get("grid")
    spacing = grid.get("spacing_metres") if isinstance(grid, Mapping) else None
    value = as_number(spacing)
    return value / 1000.0 if value > 0 else None


# ------------------------------------------------------------------------------ reading


def as_number(value: Any) -> float:
    """A score as a float, NaN for None / NaN / non-numbers."""
    if value is None or isinstance(value, bool):
        return math.nan
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out if math.isfinite(out) else math.nan


def as_lead(value: Any) -> Any:
    """A lead time as written: `10` rather than `10.0`."""
    f = float(value)
    return int(f) if f.is_integer() else f


def leads_of(metrics: Mapping[str, Any]) -> list[Any]:
    """The document's lead times (a `ConfigError` unless a non-empty list of numbers)."""
    leads = metrics.get("lead_minutes")
    if not isinstance(leads, Sequence) or isinstance(leads, str) or not leads:
        raise ConfigError("metrics: 'lead_minutes' must be a non-empty list of lead times")
    try:
        return [as_lead(v) for v in leads]
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"metrics: 'lead_minutes' must hold numbers, got {leads!r}") from exc


def methods_of(metrics: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """Methods in display order: model, persistence, extrapolation, then any others."""
    methods = metrics.get("methods")
    if not isinstance(methods, Mapping):
        raise ConfigError("metrics: 'methods' must be a mapping of method name to scores")
    names = [m for m in BASELINE_ORDER if m in methods]
    names += [m for m in methods if m not in BASELINE_ORDER]
    return {name: methods[name] for name in names if isinstance(methods[name], Mapping)}


def units_of(metrics: Mapping[str, Any]) -> str:
    """The data units, "" where the document has none."""
    units = metrics.get("units")
    return str(units) if units else ""


def check(metrics: Mapping[str, Any]) -> None:
    """Every list of scores is aligned with lead_minutes (a ConfigError naming it otherwise)."""
    n = len(leads_of(metrics))
    for method, scores in methods_of(metrics).items():
        for key, values in scores.items():
            if isinstance(values, (list, tuple)) and len(values) != n:
                raise ConfigError(
                    f"metrics: methods.{method}.{key} has {len(values)} values, must be a list "
                    f"aligned with lead_minutes ({n} values)"
                )


def is_series(values: Any, n: int) -> bool:
    """Whether `values` is a per-lead list for `n` lead times."""
    return isinstance(values, Sequence) and not isinstance(values, str) and len(values) == n


def series(metrics: Mapping[str, Any], method: str, key: str) -> np.ndarray | None:
    """Per-lead values of `key` for `method` as floats (NaN where undefined), or None if absent."""
    scores = methods_of(metrics).get(method)
    if scores is None or key not in scores:
        return None
    values = scores[key]
    n = len(leads_of(metrics))
    if not is_series(values, n):
        raise ConfigError(
            f"metrics: methods.{method}.{key} must be a list aligned with lead_minutes ({n} values)"
        )
    return np.array([as_number(v) for v in values], dtype=float)


def series_keys(metrics: Mapping[str, Any]) -> list[str]:
    """Every per-lead score key of any method, sorted."""
    n = len(leads_of(metrics))
    keys: set[str] = set()
    for scores in methods_of(metrics).values():
        keys.update(k for k, v in scores.items() if k != "summary" and is_series(v, n))
    return sorted(keys, key=key_order)


def protocol_text(metrics: Mapping[str, Any], key: str) -> str:
    """How `key` was computed, from the document's protocol ("" where it says nothing)."""
    protocol = metrics.get("protocol")
    if not isinstance(protocol, Mapping):
        return ""
    for candidate in (key, family(key)):
        if candidate in protocol:
            return str(protocol[candidate])
    # A group figure ("fss_1.0"): the description of its first scale ("fss_1.0_1").
    group = sorted((k for k in protocol if str(k).startswith(key + "_")), key=key_order)
    return str(protocol[group[0]]) if group else ""
