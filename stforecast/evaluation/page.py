"""The report's page, written to HTML and Markdown side by side: headings, notes, tables and
figures (`Page`), tables whose cells carry a CSS class (`Table`); one inline style sheet, every
figure embedded in the HTML as a base64 PNG and linked from the Markdown as `figures/NAME`.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping
from typing import Any

__all__ = ["CSS", "Figure", "Page", "Table"]

# A figure of the report: (file name, alt text, caption, png bytes).
Figure = tuple[str, str, str, bytes]

NAV = (
    ("verdict", "Verdict"),
    ("details", "Details"),
    ("summary", "Summary"),
    ("skill", "Skill"),
    ("scores", "Scores"),
    ("samples", "Samples"),
    ("protocol", "Protocol"),
)


class Table:
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
.note{font-size:.88em;color:#555}ul.verdict{font-size:1.05em;padding-left:1.2em}
ul.verdict li{margin:.3em 0}nav a{margin-right:1em}.scroll{overflow-x:auto}
"""


class Page:
    """The report as it is written: the HTML and the Markdown side by side, part by part."""

    def __init__(self, title: str) -> None:
        self.html: list[str] = [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{html.escape(title)}</title>",
            f"<style>{CSS}</style></head><body>",
            f"<h1>{html.escape(title)}</h1>",
            "<nav>" + "".join(f'<a href="#{a}">{h}</a>' for a, h in NAV) + "</nav>",
        ]
        self.md: list[str] = [f"# {title}", ""]

    def section(self, anchor: str, heading: str) -> None:
        self.html.append(f'<h2 id="{anchor}">{heading}</h2>')
        self.md += [f"## {heading}", ""]

    def note(self, text: str) -> None:
        self.html.append(f'<p class="note">{html.escape(text)}</p>')
        self.md += [text, ""]

    def table(self, table: Table, caption: str = "", heading: str = "") -> None:
        """A table; `caption` above it in HTML, `heading` (a level-3 one) in Markdown."""
        self.html.append(table.html(caption=caption))
        self.md += [f"### {heading}", ""] if heading else []
        self.md += [table.markdown(), ""]

    def figure(self, figure: Figure) -> None:
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

    def verdict(self, sentences: list[tuple[str, str]]) -> None:
        """The verdict: one sentence per baseline, `(baseline, sentence)`."""
        self.html.append('<ul class="verdict">')
        for reference, sentence in sentences:
            self.html.append(
                f"<li><b>Against {html.escape(reference)}:</b> {html.escape(sentence)}</li>"
            )
            self.md.append(f"- **Against {reference}:** {sentence}")
        self.html.append("</ul>")
        self.md.append("")

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
