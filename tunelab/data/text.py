"""Reading data files as text: one decoding rule for every reader.

UTF-8 by default, with or without a byte-order mark (a leading BOM is dropped); another
encoding comes from data.encoding. A byte the encoding cannot decode is a DataError naming
the file, the line and the byte offset, never a UnicodeDecodeError traceback. JSON is parsed
with the same care: a duplicate key, nesting too deep for the parser or a number too long to
convert is a DataError naming the file and line.
"""

from __future__ import annotations

import codecs
import json
from pathlib import Path
from typing import Any

from tunelab.errors import DataError

DEFAULT_ENCODING = "utf-8"


def codec(encoding: str) -> str:
    """The codec that reads `encoding`: utf-8 reads as utf-8-sig, so a leading BOM is dropped."""
    try:
        name = codecs.lookup(encoding).name
    except (LookupError, TypeError, ValueError):
        raise DataError(f"data.encoding: unknown text encoding {encoding!r} (e.g. utf-8, "
                        "latin-1, cp1252, utf-16)") from None
    return "utf-8-sig" if name in ("utf-8", "utf-8-sig") else name


def decode(data: bytes, path: Path | str, encoding: str = DEFAULT_ENCODING) -> str:
    """`data` (the bytes of file `path`) as text; an undecodable byte is a DataError."""
    name = codec(encoding)
    try:
        return data.decode(name)
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        shown = "utf-8" if name == "utf-8-sig" else name
        raise DataError(f"{path}:{line}: byte 0x{data[exc.start]:02x} at offset {exc.start} is "
                        f"not valid {shown}; set data.encoding (e.g. latin-1) or re-save the "
                        "file as UTF-8") from None


def read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None


def read_text(path: Path, encoding: str = DEFAULT_ENCODING) -> str:
    """The whole file as text (universal newlines: CRLF and CR become \\n)."""
    text = decode(read_bytes(path), path, encoding)
    return text.replace("\r\n", "\n").replace("\r", "\n")


def split_lines(text: str) -> list[str]:
    """Lines split at \n only (str.splitlines also splits at \x0b, \x1c, \u2028 ..., which
    would shift line numbers and misalign parallel files); no empty last line."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def _no_duplicates(where: str):
    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out:
                raise DataError(f"{where}: duplicate key {key!r} in a JSON object")
            out[key] = value
        return out
    return hook


def parse_json(text: str, where: str, line_of_error: bool = False) -> Any:
    """json.loads with every failure a DataError at `where` (add the parser's line when
    `line_of_error`: `where` is then the file, and the text the whole file)."""
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates(where))
    except json.JSONDecodeError as exc:
        at = f"{where}:{exc.lineno}" if line_of_error else where
        raise DataError(f"{at}: not valid JSON ({exc.msg})") from None
    except RecursionError:
        raise DataError(f"{where}: JSON nested too deeply to read") from None
    except ValueError as exc:  # e.g. an integer longer than Python converts (4300 digits)
        raise DataError(f"{where}: not valid JSON ({exc})") from None
