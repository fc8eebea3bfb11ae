"""Continued pretraining on plain text: documents joined with EOS, cut into fixed blocks.

Every token trains and no compute goes to padding. The held-out set is the *end* of the
token stream (its last blocks), so it is text the model never trained on, not a shuffled
neighbour of a training block; with data.eval_path it is that file's blocks instead.
"""

from __future__ import annotations

from dataclasses import dataclass

from tunelab.data.render import LMEncoded
from tunelab.data.sft import PlainText, Record
from tunelab.errors import DataError


@dataclass
class BlockStats:
    documents: int
    tokens: int  # in the stream, EOS separators included
    blocks: int
    dropped_tail: int  # tokens after the last whole block

    def lines(self) -> list[str]:
        return [f"documents: {self.documents}, tokens: {self.tokens} (EOS after each document)",
                f"blocks: {self.blocks}; {self.dropped_tail} tokens after the last whole block "
                "left out"]


def token_stream(tokenizer, records: list[Record]) -> tuple[list[int], int]:
    """All documents' tokens, an EOS after each; returns (stream, documents)."""
    texts = []
    for record in records:
        if not isinstance(record, PlainText):
            raise DataError(f"{record.where}: data.blocks needs plain-text documents (format text, "
                            "or a .txt file), not instruction or chat records")
        texts.append(record.text)
    if tokenizer.eos_token_id is None:
        raise DataError("data.blocks: the tokenizer has no EOS token to put between documents")
    stream: list[int] = []
    for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        stream += ids + [tokenizer.eos_token_id]
    return stream, len(texts)


def cut_blocks(stream: list[int], size: int) -> list[list[int]]:
    """Consecutive blocks of exactly `size` tokens; the tail shorter than a block is left out."""
    return [stream[i:i + size] for i in range(0, len(stream) - size + 1, size)]


def encode_blocks(tokenizer, records: list[Record], size: int, held_out: int | None,
                  decode_held_out: int = 0) -> tuple[LMEncoded, LMEncoded | None, BlockStats]:
    """(train, held-out or None, stats): the last `held_out` blocks are held out when given.
    The first `decode_held_out` held-out blocks keep their text (prompts for samples)."""
    stream, documents = token_stream(tokenizer, records)
    blocks = cut_blocks(stream, size)
    stats = BlockStats(documents, len(stream), len(blocks), len(stream) - len(blocks) * size)
    if held_out is not None and len(blocks) <= held_out:
        raise DataError(f"{len(blocks)} blocks of {size} tokens, and data.eval_size holds out "
                        f"{held_out}: nothing would train; lower data.eval_size or model.max_length")
    if not blocks:
        raise DataError(f"the text has {len(stream)} tokens, not one block of {size} "
                        "(lower model.max_length)")
    train = blocks[: len(blocks) - (held_out or 0)]
    held = blocks[len(train):]
    return (LMEncoded(train, [list(b) for b in train]),
            held_out_blocks(tokenizer, held, decode_held_out) if held else None, stats)


def held_out_blocks(tokenizer, blocks: list[list[int]], decode: int) -> LMEncoded:
    """Held-out blocks; the first `decode` keep their text, the prompts for samples."""
    texts = [PlainText(tokenizer.decode(b), f"held-out block {i}")
             for i, b in enumerate(blocks[:decode])]
    return LMEncoded(blocks, [list(b) for b in blocks], texts)
