"""A report as plain data (sections of paragraphs, tables, figures, code), rendered two ways:
one self-contained HTML page and a Markdown file beside its PNGs. Both renderers walk the same
blocks, so the two pages always hold the same tables."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path

from tunelab.errors import TunelabError
from tunelab.io import DiskFullError, fault_point, write_bytes, write_text

Cell = str | int | float | None


@dataclass
class Para:
    text: str


@dataclass
class Table:
    id: str  # the HTML id and a stable handle for tests and readers
    header: list[str]
    rows: list[list[Cell]]
    caption: str = ""
    shade: bool = False  # shade numeric cells by value (confusion matrices)


@dataclass
class Figure:
    file: str  # PNG name, written next to the Markdown file
    png: bytes
    alt: str


@dataclass
class Code:
    text: str


@dataclass
class Section:
    title: str
    blocks: list[Para | Table | Figure | Code] = field(default_factory=list)


@dataclass
class Document:
    title: str
    subtitle: str
    sections: list[Section]

    def figures(self) -> list[Figure]:
        return [b for s in self.sections for b in s.blocks if isinstance(b, Figure)]


def cell_text(value: Cell) -> str:
    """One spelling of a cell for both pages: floats with 4 decimals, None as a dash."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):  # scores; anything else arrives as a string
        return f"{value:.4f}" if value == 0 or abs(value) >= 1e-3 else f"{value:.3e}"
    if isinstance(value, int):
        return str(value)
    return value


# ------------------------------------------------------------------------------------ HTML

# No script, no external resource: the policy makes the browser refuse (and log) any that slips in.
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem auto;
       max-width: 72rem; padding: 0 1rem; color: #1d1d1f; line-height: 1.4; }
h1 { margin-bottom: .2rem; } .subtitle { color: #555; margin-top: 0; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: .2rem; margin-top: 2rem; }
table { border-collapse: collapse; margin: .6rem 0 1rem; font-size: .9rem; }
caption { text-align: left; color: #555; padding-bottom: .3rem; }
th, td { border: 1px solid #d0d0d0; padding: .25rem .6rem; vertical-align: top; }
th { background: #f3f3f3; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.text { max-width: 36rem; white-space: pre-wrap; word-break: break-word; }
img { max-width: 100%; border: 1px solid #eee; }
pre { background: #f7f7f7; padding: .8rem; overflow-x: auto; font-size: .85rem; }
"""


def _is_number(value: Cell) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _html_table(t: Table) -> str:
    peak = max((abs(v) for r in t.rows for v in r if _is_number(v)), default=0) or 1
    head = "".join(f"<th>{html.escape(h)}</th>" for h in t.header)
    body = []
    for row in t.rows:
        cells = []
        for k, v in enumerate(row):
            tag = "th" if k == 0 and t.shade else "td"
            cls = "num" if _is_number(v) else "text"
            style = (f' style="background: rgba(31,119,180,{0.08 + 0.6 * abs(v) / peak:.2f})"'
                     if t.shade and _is_number(v) else "")
            cells.append(f'<{tag} class="{cls}"{style}>{html.escape(cell_text(v))}</{tag}>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    caption = f"<caption>{html.escape(t.caption)}</caption>" if t.caption else ""
    return (f'<table id="{html.escape(t.id)}">{caption}<thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>")


def _html_block(b: Para | Table | Figure | Code) -> str:
    if isinstance(b, Para):
        return f"<p>{html.escape(b.text)}</p>"
    if isinstance(b, Table):
        return _html_table(b)
    if isinstance(b, Figure):
        data = base64.b64encode(b.png).decode("ascii")
        return (f'<figure><img id="{html.escape(Path(b.file).stem)}" alt="{html.escape(b.alt)}" '
                f'src="data:image/png;base64,{data}"></figure>')
    return f"<pre>{html.escape(b.text)}</pre>"


def to_html(doc: Document) -> str:
    parts = [f"<h1>{html.escape(doc.title)}</h1>",
             f'<p class="subtitle">{html.escape(doc.subtitle)}</p>']
    for s in doc.sections:
        parts.append(f"<section><h2>{html.escape(s.title)}</h2>")
        parts += [_html_block(b) for b in s.blocks]
        parts.append("</section>")
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
            f"<title>{html.escape(doc.title)}</title><style>{_CSS}</style></head>\n<body>\n"
            + "\n".join(parts) + "\n</body></html>\n")


# -------------------------------------------------------------------------------- Markdown

def _md_cell(value: Cell) -> str:
    return cell_text(value).replace("\\", "\\\\").replace("|", "\\|").replace("\n", "<br>")


def _md_table(t: Table) -> str:
    lines = [f"*{t.caption}*", ""] if t.caption else []
    lines.append("| " + " | ".join(_md_cell(h) for h in t.header) + " |")
    lines.append("|" + "|".join("---:" if k and t.rows and _is_number(t.rows[0][k]) else "---"
                                for k in range(len(t.header))) + "|")
    lines += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in t.rows]
    return "\n".join(lines)


def _md_block(b: Para | Table | Figure | Code) -> str:
    if isinstance(b, Para):
        return b.text
    if isinstance(b, Table):
        return _md_table(b)
    if isinstance(b, Figure):
        return f"![{b.alt}]({b.file})"
    fence = "````" if "```" in b.text else "```"
    return f"{fence}\n{b.text.rstrip()}\n{fence}"


def to_markdown(doc: Document) -> str:
    parts = [f"# {doc.title}", doc.subtitle]
    for s in doc.sections:
        parts.append(f"## {s.title}")
        parts += [_md_block(b) for b in s.blocks]
    return "\n\n".join(parts) + "\n"


def write(doc: Document, out_dir: Path, stem: str) -> tuple[Path, Path]:
    """OUT/stem.html (everything inline), OUT/stem.md and its PNGs; returns both page paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    page, md = out_dir / f"{stem}.html", out_dir / f"{stem}.md"
    html, markdown = to_html(doc), to_markdown(doc)  # built before anything is written
    try:
        for fig in doc.figures():
            write_bytes(out_dir / fig.file, fig.png)
        fault_point("report:half")  # the figures written, the pages not yet
        write_text(page, html)  # each file atomically: a kill leaves the previous page
        write_text(md, markdown)
    except DiskFullError as exc:
        raise TunelabError(str(exc)) from None
    return page, md
