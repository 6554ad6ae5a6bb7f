"""The evaluation report: `report.html` (self-contained) and `report.md` with figures.

`write_report(out_dir, metrics, samples)` renders the `metrics.json` dict (see
`docs/architecture.md`) and a few sample forecasts into

- `out_dir/report.html`: one file, inline CSS, every figure embedded as a base64 PNG, no scripts and
  no links except in-page anchors, so it can be mailed or archived as is;
- `out_dir/report.md` with its figures as `out_dir/figures/*.png` (relative links).

Every file is written atomically (a temporary file beside it, then `os.replace`), so a reader never
sees a half-written report and an older report in `out_dir` is replaced as a whole. No absolute
path of the machine is written: paths are made relative to `out_dir` (`portable_paths`).

Content: title; the verdict, one sentence per baseline on where the model beats it, at which
leads and by which score (`evaluation.skill.verdict`); details (model run, data, grid, ... as
plain rows); a summary table of every method's `summary` (best value per row marked); the skill
of the model against each baseline, scores as rows and lead times as columns (at most 12 a
table); one figure per score family against lead time (MSE, MAE, RMSE, SSIM, PSNR, CSI at each
threshold, FSS at each threshold with one line style per neighbourhood scale), the sample panels
(inputs, truth, forecasts, model error, on a map where the grid is known), and the protocol
(`evaluation.figures` draws them). Thresholds carry the data's unit and FSS scales their size in
km where metrics.json gives the grid spacing.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from stforecast.evaluation.document import (
    as_number,
    check,
    direction,
    grid_spacing_km,
    is_series,
    key_order,
    leads_of,
    methods_of,
    portable_paths,
    protocol_text,
    score_label,
    split_fss,
    units_of,
)
from stforecast.evaluation.figures import (
    MINUS,
    figure_keys,
    group_keys,
    png_bytes,
    sample_figure,
    score_figure,
)
from stforecast.evaluation.page import Figure, Page, Table
from stforecast.evaluation.skill import skill_keys, skill_table, verdict
from stforecast.io.atomic import atomic_write_bytes

__all__ = ["UNDEFINED", "write_report"]

UNDEFINED = "\u2013"  # en dash: an undefined value in a table


def _fmt(value: Any) -> str:
    v = as_number(value)
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
        if key != "summary" and is_series(values, n):
            arr = np.array([as_number(v) for v in values])
            out[key] = float(np.mean(arr[~np.isnan(arr)])) if (~np.isnan(arr)).any() else math.nan
    if isinstance(summary, Mapping):
        for key, value in summary.items():
            if not isinstance(value, (Mapping, list, str)):
                out[key] = as_number(value)
    return out


def _label(key: str, metrics: Mapping[str, Any]) -> str:
    """A row's name: the score with its units and, for FSS, its scale in km."""
    units, spacing = units_of(metrics), grid_spacing_km(metrics)
    return score_label(key, units, axis=True, spacing_km=spacing)


def _summary_table(metrics: Mapping[str, Any]) -> Table | None:
    methods = methods_of(metrics)
    n = len(leads_of(metrics))
    values = {m: _summary_values(s, n) for m, s in methods.items()}
    keys = sorted({k for v in values.values() for k in v}, key=key_order)
    if not keys:
        return None
    rows = []
    for key in keys:
        sign = direction(key)
        row_values = [values[m].get(key, math.nan) for m in methods]
        finite = [v for v in row_values if not math.isnan(v)]
        best = None
        if sign is not None and len(finite) > 1:
            best = max(finite) if sign > 0 else min(finite)
        arrow = {1: " ↑", -1: " ↓"}.get(sign, "") if sign else ""
        row = [(_label(key, metrics) + arrow, "")]
        for v in row_values:
            row.append((_fmt(v), "best" if best is not None and v == best else ""))
        rows.append(row)
    return Table(["score", *methods], rows)


MAX_LEAD_COLUMNS = 12  # lead columns of one skill table; more leads continue in another


def _skill_tables(metrics: Mapping[str, Any], reference: str) -> list[Table]:
    """The model's skill against `reference`: one row per score, one column per lead time,
    in tables of at most MAX_LEAD_COLUMNS leads, so that a 4-hour evaluation fits the page."""
    keys = skill_keys(metrics, reference)
    if not keys:
        return []
    leads = leads_of(metrics)
    columns = {k: [v for _lead, v in skill_table(dict(metrics), k, reference)] for k in keys}
    tables = []
    for start in range(0, len(leads), MAX_LEAD_COLUMNS):
        part = range(start, min(start + MAX_LEAD_COLUMNS, len(leads)))
        rows = []
        for key in keys:
            kind = "SS" if direction(key) == -1 else "Δ"
            row = [(f"{_label(key, metrics)} ({kind})", "")]
            for i in part:
                v = columns[key][i]
                css = "" if math.isnan(v) or v == 0 else ("pos" if v > 0 else "neg")
                row.append((UNDEFINED if math.isnan(v) else f"{v:+.3f}", css))
            rows.append(row)
        tables.append(Table(["score", *(f"+{leads[i]}" for i in part)], rows))
    return tables


def _plain(value: Any) -> str:
    """A value of metrics.json or of the details as plain text, not JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return ", ".join(_plain(v) for v in value) if value else "none"
    if isinstance(value, Mapping):
        return "; ".join(f"{k} {_plain(v)}" for k, v in value.items())
    return str(value)


def _decoded(value: Any) -> Any:
    """A details value that is a JSON object or list written as text, decoded."""
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _rows(name: str, value: Any) -> list[list[tuple[str, str]]]:
    """Rows of one entry: a mapping becomes one row per field (`data mode`, `data sources`)."""
    value = _decoded(value)
    if isinstance(value, Mapping) and value:
        out = []
        for key, sub in value.items():
            if key == "crs_wkt":
                sub = "given (WKT)" if sub else "none"
            elif key == "shape" and isinstance(sub, list):
                sub = " \u00d7 ".join(str(v) for v in sub)
            out.append([(f"{name} {key}", ""), (_plain(sub), "")])
        return out
    if name == "frames_per_lead" and isinstance(value, list) and len(set(value)) == 1:
        return [[(name, ""), (f"{value[0]} at every lead", "")]]
    if name == "skipped" and isinstance(value, list):
        reasons = [f"{v.get('reference_time')}: {v.get('reason')}" for v in value[:5]]
        more = f" (and {len(value) - 5} more)" if len(value) > 5 else ""
        text = f"{len(value)}" + (": " + "; ".join(reasons) + more if reasons else "")
        return [[(name, ""), (text, "")]]
    return [[(name, ""), (_plain(value), "")]]


def _details_rows(details: Mapping[str, Any] | None, metrics: Mapping[str, Any]) -> list[list]:
    rows = [row for k, v in (details or {}).items() for row in _rows(str(k), v)]
    known = {"lead_minutes", "methods", "protocol", "format", "version"}
    for key, value in metrics.items():
        if key in known or (details and key in details):
            continue
        named = {row[0][0] for row in rows}
        rows += [row for row in _rows(str(key), value) if row[0][0] not in named]
    leads = leads_of(metrics)
    rows.append([("lead times [min]", ""), (", ".join(str(v) for v in leads), "")])
    rows.append([("methods", ""), (", ".join(methods_of(metrics)), "")])
    return rows


SKILL_NOTE = (
    f"SS: skill score 1 {MINUS} s_model / s_ref for lower-is-better scores (1 perfect, 0 no "
    f"better than the reference, negative worse). Δ: difference s_model {MINUS} s_ref for "
    f"higher-is-better scores (positive better). {UNDEFINED}: undefined."
)
VERDICT_NOTE = (
    "Beats: a better score than the baseline at that lead time, by a skill of at least 0.005 "
    "(the skill tables below); closer is a draw. The scores named: MSE, MAE, CSI at each "
    "threshold, FSS at each threshold at the neighbourhood nearest 16 km."
)
SUMMARY_NOTE = (
    "Mean over lead times. ↑ higher is better, ↓ lower is better; the best value per row is "
    "highlighted (bold)."
)


def _score_figures(metrics: dict) -> list[Figure]:
    """One figure per score family (and FSS threshold) against lead time."""
    methods = methods_of(metrics)
    units = units_of(metrics)
    figures: list[Figure] = []
    for key in figure_keys(metrics):
        name = _slug(f"score_{key}") + ".png"
        label = score_label(key, units) + (
            ", all scales" if key.startswith("fss_") and split_fss(key) is None else ""
        )
        drawn = [m for m in methods if any(k in methods[m] for k, _s in group_keys(metrics, key))]
        alt = f"Figure {len(figures) + 1}: {label} against lead time, " + " vs ".join(drawn)
        caption = protocol_text(metrics, key)
        figures.append((name, alt, caption, png_bytes(score_figure(metrics, key))))
    return figures


def _sample_figures(samples: list[dict], metrics: Mapping[str, Any], first: int) -> list[Figure]:
    """The sample panels, numbered on from figure `first`, on the scored grid where
    metrics.json places it."""
    grid = metrics.get("grid") if isinstance(metrics.get("grid"), Mapping) else None
    figures: list[Figure] = []
    for i, sample in enumerate(samples, start=1):
        name = f"sample_{i:02d}.png"
        sample_title = str(sample.get("title") or f"sample {i}")
        alt = f"Figure {first + i - 1}: sample panel {i}, {sample_title}"
        shown = list(sample.get("forecasts") or {})
        caption = f"Rows: last inputs, truth, forecasts ({', '.join(shown) or 'none'})"
        if "model" in shown:
            caption += f", model error (forecast {MINUS} truth)"
        caption += ". Grey: no data."
        figure = sample_figure(sample, grid=sample.get("grid") or grid)
        figures.append((name, alt, caption, png_bytes(figure)))
    return figures


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
    (`score_*.png`, `sample_*.png`) are removed. Absolute paths in `metrics` and `details`
    are written relative to `out_dir`.
    """
    out_dir = Path(out_dir)
    fig_dir = out_dir / "figures"
    check(metrics)
    metrics = portable_paths(metrics, out_dir)
    details = portable_paths(dict(details or {}), out_dir)
    scores = _score_figures(metrics)
    panels = _sample_figures(samples or [], metrics, first=len(scores) + 1)
    page = Page(title)
    _verdict(page, metrics)
    page.section("details", "Details")
    page.table(Table(["", ""], _details_rows(details, metrics), css="details", numeric=False))
    _summary(page, metrics)
    _skill(page, metrics)
    page.section("scores", "Scores against lead time")
    for figure in scores:
        page.figure(figure)
    page.section("samples", "Samples")
    if not panels:
        page.note("No samples.")
    for figure in panels:
        page.figure(figure)
    page.section("protocol", "Protocol")
    protocol = metrics.get("protocol") if isinstance(metrics.get("protocol"), Mapping) else {}
    if protocol:
        page.protocol(protocol)
    else:
        page.note("metrics.json has no protocol.")
    html_bytes, md_bytes = page.end()

    # Files: figures first, then the documents that reference them.
    figure_paths = []
    for name, _alt, _caption, png in scores + panels:
        path = fig_dir / name
        atomic_write_bytes(path, png)
        figure_paths.append(path)
    md_path = out_dir / "report.md"
    html_path = out_dir / "report.html"
    atomic_write_bytes(md_path, md_bytes)
    atomic_write_bytes(html_path, html_bytes)
    _remove_stale_figures(fig_dir, {p.name for p in figure_paths})
    return {"html": html_path, "markdown": md_path, "figures": figure_paths}


def _summary(page: Page, metrics: Mapping[str, Any]) -> None:
    page.section("summary", "Summary")
    summary = _summary_table(metrics)
    if summary is None:
        page.note("No scores.")
        return
    page.note(SUMMARY_NOTE)
    page.table(summary)


def _baselines(metrics: Mapping[str, Any]) -> list[str]:
    return [m for m in methods_of(metrics) if m != "model"]


def _verdict(page: Page, metrics: Mapping[str, Any]) -> None:
    page.section("verdict", "Verdict")
    if "model" not in methods_of(metrics) or not _baselines(metrics):
        page.note("No baseline scores to compare the model with.")
        return
    page.verdict([(ref, verdict(metrics, ref)) for ref in _baselines(metrics)])
    page.note(VERDICT_NOTE)


def _skill(page: Page, metrics: Mapping[str, Any]) -> None:
    page.section("skill", "Skill of the model against the baselines")
    skills = [
        (ref, tables) for ref in _baselines(metrics) if (tables := _skill_tables(metrics, ref))
    ]
    if not skills:
        page.note("No baseline scores to compare the model with.")
        return
    page.note(SKILL_NOTE)
    for ref, tables in skills:
        for i, table in enumerate(tables):
            part = f" ({i + 1} of {len(tables)})" if len(tables) > 1 else ""
            page.table(
                table,
                caption=f"Skill against {ref} per lead time [min]{part}",
                heading=f"Against {ref}{part}",
            )


def _remove_stale_figures(fig_dir: Path, keep: Iterable[str]) -> None:
    keep = set(keep)
    if not fig_dir.is_dir():
        return
    for pattern in ("score_*.png", "sample_*.png"):
        for path in fig_dir.glob(pattern):
            if path.name not in keep:
                with contextlib.suppress(OSError):
                    path.unlink()
