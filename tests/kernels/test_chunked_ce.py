"""Chunked output layer + cross-entropy: same loss and gradients as the plain path."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tunelab.config import validate
from tunelab.errors import ConfigError
from tunelab.kernels.chunked_ce import chunked_linear_cross_entropy


@pytest.mark.parametrize("train_head,bias", [(False, False), (True, False), (True, True)])
@pytest.mark.parametrize("chunk", [1, 7, 64])
def test_loss_and_gradients_match_the_plain_path(chunk, train_head, bias):
    torch.manual_seed(0)
    head = nn.Linear(16, 50, bias=bias).requires_grad_(train_head)
    hidden = torch.randn(23, 16, requires_grad=True)
    targets = torch.randint(0, 50, (23,))
    plain = F.cross_entropy(head(hidden).float(), targets, reduction="sum")
    (plain * 0.5).backward()
    want = [hidden.grad.clone()] + [p.grad.clone() for p in head.parameters() if p.requires_grad]
    hidden.grad = None
    head.zero_grad(set_to_none=True)
    chunked = chunked_linear_cross_entropy(hidden, head, targets, chunk)
    (chunked * 0.5).backward()
    got = [hidden.grad] + [p.grad for p in head.parameters() if p.requires_grad]
    assert chunked.item() == pytest.approx(plain.item(), rel=1e-5)
    assert len(got) == 1 + train_head * (1 + bias)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)


def test_no_gradient_work_when_nothing_trains():
    head = nn.Linear(8, 30).requires_grad_(False)
    loss = chunked_linear_cross_entropy(torch.randn(5, 8), head, torch.arange(5), 2)
    assert not loss.requires_grad and loss.item() > 0


def test_classification_runs_reject_the_option():
    with pytest.raises(ConfigError, match="train.loss_chunk_size: only causal_lm runs"):
        validate({"model": {"name": "minilm"}, "data": {"train": "sst2"},
                  "train": {"loss_chunk_size": 128}, "output_dir": "x"})


@pytest.mark.parametrize("method", ["full", "lora"])
def test_a_run_with_loss_chunks_trains_like_one_without(tmp_path, method):
    import json

    from sft_fixtures import tiny_llama_dir
    from tunelab.recipes.run import train

    rows = [{"instruction": f"say {w}", "input": "", "output": f"{w} and {w} again"}
            for w in ("one", "fox", "sea", "sky", "hat", "cup")] * 3
    (tmp_path / "d.json").write_text(json.dumps(rows))
    model = tiny_llama_dir(tmp_path / "llama")
    finals = []
    for chunk in (None, 5):
        tree = {"task": "causal_lm", "model": {"name": str(model), "max_length": 64},
                "data": {"path": str(tmp_path / "d.json"), "eval_size": 4},
                "method": {"name": method},
                "train": {"batch_size": 4, "lr": 1e-2, "max_steps": 8, "warmup_ratio": 0.0,
                          "loss_chunk_size": chunk},
                "output_dir": str(tmp_path / f"run-{chunk}")}
        s = train(validate(tree), log=lambda _: None)
        assert s["final_dev"]["loss"] < s["initial_dev"]["loss"]
        finals.append(s["final_dev"]["loss"])
    assert finals[1] == pytest.approx(finals[0], abs=1e-4)
