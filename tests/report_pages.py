"""Read back what `tunelab report` wrote: the HTML page's tables (by id) and images, and the
Markdown file's tables, so tests compare their cells with the run's own files."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: dict[str, list[list[str]]] = {}
        self.order: list[str] = []
        self.images: dict[str, str] = {}  # id -> src
        self._table: str | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table":
            self._table = a.get("id") or f"table{len(self.tables)}"
            self.tables[self._table] = []
            self.order.append(self._table)
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table:
            self._cell = []
        elif tag == "img":
            self.images[a.get("id") or ""] = a.get("src") or ""

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._table:
            self.tables[self._table][-1].append("".join(self._cell))
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def html_page(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def table(page: _Page, table_id: str) -> dict[str, list[str]]:
    """Rows of a table keyed by their first cell (the header row under 'header')."""
    rows = page.tables[table_id]
    return {"header": rows[0], **{r[0]: r[1:] for r in rows[1:]}}


def markdown_tables(path: Path) -> list[list[list[str]]]:
    tables: list[list[list[str]]] = []
    current: list[list[str]] = []
    for line in path.read_text(encoding="utf-8").splitlines() + [""]:
        if line.startswith("|"):
            if not re.fullmatch(r"\|(-+:?\|)+", line.replace("---:", "---")):
                cells = re.split(r"(?<!\\)\|", line.strip())[1:-1]
                current.append([c.strip().replace("\\|", "|").replace("<br>", "\n")
                                .replace("\\\\", "\\") for c in cells])
        elif current:
            tables.append(current)
            current = []
    return tables
