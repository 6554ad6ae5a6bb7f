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
against extrapolation per lead time (`evaluation.skill`), one figure per score family against lead
time (MSE, MAE, RMSE, SSIM, PSNR, CSI at each threshold, FSS at each threshold with one line style
per neighbourhood scale), the sample panels (inputs, truth, forecasts, model error), and the
protocol (`evaluation.figures` draws them).
"""

from __future__ import annotations

import base64
import contextlib
import html
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
    is_series,
    key_order,
    leads_of,
    methods_of,
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
from stforecast.evaluation.skill import skill_keys, skill_table
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
        row = [(key + arrow, "")]
        for v in row_values:
            row.append((_fmt(v), "best" if best is not None and v == best else ""))
        rows.append(row)
    return _Table(["metric", *methods], rows)


def _skill_table_render(metrics: Mapping[str, Any], reference: str) -> _Table | None:
    keys = skill_keys(metrics, reference)
    if not keys:
        return None
    columns = {k: skill_table(dict(metrics), k, reference) for k in keys}
    header = ["lead [min]"] + [f"{k} ({'SS' if direction(k) == -1 else 'Δ'})" for k in keys]
    rows = []
    for i, lead in enumerate(leads_of(metrics)):
        row = [(f"+{lead}", "")]
        for k in keys:
            v = columns[k][i][1]
            css = "" if math.isnan(v) or v == 0 else ("pos" if v > 0 else "neg")
            row.append((UNDEFINED if math.isnan(v) else f"{v:+.3f}", css))
        rows.append(row)
    return _Table(header, rows)


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
    leads = leads_of(metrics)
    rows.append([("lead times [min]", ""), (", ".join(str(v) for v in leads), "")])
    rows.append([("methods", ""), (", ".join(methods_of(metrics)), "")])
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


# ------------------------------------------------------------------------------ the page


class _Page:
    """The report as it is written: the HTML and the Markdown side by side, part by part."""

    def __init__(self, title: str) -> None:
        self.html: list[str] = [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{html.escape(title)}</title>",
            f"<style>{CSS}</style></head><body>",
            f"<h1>{html.escape(title)}</h1>",
            '<nav><a href="#details">Details</a><a href="#summary">Summary</a>'
            '<a href="#skill">Skill</a><a href="#scores">Scores</a><a href="#samples">Samples</a>'
            '<a href="#protocol">Protocol</a></nav>',
        ]
        self.md: list[str] = [f"# {title}", ""]

    def section(self, anchor: str, heading: str) -> None:
        self.html.append(f'<h2 id="{anchor}">{heading}</h2>')
        self.md += [f"## {heading}", ""]

    def note(self, text: str) -> None:
        self.html.append(f'<p class="note">{html.escape(text)}</p>')
        self.md += [text, ""]

    def table(self, table: _Table, caption: str = "", heading: str = "") -> None:
        """A table; `caption` above it in HTML, `heading` (a level-3 one) in Markdown."""
        self.html.append(table.html(caption=caption))
        self.md += [f"### {heading}", ""] if heading else []
        self.md += [table.markdown(), ""]

    def figure(self, figure: _Figure) -> None:
        name, alt, caption, png = figure
        data = base64.b64encode(png).decode("ascii")
        cap = f"<figcaption>{html.escape(alt)}{'. ' + html.escape(caption) if caption else ''}"
        self.html.append(
            f'<figure id="{html.escape(name[:-4])}"><img src="data:image/png;base64,{data}" '
            f'alt="{html.escape(alt, quote=True)}">{cap}</figcaption></figure>'
        )
        clean_alt = alt.replace("[", "(").replace("]", ")")
        self.md += [f"![{clean_alt}](figures/{name})", ""]
        if caption:
            self.md += [f"*{caption}*", ""]

    def protocol(self, protocol: Mapping[str, Any]) -> None:
        self.html.append("<dl>")
        for key, text in protocol.items():
            self.html.append(f"<dt>{html.escape(str(key))}</dt><dd>{html.escape(str(text))}</dd>")
            self.md.append(f"- `{key}`: {text}")
        self.html.append("</dl>")
        self.md.append("")

    def end(self) -> tuple[bytes, bytes]:
        """The finished documents: (HTML, Markdown)."""
        self.html.append("</body></html>")
        return (
            ("\n".join(self.html) + "\n").encode("utf-8"),
            ("\n".join(self.md).rstrip() + "\n").encode("utf-8"),
        )


# A figure of the report: (file name, alt text, caption, png bytes).
_Figure = tuple[str, str, str, bytes]


def _score_figures(metrics: dict) -> list[_Figure]:
    """One figure per score family (and FSS threshold) against lead time."""
    methods = methods_of(metrics)
    units = units_of(metrics)
    figures: list[_Figure] = []
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


def _sample_figures(samples: list[dict], first: int) -> list[_Figure]:
    """The sample panels, numbered on from figure `first`."""
    figures: list[_Figure] = []
    for i, sample in enumerate(samples, start=1):
        name = f"sample_{i:02d}.png"
        sample_title = str(sample.get("title") or f"sample {i}")
        alt = f"Figure {first + i - 1}: sample panel {i}, {sample_title}"
        shown = list(sample.get("forecasts") or {})
        caption = f"Rows: last inputs, truth, forecasts ({', '.join(shown) or 'none'})"
        if "model" in shown:
            caption += f", model error (forecast {MINUS} truth)"
        caption += ". Grey: no data."
        figures.append((name, alt, caption, png_bytes(sample_figure(sample))))
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
    (`score_*.png`, `sample_*.png`) are removed.
    """
    out_dir = Path(out_dir)
    fig_dir = out_dir / "figures"
    check(metrics)
    scores = _score_figures(metrics)
    panels = _sample_figures(samples or [], first=len(scores) + 1)
    page = _Page(title)
    page.section("details", "Details")
    page.table(_Table(["", ""], _details_rows(details, metrics), css="details", numeric=False))
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


def _summary(page: _Page, metrics: Mapping[str, Any]) -> None:
    page.section("summary", "Summary")
    summary = _summary_table(metrics)
    if summary is None:
        page.note("No scores.")
        return
    page.note(SUMMARY_NOTE)
    page.table(summary)


def _skill(page: _Page, metrics: Mapping[str, Any]) -> None:
    page.section("skill", "Skill of the model against the baselines")
    skills = [
        (ref, table)
        for ref in ("persistence", "extrapolation")
        if (table := _skill_table_render(metrics, ref)) is not None
    ]
    if not skills:
        page.note("No baseline scores to compare the model with.")
        return
    page.note(SKILL_NOTE)
    for ref, table in skills:
        page.table(table, caption=f"Skill against {ref}, per lead time", heading=f"Against {ref}")


def _remove_stale_figures(fig_dir: Path, keep: Iterable[str]) -> None:
    keep = set(keep)
    if not fig_dir.is_dir():
        return
    for pattern in ("score_*.png", "sample_*.png"):
        for path in fig_dir.glob(pattern):
            if path.name not in keep:
                with contextlib.suppress(OSError):
                    path.unlink()
