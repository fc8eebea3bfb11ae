"""CoNLL column files (one word per line, a blank line between sentences) brought to IOB2.

IOB1, IOB2 and BIOES files are accepted; tags are checked and converted to IOB2 as they
are read, so the rest of tunelab sees one scheme. A malformed line, a tag outside the
scheme or a broken entity is a DataError naming the file and line, never a skip.
`-DOCSTART-` lines (document breaks) end a sentence and are not data; each sentence keeps
the number of its document, so cross-validation can keep documents whole.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from tunelab.config import ConllDataConfig
from tunelab.data.catalog import catalog_path
from tunelab.data.splits import limit_sizes
from tunelab.data.text import DEFAULT_ENCODING, read_text, split_lines
from tunelab.errors import DataError

# catalog name -> (train, dev, test) under the data directory
CONLL_CATALOG = {
    "conll2003": ("conll2003/train.txt", "conll2003/valid.txt", "conll2003/test.txt"),
}
PREFIXES = {"iob1": "BI", "iob2": "BI", "bioes": "BIES"}
DOCSTART = "-DOCSTART-"


@dataclass(frozen=True)
class Sentence:
    words: tuple[str, ...]
    tags: tuple[str, ...]  # IOB2
    path: str
    line: int  # the first word's line; word i is on line + i
    doc: int = 0  # -DOCSTART- lines before it in its file: its document (cross-validation groups)

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


class TagError(ValueError):
    """A tag that breaks the scheme, at word `index` of its sentence."""

    def __init__(self, index: int, message: str):
        super().__init__(message)
        self.index = index


def split_tag(tag: str, scheme: str) -> tuple[str, str]:
    """'B-PER' -> ('B', 'PER'); 'O' -> ('O', '')."""
    if tag == "O":
        return "O", ""
    prefix, sep, kind = tag.partition("-")
    if not sep or not kind or prefix not in PREFIXES[scheme]:
        allowed = ", ".join(f"{p}-" for p in PREFIXES[scheme])
        raise ValueError(f"tag {tag!r} is not valid in {scheme.upper()} (O, or {allowed} "
                         "followed by an entity type)")
    return prefix, kind


def to_iob2(tags: list[str] | tuple[str, ...], scheme: str) -> list[str]:
    """One sentence's tags in `scheme`, as IOB2; raises TagError at the first bad tag."""
    parts = []
    for i, tag in enumerate(tags):
        try:
            parts.append(split_tag(tag, scheme))
        except ValueError as exc:
            raise TagError(i, str(exc)) from None
    if scheme == "bioes":
        return _from_bioes(parts)
    out: list[str] = []
    prev_kind = ""  # the entity type of the previous word, "" after O
    for i, (prefix, kind) in enumerate(parts):
        if prefix == "O":
            out.append("O")
        elif prefix == "B" or (scheme == "iob1" and kind != prev_kind):
            out.append(f"B-{kind}")  # IOB1: I- opens an entity unless it continues one
        elif kind != prev_kind:
            after = tags[i - 1] if i else "the sentence start"
            raise TagError(i, f"{tags[i]!r} continues no entity (it follows {after!r}); in IOB2 "
                               "every entity starts with B-. If the file is IOB1, set "
                               "data.scheme: iob1")
        else:
            out.append(f"I-{kind}")
        prev_kind = kind
    return out


def _from_bioes(parts: list[tuple[str, str]]) -> list[str]:
    """B- I-* E- spans and S- singletons -> IOB2; every span must be opened and closed."""
    out: list[str] = []
    open_kind = ""  # the type of the entity a B- opened and no E- has closed yet
    for i, (prefix, kind) in enumerate(parts):
        tag = f"{prefix}-{kind}" if kind else "O"
        if prefix in ("I", "E") and kind != open_kind:
            raise TagError(i, f"{tag!r} continues no open {kind} entity; BIOES entities are "
                              "B- (I-)* E-, or a single S-")
        if prefix in ("O", "B", "S") and open_kind:
            raise TagError(i, f"{tag!r} comes before the open {open_kind} entity was closed "
                              f"with E-{open_kind}")
        out.append("O" if prefix == "O" else f"{'B' if prefix in 'BS' else 'I'}-{kind}")
        open_kind = kind if prefix in ("B", "I") else ""
    if open_kind:
        raise TagError(len(parts) - 1, f"the sentence ends inside a {open_kind} entity (no "
                                       f"E-{open_kind})")
    return out


def read_conll(path: Path, token_column: int, tag_column: int, scheme: str,
               encoding: str = DEFAULT_ENCODING) -> list[Sentence]:
    """Every sentence of a CoNLL file, tags converted from `scheme` to IOB2."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    sentences: list[Sentence] = []
    words: list[str] = []
    tags: list[str] = []
    start, width, tag_col, doc = 0, 0, tag_column, 0

    def flush() -> None:
        if words:
            try:
                iob2 = to_iob2(tags, scheme)
            except TagError as exc:
                raise DataError(f"{path}:{start + exc.index}: {exc}") from None
            sentences.append(Sentence(tuple(words), tuple(iob2), str(path), start, doc))
            words.clear()
            tags.clear()

    for line, raw in enumerate(split_lines(read_text(path, encoding)), start=1):
        fields = raw.split()
        if not fields or fields[0] == DOCSTART:
            flush()
            doc += bool(fields)  # a -DOCSTART- line opens the next document
            continue
        if not width:  # the first data line fixes the column count
            width = len(fields)
            tag_col = tag_column if tag_column >= 0 else width - 1
            _check_columns(path, line, width, token_column, tag_col)
        if len(fields) != width:
            raise DataError(f"{path}:{line}: expected {width} whitespace-separated "
                            f"columns (as on the first line), found {len(fields)}")
        if not words:
            start = line
        words.append(fields[token_column])
        tags.append(fields[tag_col])
    flush()
    if not sentences:
        raise DataError(f"{path}: no sentences found (expected one word per line, a blank line "
                        "between sentences)")
    return sentences


def _check_columns(path: Path, line: int, width: int, token_column: int, tag_col: int) -> None:
    for key, col in (("token_column", token_column), ("tag_column", tag_col)):
        if col >= width:
            raise DataError(f"{path}:{line}: no column {col} (the line has {width} columns, "
                            f"counted from 0); set data.{key}")
    if tag_col == token_column:
        raise DataError(f"{path}:{line}: the line has {width} column(s), so the words and the "
                        f"tags would both come from column {tag_col}; set data.token_column and "
                        "data.tag_column")


# ----------------------------------------------------------------------------- splits


@dataclass
class TagSplits:
    train: list[Sentence]
    dev: list[Sentence]
    test: list[Sentence] | None
    tags: list[str]  # the label set: O, then B-/I- per entity type
    notes: list[str] = field(default_factory=list)


def tag_set(types: set[str]) -> list[str]:
    """O first, then B- and I- for each entity type in alphabetical order."""
    return ["O"] + [f"{p}-{t}" for t in sorted(types) for p in "BI"]


def entity_types(sentences: list[Sentence]) -> set[str]:
    return {t[2:] for s in sentences for t in s.tags if t != "O"}


def sources(cfg: ConllDataConfig) -> tuple[Path, str | None, str | None]:
    """(train, dev, test) paths: the catalog's files for a catalog name, else the config's."""
    entry = CONLL_CATALOG.get(cfg.train.strip().lower())
    if entry is None:
        return Path(cfg.train).expanduser(), cfg.dev, cfg.test
    return (catalog_path(entry[0]), cfg.dev or str(catalog_path(entry[1])),
            cfg.test or str(catalog_path(entry[2])))


SPLIT_INDEX = {"train": 0, "dev": 1, "test": 2}


def read_like_training(cfg: ConllDataConfig, path: str | Path, split: str = "dev") -> list[Sentence]:
    """A CoNLL file read like the training data (data.dev, data.test, eval --data); a catalog
    name reads that dataset's `split` file."""
    entry = CONLL_CATALOG.get(path.strip().lower()) if isinstance(path, str) else None
    file = catalog_path(entry[SPLIT_INDEX[split]]) if entry else Path(path).expanduser()
    if not file.is_file():
        raise DataError(f"{file}: file not found (data.train, data.dev, data.test and `tunelab "
                        f"eval --data` each take a file path or a catalog name: "
                        f"{', '.join(CONLL_CATALOG)})")
    return read_conll(file, cfg.token_column, cfg.tag_column, cfg.scheme, cfg.encoding)


def check_types(sentences: list[Sentence], tags: list[str]) -> None:
    known = set(tags)
    for s in sentences:
        for i, tag in enumerate(s.tags):
            if tag not in known:
                types = ", ".join(sorted({t[2:] for t in tags if t != "O"}))
                raise DataError(f"{s.path}:{s.line + i}: entity type {tag[2:]!r} does not occur "
                                f"in the training data (types: {types})")


def load_conll_splits(cfg: ConllDataConfig) -> TagSplits:
    train_path, dev_src, test_src = sources(cfg)
    notes = []
    train = read_like_training(cfg, train_path, "train")
    if dev_src:
        dev = read_like_training(cfg, dev_src, "dev")
    else:
        order = list(range(len(train)))
        random.Random(cfg.split_seed).shuffle(order)
        cut = max(1, round(cfg.dev_fraction * len(train)))
        if cut >= len(train):
            raise DataError(f"{train_path}: {len(train)} sentence(s) are too few to hold out a "
                            "dev set; give data.dev")
        dev = [train[i] for i in sorted(order[:cut])]
        train = [train[i] for i in sorted(order[cut:])]
        notes.append(f"no dev file: held out {len(dev)} training sentences "
                     f"({cfg.dev_fraction:.0%}, seed {cfg.split_seed})")
    test = read_like_training(cfg, test_src, "test") if test_src else None
    types = entity_types(train)
    if not types:
        raise DataError(f"{train_path}: no entity in the training data (every tag is O)")
    tags = tag_set(types)
    for part in (dev, test or []):
        check_types(part, tags)
    train, dev, test = limit_sizes(cfg, train, dev, test, notes, "sentences")
    return TagSplits(train, dev, test, tags, notes)
