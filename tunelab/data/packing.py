"""Packed classification batches: a random batch laid end to end in a few rows.

Padding a random batch of short sentences to its longest member triples the work on SST-2.
Length bucketing removes the padding by giving each batch sentences of one length, but that
changes the batches the optimizer sees: at lr 5e-4 it cost LoRA on SST-2 2.6 points over 6
seeds, at 1e-3 0.3 +- 0.25 over 10 (BENCHMARKS.md, "Length bucketing and accuracy"). Packing
keeps the random batch and drops the padding instead. First-fit decreasing puts the
examples into rows as wide as the longest one. Each example restarts its position ids, and
a block-diagonal attention mask keeps attention inside each example, so every example's
outputs equal its padded ones. The head then reads each example's first token where it
lies in its row (`firsts`, used by tunelab.kernels.first_token); a decoder classifier reads
its last token instead, and attention is causal within each example (`lasts`,
tunelab.kernels.last_token).
"""

from __future__ import annotations

import torch

from tunelab.data.batching import Encoded


def pack_rows(lengths: list[int]) -> list[list[int]]:
    """Positions into `lengths`, one list per row, by first-fit decreasing into rows as wide
    as the longest length; deterministic (ties keep their order)."""
    width = max(lengths)
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        row = next((r for r, free in enumerate(room) if free >= lengths[i]), None)
        if row is None:
            rows.append([])
            room.append(width)
            row = len(rows) - 1
        rows[row].append(i)
        room[row] -= lengths[i]
    return rows


def pack(data: Encoded, index: list[int], pad_id: int, causal: bool = False
         ) -> dict[str, torch.Tensor]:
    """input_ids, position_ids, token_type_ids (R, W); attention_mask (R, 1, W, W), True
    where a query may attend (its own example; padding attends to padding, so no row is
    empty); labels and firsts (B,): each example's label and the flat position
    (row * W + offset) of its first token, and example_ids (B,) which example each is (what
    per-example data such as a teacher's cached outputs is looked up by), examples in the order
    the rows hold them. causal (decoder classifiers, tunelab.kernels.last_token): a query
    attends only to its example's earlier tokens, `lasts` replaces `firsts` (each example's
    last token that is not pad_id, the one transformers pools), and token_type_ids is left out
    unless the tokenizer gave them."""
    seqs = [data.input_ids[i] for i in index]
    rows = pack_rows([len(s) for s in seqs])
    width = max(sum(len(seqs[j]) for j in row) for row in rows)
    shape = (len(rows), width)
    ids = torch.full(shape, pad_id, dtype=torch.long)
    positions = torch.zeros(shape, dtype=torch.long)
    segments = torch.zeros(shape, dtype=torch.long)  # 0: padding; k: the row's k-th example
    types = torch.zeros(shape, dtype=torch.long)
    labels, read_at, order = [], [], []  # read_at: where the head reads each example
    for r, row in enumerate(rows):
        start = 0
        for k, j in enumerate(row, 1):
            n = len(seqs[j])
            ids[r, start:start + n] = torch.tensor(seqs[j])
            positions[r, start:start + n] = torch.arange(n)
            segments[r, start:start + n] = k
            if data.token_type_ids is not None:
                types[r, start:start + n] = torch.tensor(data.token_type_ids[index[j]])
            labels.append(data.labels[index[j]])
            order.append(index[j])
            real = [k for k, t in enumerate(seqs[j]) if t != pad_id] if causal else [0]
            read_at.append(r * width + start + (real[-1] if real else 0))
            start += n
    mask = segments[:, None, :, None] == segments[:, None, None, :]  # (R, 1, W, W)
    if causal:  # key position <= query position
        mask &= torch.ones(width, width, dtype=torch.bool).tril()
    out = {"input_ids": ids, "position_ids": positions, "token_type_ids": types,
           "attention_mask": mask, "labels": torch.tensor(labels),
           "lasts" if causal else "firsts": torch.tensor(read_at),
           "example_ids": torch.tensor(order)}
    if causal and data.token_type_ids is None:
        del out["token_type_ids"]
    return out
