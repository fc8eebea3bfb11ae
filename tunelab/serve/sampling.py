"""Choosing each row's next token by its own request's settings, and its logprobs."""

from __future__ import annotations

from typing import Any

import torch

from tunelab.serve.protocol import TokenLogprob
from tunelab.serve.sequence import Sequence


def next_tokens(logits: torch.Tensor, seqs: list[Sequence], tokenizer: Any
                ) -> list[tuple[int, TokenLogprob | None]]:
    """logits: (B, V), row i for seqs[i]. Greedy at temperature 0 (argmax, as transformers'
    generate), else a draw from the tempered, top-p-truncated distribution with the
    sequence's own generator. Logprobs are the model's (untempered) log-probabilities."""
    logits = logits.float()
    wants = [s.request.logprobs is not None for s in seqs]
    logprobs = torch.log_softmax(logits, -1) if any(wants) else None
    out: list[tuple[int, TokenLogprob | None]] = []
    for i, seq in enumerate(seqs):
        token = _choose(logits[i], seq)
        lp = None
        if logprobs is not None and wants[i]:
            lp = _logprob(logprobs[i], token, seq.request.logprobs or 0, tokenizer)
        out.append((token, lp))
    return out


def _choose(row: torch.Tensor, seq: Sequence) -> int:
    # row: (V,)
    r = seq.request
    if r.temperature == 0:
        return int(row.argmax())
    probs = torch.softmax(row / r.temperature, -1)
    if r.top_p < 1.0:
        sorted_p, order = probs.sort(descending=True)
        # keep the smallest set whose mass reaches top_p (the first token always stays)
        drop = sorted_p.cumsum(0) - sorted_p >= r.top_p
        sorted_p[drop] = 0.0
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_p)
    return int(torch.multinomial(probs, 1, generator=seq.generator))


def _logprob(row: torch.Tensor, token: int, k: int, tokenizer: Any) -> TokenLogprob:
    # row: (V,) log-probabilities
    top = []
    if k > 0:
        values, ids = row.topk(k)
        top = [(tokenizer.decode([int(t)]), float(v)) for v, t in zip(values, ids)]
    return TokenLogprob(tokenizer.decode([token]), float(row[token]), top)
