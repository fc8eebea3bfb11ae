"""Uploads: a data file from the browser, size-limited and written only as RUNS/uploads/NAME
(the name is one plain file name; nothing can climb out of that folder)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from starlette.requests import Request

from tunelab.errors import DataError

FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,120}$")
SUFFIXES = (".tsv", ".csv", ".jsonl", ".json", ".conll", ".txt")


class UploadError(DataError):
    """An upload with a bad name or over the size limit (nothing is kept)."""


async def save_upload(request: Request, folder: Path, filename: str, limit: int) -> Path:
    if not FILE_NAME.match(filename) or ".." in filename or not filename.endswith(SUFFIXES):
        raise UploadError(f"upload {filename!r}: give a plain file name (letters, digits, "
                          f"'.', '_', '-') ending in {', '.join(SUFFIXES)}")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise UploadError(f"upload {filename!r}: {int(declared)} bytes is over the limit of "
                          f"{limit} bytes")
    folder.mkdir(parents=True, exist_ok=True)
    path = (folder / filename).resolve()
    if path.parent != folder.resolve():
        raise UploadError(f"upload {filename!r}: not a file name inside {folder}")
    partial = path.with_name(f".{filename}.part")
    size = 0
    try:
        with partial.open("wb") as out:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise UploadError(f"upload {filename!r}: over the limit of {limit} bytes")
                out.write(chunk)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path
