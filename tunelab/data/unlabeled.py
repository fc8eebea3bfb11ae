"""Unlabeled text for masked-LM pretraining: one column of a labelled set, or plain documents.

A classification catalog name (sst2, ag_news) or a .tsv/.csv file gives one text per row from
its text column, labels ignored; .txt, .json/.jsonl files and the plain-text catalog
(wiki_demo, c4_demo, tinyshakespeare) go through the same readers as causal-LM continued
pretraining. Every text keeps where it came from (file:line), for error messages.
"""

from __future__ import annotations

from pathlib import Path

from tunelab.config import MaskedLMDataConfig
from tunelab.data.catalog import catalog_path, lookup
from tunelab.data.readers import Columns, read_examples
from tunelab.data.sft import PlainText, load_records
from tunelab.data.splits import hold_out
from tunelab.errors import DataError

DELIMITED = (".tsv", ".csv")


def read_texts(path_or_name: str, d: MaskedLMDataConfig, held_out: bool = False
               ) -> list[PlainText]:
    """Every text of `path_or_name`, in file order; for `held_out` texts (data.eval_path) a
    classification catalog name reads its dev file (else its test file), not its train file."""
    entry = lookup(path_or_name)
    if entry is None:
        path = Path(path_or_name).expanduser()
    else:
        path = catalog_path((entry.dev or entry.test or entry.train) if held_out else entry.train)
    if entry or path.suffix.lower() in DELIMITED:
        column = d.text_column if d.text_column is not None else (
            entry.columns["text"] if entry else "text")
        header = d.header if d.header is not None else (entry.header if entry else True)
        fmt = entry.format if entry else path.suffix.lower()[1:]
        if not header and isinstance(column, str):
            raise DataError(f"{path}: data.header is false, so data.text_column must be a 0-based "
                            f"index, not a name ({column!r})")
        # the reader wants a label column: naming the text column twice reads the text only
        rows = read_examples(path, fmt, header, Columns(text=column, label=column), d.encoding)
        return [PlainText(e.text, e.where) for e in rows]
    if d.header is not None:
        raise DataError(f"data.header: {path_or_name} is not a .tsv/.csv file; remove data.header")
    column = d.text_column if d.text_column is not None else "text"
    if not isinstance(column, str):
        raise DataError(f"data.text_column: {path_or_name} holds JSON records; name the key "
                        f"holding the text, not an index ({column})")
    records = load_records(path_or_name, "text", {"text": column}, {}, d.text_split, d.encoding)
    return [r for r in records if isinstance(r, PlainText)]


def split_texts(d: MaskedLMDataConfig) -> tuple[list[PlainText], list[PlainText], str]:
    """(train, held-out, where the held-out texts come from): eval_path, or a seeded sample of
    eval_size texts from path, taken out of training."""
    texts = read_texts(d.path, d)
    if d.eval_path:
        held, source = read_texts(d.eval_path, d, held_out=True), d.eval_path
    else:
        texts, held = hold_out(texts, d.eval_size, d.split_seed, "texts", d.path)
        source = f"{d.eval_size} texts held out of {d.path} (seed {d.split_seed})"
    if d.max_examples:
        texts = texts[: d.max_examples]
    return texts, held, source
