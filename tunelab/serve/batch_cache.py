"""The KV cache of the running batch: one row per sequence, left-padded to a common length.

Continuous batching needs sequences to join and leave between decoding steps. Each layer's
keys and values are (B, heads, L, head_dim) tensors in a transformers DynamicCache; the mask
(B, L) marks which of the L positions of each row are real. Joining pads the shorter side on
the left, leaving selects rows, and columns that every row pads are trimmed away.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import DynamicCache

from tunelab.serve.protocol import ServeError


class BatchCache:
    def __init__(self) -> None:
        self.cache: DynamicCache | None = None
        self.mask = torch.zeros(0, 0, dtype=torch.long)  # (B, L): 1 where a row holds a token

    @property
    def rows(self) -> int:
        return self.mask.shape[0]

    def layers(self) -> list:
        """The cache's per-layer holders (keys, values: (B, H, L, D))."""
        assert self.cache is not None
        layers = self.cache.layers
        kinds = {type(layer).__name__ for layer in layers}
        if kinds != {"DynamicLayer"}:
            raise ServeError(f"serving batches needs a plain KV cache; this model uses "
                             f"{', '.join(sorted(kinds))} (sliding-window attention is not "
                             "supported yet)", code="unsupported_model")
        return layers

    def join(self, other: BatchCache) -> None:
        """Append `other`'s rows (a freshly prefilled batch) below this batch's rows."""
        if self.cache is None or self.rows == 0:
            self.cache, self.mask = other.cache, other.mask
            return
        length = max(self.mask.shape[1], other.mask.shape[1])
        for mine, theirs in zip(self.layers(), other.layers()):
            mine.keys = torch.cat([_pad_left(mine.keys, length), _pad_left(theirs.keys, length)])
            mine.values = torch.cat([_pad_left(mine.values, length),
                                     _pad_left(theirs.values, length)])
        self.mask = torch.cat([F.pad(self.mask, (length - self.mask.shape[1], 0)),
                               F.pad(other.mask, (length - other.mask.shape[1], 0))])

    def keep(self, rows: list[int]) -> None:
        """Keep only `rows` (in this order), then drop columns every kept row pads."""
        if not rows:
            self.cache, self.mask = None, torch.zeros(0, 0, dtype=torch.long)
            return
        index = torch.tensor(rows)
        self.mask = self.mask[index]
        pad = int((self.mask.cumsum(1) == 0).sum(1).min())  # leading zeros shared by all rows
        self.mask = self.mask[:, pad:]
        for layer in self.layers():
            layer.keys = layer.keys[index, :, pad:]
            layer.values = layer.values[index, :, pad:]

    def grow(self) -> torch.Tensor:
        """The mask for the next decoding step (one more real position per row)."""
        self.mask = F.pad(self.mask, (0, 1), value=1)
        return self.mask


def _pad_left(t: torch.Tensor, length: int) -> torch.Tensor:
    """(B, H, L, D) -> (B, H, length, D), zeros in front."""
    return F.pad(t, (0, 0, length - t.shape[2], 0))
