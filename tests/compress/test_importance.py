"""Measured importance (tunelab/compress/importance.py): a head, neuron or layer that cannot
change the output scores zero and is the first to go; scores are per-example |dL/dxi| (the
batch size does not change them) and L2-normalised per layer."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from test_prune_surgery import tiny_llama

from tunelab.compress.importance import score
from tunelab.compress.prune import head_plan, least
from tunelab.models.prune import head_layout


class Tokens:
    """Encoded data: token sequences of different lengths."""

    def __init__(self, n: int, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.rows = [torch.randint(0, 40, (int(torch.randint(4, 10, (1,), generator=g)),),
                                   generator=g) for _ in range(n)]

    def __len__(self) -> int:
        return len(self.rows)

    def lengths(self) -> list[int]:
        return [len(r) for r in self.rows]


class NextToken:
    """A causal LM task: padded batches, summed next-token cross-entropy."""

    @staticmethod
    def collate(data: Tokens, index: list[int]) -> dict[str, torch.Tensor]:
        width = max(len(data.rows[i]) for i in index)
        ids = torch.zeros(len(index), width, dtype=torch.long)
        labels = torch.full((len(index), width), -100)
        for row, i in enumerate(index):
            ids[row, :len(data.rows[i])] = data.rows[i]
            labels[row, :len(data.rows[i])] = data.rows[i]
        return {"input_ids": ids, "attention_mask": (labels != -100).long(), "labels": labels}

    @staticmethod
    def loss_sum(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return F.cross_entropy(logits[:, :-1].flatten(0, 1), batch["labels"][:, 1:].flatten(),
                               reduction="sum", ignore_index=-100)


def test_dead_head_scores_zero_and_goes_first() -> None:
    model = tiny_llama(kv_heads=2)  # heads 0,1 share KV group 0; heads 2,3 group 1
    d = model.config.head_dim
    with torch.no_grad():  # head 1 of layer 0 and head 2 of layer 1 are never read
        model.model.layers[0].self_attn.o_proj.weight[:, 1 * d:2 * d] = 0
        model.model.layers[1].self_attn.o_proj.weight[:, 2 * d:3 * d] = 0
    s = score(model, NextToken(), Tokens(12), examples=12, batch_size=4, heads=4, ffn=False,
              layers=False)
    assert s.heads[0][1] == 0 and s.heads[1][2] == 0
    assert all(v > 0 for i, layer in enumerate(s.heads) for h, v in enumerate(layer)
               if (i, h) not in ((0, 1), (1, 2)))
    for layer in s.heads:
        assert abs(sum(v * v for v in layer) - 1) < 1e-6  # L2-normalised per layer
    plan = head_plan(s.heads, head_layout(model.config), 1)  # one head from each KV group
    assert plan[0].count(1) == 1 and plan[1].count(2) == 1  # the zeroed heads are removed
    assert [h // 2 for h in plan[0]] == [0, 1] and [h // 2 for h in plan[1]] == [0, 1]


def test_scores_are_per_example_not_per_batch() -> None:
    """|dL/dxi| summed per example: batches of 1 and of 6 give the same scores (a per-batch
    absolute value would let examples cancel and differ)."""
    model, data = tiny_llama(), Tokens(12, seed=3)
    one = score(model, NextToken(), data, 12, 1, heads=4, ffn=True, layers=False)
    six = score(model, NextToken(), data, 12, 6, heads=4, ffn=True, layers=False)
    torch.testing.assert_close(torch.tensor(one.heads), torch.tensor(six.heads))
    torch.testing.assert_close(torch.tensor(one.ffn), torch.tensor(six.ffn))
    assert abs(one.base_loss - six.base_loss) < 1e-5
    assert all(p.requires_grad for p in model.parameters())  # left as it was


def test_dead_neuron_and_identity_layer_go_first() -> None:
    model = tiny_llama()
    with torch.no_grad():
        model.model.layers[0].mlp.down_proj.weight[:, 7] = 0  # neuron 7 of layer 0 unread
        layer = model.model.layers[1]  # layer 1 adds nothing to its input: an identity
        layer.self_attn.o_proj.weight.zero_()
        layer.mlp.down_proj.weight.zero_()
    s = score(model, NextToken(), Tokens(10), 8, 4, heads=None, ffn=True, layers=True)
    assert s.examples == 8 and s.heads is None
    assert s.ffn[0][7] == 0 and least(s.ffn[0], 1) == [7]
    assert abs(s.layers[1]) < 1e-5 and s.layers[0] > 1e-3
    assert least(s.layers, 1) == [1]
