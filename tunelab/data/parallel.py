"""Parallel text for translation: line-aligned files `{split}.{lang}` in one directory
(the Multi30k layout). A count mismatch or an empty side is an error naming file and line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tunelab.data.catalog import catalog_path
from tunelab.data.text import DEFAULT_ENCODING, read_text, split_lines
from tunelab.errors import DataError

PARALLEL_CATALOG = {"multi30k": "multi30k"}
# Multi30k's splits: its test set is named after its year and source
CATALOG_SPLITS = {"multi30k": {"train": "train", "dev": "val", "test": "test_2016_flickr"}}
LANGUAGES = {"en": "English", "de": "German", "fr": "French", "cs": "Czech", "zh": "Chinese",
             "es": "Spanish", "it": "Italian", "ja": "Japanese", "ru": "Russian"}


@dataclass(frozen=True)
class Pair:
    source: str
    target: str
    where: str  # "file:line" of the source side


def corpus_dir(name: str) -> Path:
    if name.strip().lower() in PARALLEL_CATALOG:
        return catalog_path(PARALLEL_CATALOG[name.strip().lower()], directory=True)
    path = Path(name).expanduser()
    if not path.is_dir():
        raise DataError(f"{path}: not a directory of {{split}}.{{lang}} files (catalog names: "
                        f"{', '.join(PARALLEL_CATALOG)})")
    return path


def read_parallel(directory: Path, split: str, source: str, target: str,
                  limit: int | None = None, encoding: str = DEFAULT_ENCODING) -> list[Pair]:
    """The first `limit` aligned pairs of `split` (all when None)."""
    paths = [directory / f"{split}.{lang}" for lang in (source, target)]
    for path in paths:
        if not path.is_file():
            found = sorted(p.name for p in directory.iterdir() if p.is_file())
            raise DataError(f"{path}: not found; files there: {', '.join(found[:12])}")
    src, tgt = (split_lines(read_text(p, encoding)) for p in paths)
    if len(src) != len(tgt):
        raise DataError(f"{paths[0]} has {len(src)} lines but {paths[1]} has {len(tgt)}: "
                        "parallel files must be line-aligned")
    pairs = []
    for number, (s, t) in enumerate(zip(src, tgt), 1):
        if not s.strip() or not t.strip():
            empty = paths[0] if not s.strip() else paths[1]
            raise DataError(f"{empty}:{number}: empty line in a parallel file")
        pairs.append(Pair(s.strip(), t.strip(), f"{paths[0]}:{number}"))
        if limit and len(pairs) == limit:
            break
    return pairs


def language_name(code: str) -> str:
    return LANGUAGES.get(code, code)
