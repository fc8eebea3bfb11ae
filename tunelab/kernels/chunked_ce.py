"""Output layer + cross-entropy a chunk of positions at a time, for large vocabularies.

The plain path materialises (N, V) logits, their fp32 copy and the softmax gradient: with a
49k vocabulary that is 0.6 MB per supervised token, often the largest tensor in a step. Here
each chunk's logits live only inside the forward, which also computes the gradients for the
hidden states (and the output weight when it trains); backward just scales them. Same
numbers as `F.cross_entropy(hidden @ W.T + b, targets, reduction="sum")`.
"""

from __future__ import annotations

import torch
from torch import nn


class _ChunkedLinearCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                targets: torch.Tensor, chunk: int) -> torch.Tensor:
        # hidden (N, H), weight (V, H), bias (V,) or None, targets (N,) -> summed loss ()
        needs_h, needs_w = hidden.requires_grad, weight.requires_grad
        needs_b = bias is not None and bias.requires_grad
        grad_h = torch.empty_like(hidden) if needs_h else None
        grad_w = torch.zeros_like(weight, dtype=torch.float32) if needs_w else None
        grad_b = torch.zeros_like(bias, dtype=torch.float32) if needs_b else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, hidden.shape[0], chunk):
            h, t = hidden[start:start + chunk], targets[start:start + chunk]  # (c, H), (c,)
            logits = nn.functional.linear(h, weight, bias).float()  # (c, V)
            lse = logits.logsumexp(-1)  # (c,)
            total += (lse - logits.gather(1, t[:, None]).squeeze(1)).sum()
            if not (needs_h or needs_w or needs_b):
                continue
            g = logits.sub_(lse[:, None]).exp_()  # softmax, in place: (c, V)
            g[torch.arange(len(t), device=g.device), t] -= 1.0  # d loss / d logits
            if needs_b:
                grad_b += g.sum(0)
            g = g.to(h.dtype)
            if needs_h:
                grad_h[start:start + chunk] = g @ weight.to(h.dtype)  # (c, H)
            if needs_w:
                grad_w += (g.T @ h).float()  # (V, H)
        ctx.save_for_backward(*(x for x in (grad_h, grad_w, grad_b) if x is not None))
        ctx.which = (needs_h, needs_w, needs_b)
        return total

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        saved = iter(ctx.saved_tensors)
        grads = [next(saved) * grad_out if need else None for need in ctx.which]
        return grads[0], grads[1], grads[2], None, None


def chunked_linear_cross_entropy(hidden: torch.Tensor, layer: nn.Module, targets: torch.Tensor,
                                 chunk: int) -> torch.Tensor:
    """Summed cross-entropy of `layer(hidden)` against `targets`, `chunk` rows at a time."""
    return _ChunkedLinearCE.apply(hidden, layer.weight, layer.bias, targets, chunk)
