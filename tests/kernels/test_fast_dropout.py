"""FastDropout: the rate, the scale, gradients through the same mask, seeding, the swap."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tunelab.kernels.fast_dropout import FastDropout, use_fast_dropout


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_rate_and_scale(p):
    torch.manual_seed(0)
    y = FastDropout(p)(torch.ones(600_001))
    dropped = (y == 0).float().mean().item()
    assert dropped == pytest.approx(p, abs=0.003)
    values = y.unique().tolist()
    assert values[0] == 0.0 and values[1:] == [pytest.approx(1 / (1 - p))]
    # consecutive positions come from different lanes: no pattern repeats every 3 or 4
    d = (y == 0).float()
    assert (d[:-3] * d[3:]).mean().item() == pytest.approx(p * p, abs=0.003)
    assert (d[:-4] * d[4:]).mean().item() == pytest.approx(p * p, abs=0.003)


def test_gradient_uses_the_same_mask_and_eval_is_identity():
    torch.manual_seed(1)
    layer = FastDropout(0.3)
    x = torch.randn(7, 11, requires_grad=True)
    y = layer(x)
    y.sum().backward()
    kept = y != 0
    torch.testing.assert_close(x.grad, kept.float() / 0.7)
    layer.eval()
    assert torch.equal(layer(x), x)


def test_same_seed_same_mask():
    x = torch.ones(5, 100)
    masks = []
    for _ in range(2):
        torch.manual_seed(3)
        masks.append(FastDropout(0.2)(x) == 0)
    assert torch.equal(*masks)


def test_swap_keeps_p_and_replaces_every_dropout():
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.2), nn.Sequential(nn.Dropout(0.1)))
    assert use_fast_dropout(model) == 2
    assert [type(m) for m in model.modules()].count(nn.Dropout) == 0
    assert [m.p for m in model.modules() if isinstance(m, FastDropout)] == [0.2, 0.1]
