"""Continued pretraining on plain text: documents, blocks (nothing lost or duplicated), a run."""

from __future__ import annotations

import pytest

from sft_fixtures import CORPUS, tiny_llama_dir, tiny_tokenizer
from tunelab.config import validate
from tunelab.data.blocks import cut_blocks, encode_blocks, token_stream
from tunelab.data.sft import Completion, PlainText, load_records, text_documents
from tunelab.errors import DataError

TEXT = "First para\nline two\n\n\nSecond para\n  \nThird\n"


@pytest.mark.parametrize("split,expected", [
    ("paragraph", [("First para\nline two", 1), ("Second para", 5), ("Third", 7)]),
    ("line", [("First para", 1), ("line two", 2), ("Second para", 5), ("Third", 7)]),
    ("file", [("First para\nline two\n\n\nSecond para\n  \nThird", 1)]),
])
def test_text_files_split_into_documents_with_their_line(tmp_path, split, expected):
    path = tmp_path / "t.txt"
    path.write_text(TEXT)
    docs = text_documents(path, split)
    assert [(d.text, int(d.where.rsplit(":", 1)[1])) for d in docs] == expected


def test_txt_refuses_other_formats_and_empty_files(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text(TEXT)
    with pytest.raises(DataError, match="a .txt file is plain text; set data.format to text"):
        load_records(str(path), "alpaca", {}, {})
    path.write_text("\n \n")
    with pytest.raises(DataError, match="t.txt: no text found"):
        load_records(str(path), "auto", {}, {})


def test_blocks_lose_and_duplicate_no_token():
    tok = tiny_tokenizer()
    docs = [PlainText(t, f"d{i}") for i, t in enumerate(CORPUS * 3)]
    stream, n = token_stream(tok, docs)
    assert n == len(docs) and stream.count(tok.eos_token_id) == len(docs)
    assert stream[:stream.index(tok.eos_token_id)] == tok(CORPUS[0], add_special_tokens=False)["input_ids"]
    train, held, stats = encode_blocks(tok, docs, 16, held_out=2, decode_held_out=1)
    blocks = train.input_ids + held.input_ids
    assert all(len(b) == 16 for b in blocks) and len(held) == 2
    assert sum(blocks, []) + stream[len(blocks) * 16:] == stream  # in order, each token once
    assert stats.dropped_tail == len(stream) - 16 * len(blocks) < 16
    assert train.labels == train.input_ids and train.trained == [15] * len(train)
    assert held.input_ids == cut_blocks(stream, 16)[-2:]  # the end of the text is held out
    assert len(held.records) == 1 and tok.decode(held.input_ids[0]) == held.records[0].text


def test_block_errors_name_the_problem():
    tok = tiny_tokenizer()
    with pytest.raises(DataError, match="x.json:3: data.blocks needs plain-text documents"):
        token_stream(tok, [Completion("a", "b", "x.json:3")])
    with pytest.raises(DataError, match="nothing would train; lower data.eval_size"):
        encode_blocks(tok, [PlainText("one two three", "d")], 2, held_out=40)


def test_continued_pretraining_on_text_lowers_held_out_perplexity(tmp_path):
    from tunelab.recipes.run import train

    text = tmp_path / "corpus.txt"
    text.write_text("\n\n".join(CORPUS * 12))
    tree = {"task": "causal_lm", "model": {"name": str(tiny_llama_dir(tmp_path / "m")),
                                           "max_length": 32},
            "data": {"path": str(text), "blocks": True, "eval_size": 4, "samples": 1,
                     "sample_tokens": 4},
            "method": {"name": "full"},
            "train": {"batch_size": 4, "lr": 1e-2, "max_steps": 30, "warmup_ratio": 0.0},
            "output_dir": str(tmp_path / "run")}
    logs: list[str] = []
    s = train(validate(tree), log=logs.append)
    assert s["final_dev"]["perplexity"] < 0.5 * s["initial_dev"]["perplexity"]
    assert any("held-out blocks of 32 tokens (the last blocks of the text)" in x for x in logs)
    assert (tmp_path / "run" / "samples" / "step-0000030.jsonl").is_file()
