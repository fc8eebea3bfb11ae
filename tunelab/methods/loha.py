"""LoHa (Hyeon-Woo et al., 2022, FedPara; LyCORIS): the update is the elementwise (Hadamard)
product of two low-rank matrices, so rank r factors reach rank up to r^2.

    dW = alpha / r * (W1a @ W1b) * (W2a @ W2b)      W1a, W2a: (out, r); W1b, W2b: (r, in)

W2b starts at 0, so the model starts as the base. Names (hada_w1_a ...), init and math are
peft's LoHa; nn.Linear layers only, as in peft.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from tunelab.methods.lycoris import LycorisConfig, LycorisLinear, LycorisMethod


class LohaConfig(LycorisConfig):
    name: Literal["loha"] = "loha"


class HadamardProduct(torch.autograd.Function):
    """(w1a @ w1b) * (w2a @ w2b), recomputing the two (out, in) products in the backward pass
    instead of keeping them (as peft does): saves two weight-sized tensors per layer."""

    @staticmethod
    def forward(ctx, w1a, w1b, w2a, w2b):
        ctx.save_for_backward(w1a, w1b, w2a, w2b)
        return (w1a @ w1b) * (w2a @ w2b)

    @staticmethod
    def backward(ctx, grad):
        w1a, w1b, w2a, w2b = ctx.saved_tensors
        g1 = grad * (w2a @ w2b)  # d/d(w1a @ w1b)
        g2 = grad * (w1a @ w1b)
        return g1 @ w1b.T, w1a.T @ g1, g2 @ w2b.T, w2a.T @ g2


class LohaLinear(LycorisLinear):
    def __init__(self, base: nn.Module, cfg: LycorisConfig):
        super().__init__(base, cfg)
        out_f, in_f, r = self.out_features, self.in_features, cfg.r
        self.hada_w1_a, self.hada_w1_b = self.new_parameter(out_f, r), self.new_parameter(r, in_f)
        self.hada_w2_a, self.hada_w2_b = self.new_parameter(out_f, r), self.new_parameter(r, in_f)
        for p in (self.hada_w1_a, self.hada_w1_b, self.hada_w2_a):
            nn.init.kaiming_uniform_(p, a=math.sqrt(5))
        nn.init.zeros_(self.hada_w2_b)

    def delta_weight(self) -> torch.Tensor:
        product = HadamardProduct.apply(self.hada_w1_a, self.hada_w1_b, self.hada_w2_a,
                                        self.hada_w2_b)
        return product * self.scaling  # (out, in)


class LohaMethod(LycorisMethod[LohaConfig]):
    name = "loha"
    config_cls = LohaConfig
    peft_type = "LOHA"
    layer_cls = LohaLinear
