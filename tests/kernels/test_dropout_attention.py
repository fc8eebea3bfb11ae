"""dropout_attention: SDPA's numbers without dropout, the dropout rate and scale on attention
weights, masked keys, the SDPA fallbacks, and the switch a training run makes."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from transformers import AutoModelForSequenceClassification
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from tunelab.kernels.dropout_attention import (
    NAME,
    dropout_attention,
    use_dropout_attention,
)


def encoder(model_dir) -> nn.Module:
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=2)


def batch(padded: bool = True) -> dict[str, torch.Tensor]:
    """Three examples; padded: two of them shorter (else no mask reaches attention)."""
    ids = torch.randint(1000, 2000, (3, 9), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(3, 9, dtype=torch.long)
    if padded:
        mask[1, 6:] = 0
        mask[2, 3:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 1, 1])}


def loss_and_grads(model: nn.Module, padded: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
    model.zero_grad()
    out = model(**batch(padded))
    out.loss.backward()
    return out.loss.detach(), [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("padded", [True, False])
def test_training_forward_and_backward_match_sdpa_when_nothing_is_dropped(tiny_model_dir, padded):
    """p = 1e-9 takes the new path (dropout > 0) but keeps every weight (threshold -32768)."""
    model = encoder(tiny_model_dir)
    for name, module in model.named_modules():
        if isinstance(module, nn.Dropout):
            module.p = 1e-9 if name.endswith("attention.self.dropout") else 0.0
    model.train()
    assert use_dropout_attention(model) == 1
    loss, grads = loss_and_grads(model, padded)
    model.set_attn_implementation("sdpa")
    sdpa_loss, sdpa_grads = loss_and_grads(model, padded)
    torch.testing.assert_close(loss, sdpa_loss, atol=1e-6, rtol=1e-6)
    for g, ref in zip(grads, sdpa_grads):
        torch.testing.assert_close(g, ref, atol=1e-6, rtol=1e-5)


def test_weights_dropped_at_rate_p_kept_ones_rescaled_and_masked_keys_get_none():
    torch.manual_seed(0)
    b, h, lk, p = 4, 3, 50, 0.25
    q = torch.zeros(b, h, 8, 16)
    k = torch.zeros(b, h, lk, 16)  # equal scores: each kept weight is 1 / live keys
    v = torch.eye(lk).expand(b, h, lk, lk)  # value rows one-hot: the output row is the weights
    mask = torch.ones(b, 1, 8, lk, dtype=torch.bool)
    mask[..., 40:] = False  # the last 10 keys are padding
    out, weights = dropout_attention(nn.Module(), q, k, v, mask, dropout=p)
    assert weights is None and out.shape == (b, 8, h, lk)
    assert torch.all(out[..., 40:] == 0)
    live = out[..., :40]
    dropped = (live == 0).float().mean().item()
    assert dropped == pytest.approx(p, abs=0.02)
    assert live[live != 0].unique().tolist() == [pytest.approx(1 / 40 / (1 - p))]


def test_sdpa_runs_without_dropout_and_for_causal_attention_without_a_mask():
    q, k, v = (torch.randn(2, 2, 5, 8, generator=torch.Generator().manual_seed(i))
               for i in range(3))
    causal = nn.Module()
    causal.is_causal = True
    for module, p in ((nn.Module(), 0.0), (causal, 0.3)):
        torch.manual_seed(4)
        ours, _ = dropout_attention(module, q, k, v, None, dropout=p)
        torch.manual_seed(4)
        ref, _ = sdpa_attention_forward(module, q, k, v, None, dropout=p)
        assert torch.equal(ours, ref)


def test_switch_saves_nothing_and_leaves_eval_outputs_alone(tiny_model_dir, tmp_path):
    model = encoder(tiny_model_dir).eval()
    ref = model(**batch()).logits
    assert use_dropout_attention(model) == 1 and model.config._attn_implementation == NAME
    torch.testing.assert_close(model(**batch()).logits, ref, atol=0, rtol=0)
    model.save_pretrained(tmp_path)
    assert NAME not in json.dumps(json.loads((tmp_path / "config.json").read_text()))
    assert use_dropout_attention(model) == 0  # already switched
    assert use_dropout_attention(nn.Linear(2, 2)) == 0


def test_every_task_model_of_a_multitask_model_switches(tiny_model_dir):
    models = nn.ModuleDict({"a": encoder(tiny_model_dir), "b": encoder(tiny_model_dir)})
    assert use_dropout_attention(models) == 2
    assert {m.config._attn_implementation for m in models.values()} == {NAME}
