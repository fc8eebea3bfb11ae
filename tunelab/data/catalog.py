"""Known dataset names -> files in the data directory, with their format and columns."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from tunelab.errors import DataError
from tunelab.io import write_bytes


@dataclass(frozen=True)
class CatalogEntry:
    train: str
    dev: str | None
    test: str | None
    format: str
    header: bool
    columns: dict[str, str | int] = field(default_factory=dict)
    # the source file has rows with an empty text (a known defect): they are left out, and
    # the run's log says which (tunelab.data.splits); elsewhere an empty text is an error
    drop_empty_text: bool = False


CATALOG: dict[str, CatalogEntry] = {
    # GLUE SST-2; test_labeled's labels are unofficial, so dev is the number to report.
    "sst2": CatalogEntry("sst2/train.tsv", "sst2/dev.tsv", "sst2/test_labeled.tsv", "tsv", True,
                         {"text": "sentence", "label": "label"}),
    # A 10k sample of AG News train (descriptions only) and the official test set.
    "ag_news": CatalogEntry("ag_news/train_subset.tsv", None, "ag_news/test.tsv", "tsv", False,
                            {"text": 0, "label": 1}),
    # Chinese sentiment and topic sets (ChineseNlpCorpus): one CSV each, no dev or test file,
    # so a run holds out data.dev_fraction of train (stratified, data.split_seed) as dev.
    # Food-delivery reviews, 11,987 rows: 1 positive (4,000), 0 negative (7,987).
    "waimai_10k": CatalogEntry("waimai_10k/waimai_10k.csv", None, None, "csv", True,
                               {"text": "review", "label": "label"}),
    # ChnSentiCorp hotel reviews, 7,766 rows (1 = 5,322, 0 = 2,444); one review is empty.
    "chnsenticorp_htl": CatalogEntry("chnsenticorp_htl/ChnSentiCorp_htl_all.csv", None, None,
                                     "csv", True, {"text": "review", "label": "label"},
                                     drop_empty_text=True),
    # Product reviews, 62,774 rows in 10 topics (column cat); data.columns.label: label reads
    # its sentiment instead. Kept zipped as in the source: unzipped once into the cache.
    # One review is empty.
    "online_shopping_10_cats": CatalogEntry(
        "online_shopping_10_cats/online_shopping_10_cats.zip::online_shopping_10_cats.csv",
        None, None, "csv", True, {"text": "review", "label": "cat"}, drop_empty_text=True),
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
    """A catalog file (or, with directory=True, folder) under the data directory;
    "archive.zip::member" is that member, unzipped once into the cache."""
    if "::" in relative:
        archive, member = relative.split("::", 1)
        return unzipped(catalog_path(archive), member)
    root = data_dir()
    path = root / relative
    if not (path.is_dir() if directory else path.is_file()):
        raise DataError(f"{path}: catalog {'folder' if directory else 'file'} not found; set "
                        f"TUNELAB_DATA_DIR to the folder that holds {relative.split('/')[0]}/ "
                        f"(now {root})")
    return path


def unzipped(archive: Path, member: str) -> Path:
    """`member` of zip `archive` as a file in the cache (TUNELAB_CACHE, else ~/.cache/tunelab),
    extracted on first use (the data directory may be read-only) and again when the archive
    changes (written whole, then renamed into place)."""
    import hashlib
    import zipfile

    from tunelab.models.gguf import cache_root

    stat = archive.stat()
    key = hashlib.sha256(f"{archive.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    out = cache_root().parent / "data" / key.hexdigest()[:12] / Path(member).name
    if out.is_file():
        return out
    try:
        with zipfile.ZipFile(archive) as zf:
            data = zf.read(member)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_bytes(out, data)
    except (zipfile.BadZipFile, KeyError) as exc:
        raise DataError(f"{archive}: cannot read {member} from the zip archive ({exc}); "
                        "restore the file from the data source") from None
    except OSError as exc:
        raise DataError(f"{out}: cannot unzip {archive.name} into the cache ({exc}); set "
                        "TUNELAB_CACHE to a writable folder") from None
    return out
