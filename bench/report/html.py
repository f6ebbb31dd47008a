"""Self-contained HTML pages: one file with its style, its images (as data URIs) and a few lines of
script that sort a table by the column clicked. Nothing is fetched: a page opens from ``file://``,
offline, and prints. The run report, the study report and the results index are built from these."""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

#: Image types a page embeds, by file suffix.
MEDIA_TYPES = {".svg": "image/svg+xml", ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}

STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d1d1f; margin: 0 auto;
       max-width: 1180px; padding: 1.2em 1.6em 3em; }
h1 { font-size: 1.55em; margin: .2em 0 .4em; } h2 { font-size: 1.2em; margin: 1.8em 0 .5em;
     border-bottom: 1px solid #d8d8dc; padding-bottom: .2em; } h3 { font-size: 1.02em; margin: 1.2em 0 .3em; }
p.about, figcaption, .muted { color: #55555a; font-size: .9em; } td.muted { font-size: 1em; }
dl.headline { display: grid; grid-template-columns: max-content 1fr; gap: .15em 1.2em; margin: .6em 0; }
dl.headline dt { font-weight: 600; } dl.headline dd { margin: 0; }
.note { background: #fff7e0; border-left: 4px solid #e0a800; padding: .4em .8em; margin: .5em 0; }
.failure { background: #fdecec; border-left: 4px solid #c62828; padding: .4em .8em; margin: .5em 0; }
.status-complete { color: #1b7f3b; font-weight: 600; } .status-other { color: #b3261e; font-weight: 600; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: .4em 0 .8em; font-variant-numeric: tabular-nums; }
th, td { padding: .28em .65em; border-bottom: 1px solid #e6e6ea; text-align: left; vertical-align: top; }
td.num { text-align: right; white-space: nowrap; } th { white-space: nowrap; }
thead th { background: #f3f3f6; position: sticky; top: 0; }
table.sortable thead th { cursor: pointer; user-select: none; }
table.sortable thead th::after { content: " \\21C5"; color: #a0a0a8; font-size: .8em; }
table.sortable thead th[aria-sort="ascending"]::after { content: " \\25B2"; color: #1d1d1f; }
table.sortable thead th[aria-sort="descending"]::after { content: " \\25BC"; color: #1d1d1f; }
tbody tr:nth-child(even) { background: #fafafb; }
td.best { font-weight: 700; } .sig { color: #1b7f3b; font-weight: 700; } .worse { color: #b3261e; }
figure { margin: .6em 0 1em; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
pre { background: #f6f6f8; padding: .7em; overflow-x: auto; font-size: .82em; line-height: 1.35; }
details { margin: .5em 0; } summary { cursor: pointer; font-weight: 600; }
a { color: #0b57d0; }
@media print {
  body { max-width: none; padding: 0; font-size: 11px; }
  table.sortable thead th::after { content: ""; }
  h2 { break-after: avoid; } table, figure { break-inside: avoid; } pre { white-space: pre-wrap; }
  details:not([open]) { display: none; }
}
"""

#: Sorts a table with class ``sortable`` by the column whose header is clicked (again: the other
#: way). Cells sort by their ``data-v`` (a number, or text); empty ones go last.
SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("thead th").forEach(function (th, col) {
    th.addEventListener("click", function () {
      var up = th.getAttribute("aria-sort") !== "ascending";
      table.querySelectorAll("thead th").forEach(function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", up ? "ascending" : "descending");
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      function key(row) {
        var cell = row.cells[col], v = cell ? cell.getAttribute("data-v") : null;
        if (v === null) { v = cell ? cell.textContent.trim() : ""; }
        var x = parseFloat(v);
        return v === "" ? null : (isNaN(x) || String(x) !== String(Number(v)) ? v.toLowerCase() : x);
      }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (x === null || y === null) { return x === y ? 0 : (x === null ? 1 : -1); }
        if (typeof x !== typeof y) { x = String(x); y = String(y); }
        return (x < y ? -1 : x > y ? 1 : 0) * (up ? 1 : -1);
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""


def esc(text: object) -> str:
    """``text`` as HTML text (or an attribute value)."""
    return html.escape(str(text), quote=True)


@dataclass(frozen=True)
class Cell:
    """A table cell: what it shows, what it sorts by (a number, else its text), and its classes."""

    text: str
    value: float | str | None = None
    classes: str = ""
    markup: bool = False  # ``text`` is HTML already (a link), not to be escaped

    def html(self) -> str:
        attributes = ""
        if self.value is not None:
            value = self.value
            if isinstance(value, float):
                value = "" if math.isnan(value) else repr(value)
            attributes += f' data-v="{esc(value)}"'
        classes = f"num {self.classes}" if isinstance(self.value, (int, float)) else self.classes
        if classes.strip():
            attributes += f' class="{esc(classes.strip())}"'
        return f"<td{attributes}>{self.text if self.markup else esc(self.text)}</td>"


def table(
    header: Sequence[str],
    rows: Iterable[Sequence[Cell | str | float | int]],
    caption: str = "",
    sortable: bool = True,
    name: str = "",
) -> str:
    """An HTML table, sortable by any column unless ``sortable`` is false; ``name`` becomes its
    ``data-table`` attribute (how a reader, or a test, finds it). Plain strings and numbers become
    cells that sort by themselves."""
    head = "".join(f'<th scope="col">{esc(h)}</th>' for h in header)
    body = "".join("<tr>" + "".join(_cell(c).html() for c in row) + "</tr>" for row in rows)
    classes = ' class="sortable"' if sortable else ""
    label = f' data-table="{esc(name)}"' if name else ""
    about = f'<p class="about">{esc(caption)}</p>' if caption else ""
    head = f"<thead><tr>{head}</tr></thead>"
    return f'{about}<div class="scroll"><table{classes}{label}>{head}<tbody>{body}</tbody></table></div>'


def _cell(cell: Cell | str | float | int) -> Cell:
    if isinstance(cell, Cell):
        return cell
    if isinstance(cell, (int, float)):
        return Cell(f"{cell:,}" if isinstance(cell, int) else f"{cell:.4g}", float(cell))
    return Cell(str(cell))


def image(path: Path, alt: str, caption: str = "") -> str:
    """``path`` embedded as a data URI in a figure (SVG stays vector); '' when the file is absent."""
    path = Path(path)
    kind = MEDIA_TYPES.get(path.suffix.lower())
    if kind is None or not path.is_file():
        return ""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    note = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="data:{kind};base64,{data}" alt="{esc(alt)}">{note}</figure>'


def figure_file(stem: Path) -> Path:
    """The figure to embed for ``stem`` (e.g. ``out/curves``): its SVG when written, else its PNG."""
    svg = stem.with_suffix(".svg")
    return svg if svg.is_file() else stem.with_suffix(".png")


def headline(items: Iterable[tuple[str, str]]) -> str:
    """A definition list of (term, HTML) pairs; the values are markup already."""
    return '<dl class="headline">' + "".join(f"<dt>{esc(k)}</dt><dd>{v}</dd>" for k, v in items) + "</dl>"


def details(summary: str, body: str, open_: bool = False) -> str:
    """A collapsible block; ``body`` is markup."""
    return f"<details{' open' if open_ else ''}><summary>{esc(summary)}</summary>{body}</details>"


def pre(text: str) -> str:
    """Preformatted text (a traceback, a manifest, the latent-quality description), escaped."""
    return f"<pre>{esc(text)}</pre>"


def plural(n: object, one: str, several: str | None = None) -> str:
    """``n`` and the noun that goes with it: ``1 thread``, ``2 threads``."""
    return f"{n} {one if n == 1 else (several or one + 's')}"


def status_class(status: str) -> str:
    """The CSS class that colours a status: ``complete`` green, anything else red (a fixed class,
    whatever a file's status says)."""
    return "status-complete" if status == "complete" else "status-other"


def page(title: str, body: str) -> str:
    """A whole HTML document: ``title``, the style, ``body`` (markup) and the sorting script."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>{esc(title)}</title><style>{STYLE}</style></head>\n<body>\n{body}\n"
        f"<script>{SCRIPT}</script>\n</body></html>\n"
    )
