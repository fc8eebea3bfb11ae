"""Tokenised examples, length-bucketed batch plans, and padding collation.

Bucketing sorts examples by length inside large shuffled windows, so a batch holds
examples of similar length and almost no compute goes to padding; the batch order is
shuffled again so training still sees a random mix. Everything is a function of
(seed, epoch), which is what lets --resume reproduce an uninterrupted run exactly.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

BUCKET_WINDOW = 50  # batches per sorting window


@dataclass
class Encoded:
    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None
    labels: list[int]

    def __len__(self) -> int:
        return len(self.input_ids)

    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.input_ids]


def encode(tokenizer, texts: list[str], pairs: list[str] | None, labels: list[int],
           max_length: int) -> Encoded:
    out = tokenizer(texts, pairs, truncation=True, max_length=max_length)
    return Encoded(out["input_ids"], out.get("token_type_ids"), labels)


def plan_batches(lengths: list[int], batch_size: int, seed: int, epoch: int,
                 bucket: bool) -> list[list[int]]:
    """Index lists, one per batch, for this epoch; deterministic in (seed, epoch)."""
    rng = random.Random(seed * 100_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    if not bucket:
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    batches: list[list[int]] = []
    window = batch_size * BUCKET_WINDOW
    for start in range(0, len(order), window):
        chunk = sorted(order[start:start + window], key=lengths.__getitem__)
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def collate(data: Encoded, index: list[int], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad to the longest example in the batch: input_ids, attention_mask, labels (B, T)."""
    seqs = [data.input_ids[i] for i in index]
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
    batch = {"input_ids": ids, "attention_mask": mask,
             "labels": torch.tensor([data.labels[i] for i in index])}
    if data.token_type_ids is not None:
        types = torch.zeros_like(ids)
        for row, i in enumerate(index):
            types[row, : len(data.token_type_ids[i])] = torch.tensor(data.token_type_ids[i])
        batch["token_type_ids"] = types
    return batch
