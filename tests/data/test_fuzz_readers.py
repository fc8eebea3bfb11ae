"""Every data reader, fuzzed: a file is read correctly, or the reader raises a DataError
naming the file (and line, where there is one). No other exception escapes.

Inputs start from a valid file and are then broken (tests/hypothesis_profile.py: truncated at
any byte, invalid UTF-8, other encodings, a BOM, NUL bytes, CRLF, enormous lines, empty files,
deep nesting); the JSON readers also get wrong types in every field and duplicate keys.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis_profile import BOM, field_text, mutated, reads_or_fails_cleanly

from tunelab.config import MaskedLMDataConfig
from tunelab.data.blocks import encode_blocks
from tunelab.data.conll import read_conll
from tunelab.data.parallel import read_parallel
from tunelab.data.readers import Columns, read_examples
from tunelab.data.sft import load_records
from tunelab.data.unlabeled import split_texts
from tunelab.errors import DataError

rows = st.lists(st.tuples(field_text, field_text), min_size=0, max_size=6)
# any JSON value: wrong types in every field
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | field_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(field_text, inner, max_size=3),
    max_leaves=8)


def _write(directory: str, name: str, data: bytes) -> Path:
    path = Path(directory) / name
    path.write_bytes(data)
    return path


def _delimited(rows_: list[tuple[str, str]], sep: str, header: bool) -> bytes:
    lines = ([f"text{sep}label"] if header else []) + [f"{t}{sep}{y}" for t, y in rows_]
    return ("\n".join(lines) + "\n").encode("utf-8")


@given(rows=rows, ext=st.sampled_from([".tsv", ".csv"]), header=st.booleans(), data=st.data())
def test_delimited_files(rows, ext, header, data):
    raw = data.draw(mutated(_delimited(rows, "\t" if ext == ".tsv" else ",", header)))
    cols = Columns(text="text", label="label") if header else Columns(text=0, label=1)
    with tempfile.TemporaryDirectory() as d:
        path = _write(d, "train" + ext, raw)
        reads_or_fails_cleanly(lambda: read_examples(path, "auto", header, cols), path, DataError)


@given(records=st.lists(st.dictionaries(st.sampled_from(["text", "label", "text_pair", "x"]),
                                        json_values, max_size=4), max_size=5),
       data=st.data())
def test_jsonl_classification(records, data):
    valid = "\n".join(json.dumps(r) for r in records).encode()
    raw = data.draw(mutated(valid))
    with tempfile.TemporaryDirectory() as d:
        path = _write(d, "train.jsonl", raw)
        cols = Columns(text="text", label="label", text_pair=data.draw(st.sampled_from([None, "text_pair"])))
        reads_or_fails_cleanly(lambda: read_examples(path, "auto", True, cols), path, DataError)


safe = st.text(st.characters(codec="utf-8", categories=["L", "N"]), min_size=1, max_size=10)


@given(rows=st.lists(st.tuples(safe, safe), min_size=1, max_size=6),
       ext=st.sampled_from([".tsv", ".csv", ".jsonl"]), bom=st.booleans(), crlf=st.booleans())
def test_valid_files_read_exactly(rows, ext, bom, crlf):
    """A well-formed file reads back row for row, with or without a BOM and CRLF line ends."""
    if ext == ".jsonl":
        raw = "\n".join(json.dumps({"text": t, "label": y}) for t, y in rows).encode() + b"\n"
    else:
        raw = _delimited(rows, "\t" if ext == ".tsv" else ",", True)
    raw = (BOM if bom else b"") + (raw.replace(b"\n", b"\r\n") if crlf else raw)
    with tempfile.TemporaryDirectory() as d:
        path = _write(d, "train" + ext, raw)
        got = read_examples(path, "auto", True, Columns(text="text", label="label"))
    assert [(e.text, e.label) for e in got] == [(t, y.strip()) for t, y in rows]
    assert got[-1].where.endswith(f":{len(rows) + (ext != '.jsonl')}")


CONLL = b"-DOCSTART- -X- O O\n\nEU NNP B-ORG\nrejects VBZ O\nGerman JJ B-MISC\n\nPeter NNP B-PER\nBlackburn NNP I-PER\n"


@given(raw=mutated(CONLL), scheme=st.sampled_from(["iob1", "iob2", "bioes"]),
       tag_column=st.sampled_from([-1, 1, 2, 5]))
def test_conll(raw, scheme, tag_column):
    with tempfile.TemporaryDirectory() as d:
        path = _write(d, "train.txt", raw)
        reads_or_fails_cleanly(lambda: read_conll(path, 0, tag_column, scheme), path, DataError)


SFT_RECORD = st.fixed_dictionaries({}, optional={
    k: json_values for k in ("instruction", "input", "output", "system", "history", "messages",
                             "conversations", "prompt", "completion", "text")})
MESSAGE = st.fixed_dictionaries({}, optional={
    "role": st.sampled_from(["user", "assistant", "system", "gpt", "human", "other"]) | json_values,
    "content": field_text | json_values, "from": json_values, "value": json_values})


@given(records=st.lists(SFT_RECORD | st.fixed_dictionaries({"messages": st.lists(MESSAGE, max_size=3)})
                        | json_values, max_size=4),
       as_array=st.booleans(), fmt=st.sampled_from(["auto", "alpaca", "messages",
                                                    "prompt_completion", "text"]),
       data=st.data())
def test_sft_json_and_jsonl(records, as_array, fmt, data):
    valid = (json.dumps(records) if as_array else "\n".join(json.dumps(r) for r in records)).encode()
    raw = data.draw(mutated(valid))
    with tempfile.TemporaryDirectory() as d:
        path = _write(d, "train.json" if as_array else "train.jsonl", raw)
        reads_or_fails_cleanly(lambda: load_records(str(path), fmt, {}, {}), path, DataError)


@given(text=st.text(max_size=40), split=st.sampled_from(["paragraph", "line", "file"]),
       data=st.data())
def test_plain_text_and_blocks(text, split, data):
    raw = data.draw(mutated(text.encode("utf-8", errors="replace")))
    with tempfile.TemporaryDirectory() as d:
        path = _write(d, "corpus.txt", raw)
        records = reads_or_fails_cleanly(lambda: load_records(str(path), "auto", {}, {}, split),
                                         path, DataError)
        if records:
            try:
                encode_blocks(_CharTokenizer(), records, 4, data.draw(st.sampled_from([None, 1])))
            except DataError:
                pass  # too little text for a block: a DataError by design (no file to name)
        cfg = MaskedLMDataConfig(path=str(path), eval_size=1)
        reads_or_fails_cleanly(lambda: split_texts(cfg), path, DataError)


class _CharTokenizer:
    eos_token_id = 0

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [[ord(c) % 1000 + 1 for c in t] for t in texts]}

    def decode(self, ids):
        return "".join(chr(i) for i in ids)


@given(src=st.lists(field_text, max_size=5), tgt=st.lists(field_text, max_size=5), data=st.data())
def test_parallel(src, tgt, data):
    raw_src = data.draw(mutated(("\n".join(src) + "\n").encode()))
    raw_tgt = data.draw(mutated(("\n".join(tgt) + "\n").encode()))
    with tempfile.TemporaryDirectory() as d:
        _write(d, "train.en", raw_src)
        _write(d, "train.de", raw_tgt)
        reads_or_fails_cleanly(lambda: read_parallel(Path(d), "train", "en", "de"), Path(d), DataError)


# ----------------------------------------------------------------------------- encodings


def test_invalid_utf8_tsv_names_file_line_and_offset(tmp_path: Path):
    """The known bug: a latin-1 TSV ended in a UnicodeDecodeError traceback."""
    path = tmp_path / "train.tsv"
    path.write_bytes("text\tlabel\nfine\tpos\ncaf\xe9\tneg\n".encode("latin-1"))
    with pytest.raises(DataError) as exc:
        read_examples(path, "auto", True, Columns(text="text", label="label"))
    assert str(exc.value) == (f"{path}:3: byte 0xe9 at offset 23 is not valid utf-8; set "
                              "data.encoding (e.g. latin-1) or re-save the file as UTF-8")
    rows = read_examples(path, "auto", True, Columns(text="text", label="label"), "latin-1")
    assert [r.text for r in rows] == ["fine", "café"]


@pytest.mark.parametrize("encoding", ["utf-16", "cp1252", "latin-1"])
def test_data_encoding_reads_every_format(tmp_path: Path, encoding: str):
    text = "sentence\tlabel\ncafé crème\t1\nnaïve\t0\n"
    tsv = tmp_path / "a.tsv"
    tsv.write_bytes(text.encode(encoding))
    assert [e.text for e in read_examples(tsv, "auto", True, Columns("sentence", "label"),
                                          encoding)] == ["café crème", "naïve"]
    conll = tmp_path / "a.txt"
    conll.write_bytes("Zoë B-PER\ncafé O\n".encode(encoding))
    assert read_conll(conll, 0, -1, "iob2", encoding)[0].words == ("Zoë", "café")
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_bytes(json.dumps({"prompt": "é", "completion": "è"}, ensure_ascii=False)
                      .encode(encoding))
    assert load_records(str(jsonl), "auto", {}, {}, encoding=encoding)[0].prompt == "é"
    (tmp_path / "x.en").write_bytes("café\n".encode(encoding))
    (tmp_path / "x.de").write_bytes("Käse\n".encode(encoding))
    assert read_parallel(tmp_path, "x", "en", "de", encoding=encoding)[0].target == "Käse"


def test_bom_is_stripped_and_unknown_encoding_is_named(tmp_path: Path):
    path = tmp_path / "a.tsv"
    path.write_bytes(BOM + b"text\tlabel\nhi\tx\n")
    assert read_examples(path, "auto", True, Columns("text", "label"))[0].text == "hi"
    with pytest.raises(DataError, match="data.encoding: unknown text encoding 'klingon'"):
        read_examples(path, "auto", True, Columns("text", "label"), "klingon")


def test_encoding_is_a_checked_config_key():
    from tunelab.config import load_config
    from tunelab.errors import ConfigError

    cfg = load_config(None, ["data.train=a.tsv", "data.encoding=latin-1"])
    assert cfg.data.encoding == "latin-1"
    assert load_config(None, ["data.train=a.tsv"]).data.encoding == "utf-8"
    with pytest.raises(ConfigError, match="unknown text encoding 'klingon'"):
        load_config(None, ["data.train=a.tsv", "data.encoding=klingon"])
