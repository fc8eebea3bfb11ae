"""Known dataset names -> files in the data directory, with their format and columns."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from tunelab.errors import DataError


@dataclass(frozen=True)
class CatalogEntry:
    train: str
    dev: str | None
    test: str | None
    format: str
    header: bool
    columns: dict[str, str | int] = field(default_factory=dict)


CATALOG: dict[str, CatalogEntry] = {
    # GLUE SST-2; test_labeled's labels are unofficial, so dev is the number to report.
    "sst2": CatalogEntry("sst2/train.tsv", "sst2/dev.tsv", "sst2/test_labeled.tsv", "tsv", True,
                         {"text": "sentence", "label": "label"}),
    # A 10k sample of AG News train (descriptions only) and the official test set.
    "ag_news": CatalogEntry("ag_news/train_subset.tsv", None, "ag_news/test.tsv", "tsv", False,
                            {"text": 0, "label": 1}),
}


def data_dir() -> Path:
    """TUNELAB_DATA_DIR, else the first `shared/data` beside a checkout or the working directory."""
    env = os.environ.get("TUNELAB_DATA_DIR")
    if env:
        return Path(env).expanduser()
    checkout = Path(__file__).resolve().parents[2]
    for candidate in (checkout.parent / "shared" / "data", Path.cwd().parent / "shared" / "data",
                      Path.cwd() / "shared" / "data", Path.cwd() / "data"):
        if candidate.is_dir():
            return candidate
    return checkout.parent / "shared" / "data"


def lookup(name: str) -> CatalogEntry | None:
    return CATALOG.get(name.strip().lower())


def catalog_path(relative: str, directory: bool = False) -> Path:
    """A catalog file (or, with directory=True, folder) under the data directory."""
    root = data_dir()
    path = root / relative
    if not (path.is_dir() if directory else path.is_file()):
        raise DataError(f"{path}: catalog {'folder' if directory else 'file'} not found; set "
                        f"TUNELAB_DATA_DIR to the folder that holds {relative.split('/')[0]}/ "
                        f"(now {root})")
    return path
