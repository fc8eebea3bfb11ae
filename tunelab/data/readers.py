"""Read labelled text examples from TSV, CSV and JSONL with a column map.

Every row is checked; a bad one is a DataError naming the file and line, never a skip.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunelab.data.text import DEFAULT_ENCODING, parse_json, read_text, split_lines
from tunelab.errors import DataError

FORMATS = {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl"}


@dataclass(frozen=True)
class Example:
    text: str
    text_pair: str | None
    label: str
    where: str  # "file:line", for error messages


@dataclass(frozen=True)
class Columns:
    text: str | int
    label: str | int
    text_pair: str | int | None = None


def detect_format(path: Path, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    try:
        return FORMATS[path.suffix.lower()]
    except KeyError:
        raise DataError(f"{path}: cannot tell the format from the extension; set data.format "
                        f"to one of tsv, csv, jsonl") from None


def read_examples(path: Path, fmt: str, header: bool, columns: Columns,
                  encoding: str = DEFAULT_ENCODING, dropped: list[str] | None = None
                  ) -> list[Example]:
    """Every row as an Example. An empty text is a DataError, unless `dropped` is given (a
    catalog set with known empty rows): then the row is left out and its "file:line" added."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    kind = detect_format(path, fmt)
    rows = (json_lines(path, encoding) if kind == "jsonl"
            else _delimited_rows(path, kind, header, columns, encoding))
    if dropped is not None:
        rows = _without_empty_text(rows, columns.text, path, dropped)
    examples = [_example(row, columns, path, line) for line, row in rows]
    if not examples:
        raise DataError(f"{path}: no examples found")
    return examples


def _delimited_rows(path: Path, kind: str, header: bool, columns: Columns,
                    encoding: str = DEFAULT_ENCODING) -> Iterator[tuple[int, dict[Any, str]]]:
    text = read_text(path, encoding)
    # a long field is data, not an error: the limit only ever grows, to this file's size
    csv.field_size_limit(max(csv.field_size_limit(), len(text) + 1))
    f = io.StringIO(text, newline="")
    reader = (csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE) if kind == "tsv"
              else csv.reader(f))
    try:
        yield from _rows(reader, path, kind, header, columns)
    except csv.Error as exc:
        raise DataError(f"{path}:{reader.line_num}: cannot read the row ({exc})") from None


def _rows(reader, path: Path, kind: str, header: bool, columns: Columns
          ) -> Iterator[tuple[int, dict[Any, str]]]:
    names: list[str] | None = None
    wanted = [c for c in (columns.text, columns.label, columns.text_pair) if c is not None]
    if header:
        names = next(reader, None)
        if names is None:
            raise DataError(f"{path}: file is empty")
        for col in wanted:
            if isinstance(col, str) and col not in names:
                raise DataError(f"{path}:{reader.line_num}: no column '{col}' in the header (columns: "
                                f"{', '.join(names)}); set data.columns")
    elif any(isinstance(c, str) for c in wanted):
        raise DataError(f"{path}: data.header is false, so data.columns must be 0-based "
                        f"indices, not names ({', '.join(map(str, wanted))})")
    need = 1 + max(c for c in wanted if isinstance(c, int)) if not names else len(names)
    width: int | None = len(names) if names else None  # headerless: the first row's width
    for row in reader:
        line = reader.line_num
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        width = width or max(len(row), need)
        if len(row) != width:
            sep = "tab-separated" if kind == "tsv" else "comma-separated"
            raise DataError(f"{path}:{line}: expected {width} {sep} fields, found {len(row)}")
        yield line, (dict(zip(names, row)) if names else dict(enumerate(row)))


def _without_empty_text(rows: Iterator[tuple[int, dict[Any, Any]]], text: str | int, path: Path,
                        dropped: list[str]) -> Iterator[tuple[int, dict[Any, Any]]]:
    for line, row in rows:
        value = row.get(text)
        if isinstance(value, str) and not value.strip():
            dropped.append(f"{path}:{line}")
            continue
        yield line, row


def json_lines(path: Path, encoding: str = DEFAULT_ENCODING) -> Iterator[tuple[int, dict[Any, Any]]]:
    """(line number, object) for each non-blank line of a JSON Lines file."""
    for line, raw in enumerate(split_lines(read_text(path, encoding)), start=1):
        if not raw.strip():
            continue
        row = parse_json(raw, f"{path}:{line}")
        if not isinstance(row, dict):
            raise DataError(f"{path}:{line}: expected a JSON object per line")
        yield line, row


def _example(row: dict[Any, Any], columns: Columns, path: Path, line: int) -> Example:
    def field(col: str | int | None, what: str) -> str | None:
        if col is None:
            return None
        if col not in row:
            raise DataError(f"{path}:{line}: missing {what} column '{col}' (row has: "
                            f"{', '.join(map(str, row))}); set data.columns.{what}")
        value = row[col]
        if value is None or (isinstance(value, str) and not value.strip()):
            raise DataError(f"{path}:{line}: empty {what} in column '{col}'")
        if not isinstance(value, (str, int, float, bool)):
            raise DataError(f"{path}:{line}: {what} in column '{col}' is not text or a number")
        return str(value).strip() if what == "label" else str(value)

    text = field(columns.text, "text") or ""  # required columns raise rather than return None
    label = field(columns.label, "label") or ""
    return Example(text, field(columns.text_pair, "text_pair"), label, f"{path}:{line}")
