"""varlen_attention: packed rows attend per example exactly as each example alone (forward
and gradients, decoder and encoder), build no T x T tensor, and packing names its fallback."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import BertConfig, BertModel, LlamaConfig, LlamaForCausalLM

from tunelab.data.render import LMEncoded
from tunelab.kernels.varlen_attention import (
    NAME,
    block_mask,
    cu_seq_lens,
    runs_varlen,
    use_varlen_attention,
    varlen_attention,
    varlen_blocker,
    varlen_inputs,
)
from tunelab.tasks.causal_lm import CausalLMTask, pack_batch, pad_batch

LENGTHS = [5, 11, 1, 8, 3]


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    """2 layers, hidden 32, 4 query heads sharing 2 key-value heads (as SmolLM2 shares 3)."""
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048)
    return LlamaForCausalLM(cfg).eval()


def tiny_bert(seed: int = 0) -> BertModel:
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                     num_attention_heads=4, max_position_embeddings=64,
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return BertModel(cfg, add_pooling_layer=False).eval()


def lm_data(lengths: list[int], seed: int = 1) -> LMEncoded:
    g = torch.Generator().manual_seed(seed)
    ids = [torch.randint(1, 64, (n,), generator=g).tolist() for n in lengths]
    return LMEncoded(ids, [list(x) for x in ids])


def grads(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_packed_llama_rows_equal_each_example_alone_forward_and_gradients():
    model = tiny_llama()
    seqs = [ids for ids in lm_data(LENGTHS).input_ids]
    model.zero_grad()
    alone = [model(input_ids=torch.tensor([s])).logits[0] for s in seqs]  # sdpa, unpacked
    sum(x.square().sum() for x in alone).backward()
    ref = grads(model)

    assert use_varlen_attention(model) == NAME and runs_varlen(model)
    model.zero_grad()
    ids = torch.tensor([[t for s in seqs for t in s]])
    pos = torch.tensor([[p for s in seqs for p in range(len(s))]])
    packed = model(input_ids=ids, position_ids=pos,
                   **varlen_inputs(cu_seq_lens(LENGTHS), 1, ids.shape[1])).logits[0]
    packed.square().sum().backward()
    torch.testing.assert_close(packed, torch.cat(alone), atol=1e-5, rtol=0)
    assert grads(model).keys() == ref.keys()
    for name, g in grads(model).items():
        torch.testing.assert_close(g, ref[name], atol=1e-5, rtol=1e-5, msg=name)


@pytest.mark.parametrize("checkpointing", [False, True])
def test_sft_loss_and_gradients_packed_equal_padded_per_example(checkpointing):
    """Through CausalLMTask: the packed loss of a batch is the sum of each example's loss alone,
    and so are the gradients, with the per-example path and with the dense fallback (and with
    gradient checkpointing, which re-runs attention in the backward pass)."""
    data = lm_data(LENGTHS)
    task = CausalLMTask(SimpleNamespace(pad_token_id=0, eos_token_id=0), None, packing=True)
    model = tiny_llama()
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()  # attention dropout is 0: training mode changes nothing but checkpointing
    model.zero_grad()
    alone = sum(task.loss_sum(model, pad_batch(data, [i], 0)) for i in range(len(LENGTHS)))
    alone.backward()
    ref = grads(model)
    batch = pack_batch(data, list(range(len(LENGTHS))))
    assert "attention_mask" not in batch and batch["cu_seq_lens"].tolist() == [0, 5, 16, 17, 25, 28]
    for varlen in (False, True):  # sdpa: the dense block mask; then per example
        if varlen:
            use_varlen_attention(model)
        model.zero_grad()
        loss = task.loss_sum(model, batch)
        loss.backward()
        torch.testing.assert_close(loss, alone, atol=1e-5, rtol=1e-6)
        for name, g in grads(model).items():
            torch.testing.assert_close(g, ref[name], atol=1e-5, rtol=1e-5, msg=name)


def test_packed_bert_rows_equal_each_example_alone_bidirectional():
    """Two rows of width 12, each ending in padding that forms an example of its own (what
    tunelab.data.packing lays out): every real token's output and the gradients equal the
    examples run one by one. In float64: the word-embedding gradient sums many tokens'
    terms, and in float32 another thread count's summation order alone moves it past 1e-5."""
    model = tiny_bert().double()
    rows = [[6, 4], [9]]  # example lengths per row; the rest of each row is padding
    width = 12
    g = torch.Generator().manual_seed(2)
    seqs = [[torch.randint(1, 64, (n,), generator=g) for n in row] for row in rows]
    model.zero_grad()
    alone = [model(input_ids=s[None]).last_hidden_state[0] for row in seqs for s in row]
    sum(x.square().sum() for x in alone).backward()
    ref = grads(model)

    ids = torch.zeros(len(rows), width, dtype=torch.long)
    pos = torch.zeros(len(rows), width, dtype=torch.long)
    lengths, real = [], torch.zeros(len(rows), width, dtype=torch.bool)
    for r, row in enumerate(seqs):
        start = 0
        for s in row:
            ids[r, start:start + len(s)] = s
            pos[r, start:start + len(s)] = torch.arange(len(s))
            real[r, start:start + len(s)] = True
            lengths.append(len(s))
            start += len(s)
        lengths.append(width - start)  # the row's padding
    assert use_varlen_attention(model) == NAME
    model.zero_grad()
    out = model(input_ids=ids, position_ids=pos,
                **varlen_inputs(cu_seq_lens(lengths), len(rows), width)).last_hidden_state
    packed = out[real]  # (real tokens, H), in row order
    packed.square().sum().backward()
    torch.testing.assert_close(packed, torch.cat(alone), atol=1e-5, rtol=0)
    for name, grad in grads(model).items():
        torch.testing.assert_close(grad, ref[name], atol=1e-5, rtol=1e-5, msg=name)


class LargestTensor(TorchDispatchMode):
    """Records the most elements any op's output had, forward and backward."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_a_long_packed_row_builds_no_t_by_t_tensor_while_the_fallback_does():
    """T = 1,024 tokens of 8 examples: no op of the forward or backward outputs T x T
    elements per example path (the largest is the vocabulary projection); the dense
    fallback, the positive control, builds several."""
    lengths = [128] * 8
    t = sum(lengths)
    data = lm_data(lengths)
    task = CausalLMTask(SimpleNamespace(pad_token_id=0, eos_token_id=0), None, packing=True)
    model = tiny_llama().train()
    largest = {}
    for path in ("dense", "varlen"):
        if path == "varlen":
            use_varlen_attention(model)
        batch = pack_batch(data, list(range(len(lengths))))
        with LargestTensor() as seen:
            task.loss_sum(model, batch).backward()
        largest[path] = seen.largest
    assert largest["dense"] >= t * t
    assert largest["varlen"] <= t * model.config.vocab_size < t * t // 10


def test_choose_batches_logs_the_attention_path_and_names_the_fallback():
    task = CausalLMTask(SimpleNamespace(pad_token_id=0, eos_token_id=0), None, packing=True)
    lines: list[str] = []
    model = tiny_llama()
    task.choose_batches(model, None, lines.append)
    assert lines == [("attention: packed rows attend per example (tunelab_varlen: each "
                      "example's own slice of the row, no T x T mask)")]
    assert model.config._attn_implementation == NAME

    eager = tiny_llama()
    eager.set_attn_implementation("eager")
    lines.clear()
    task.choose_batches(eager, None, lines.append)
    assert lines == [("attention: packed rows use a dense T x T block mask (fallback: "
                      "attention 'eager' does not read example boundaries)")]
    assert varlen_blocker(nn.Linear(2, 2)) == ("Linear does not run its attention through "
                                               "transformers' AttentionInterface")
    # the fallback is exact too
    data = lm_data(LENGTHS)
    with torch.no_grad():
        alone = sum(task.loss_sum(eager, pad_batch(data, [i], 0)) for i in range(len(LENGTHS)))
        packed = task.loss_sum(eager, pack_batch(data, list(range(len(LENGTHS)))))
    torch.testing.assert_close(packed, alone, atol=1e-5, rtol=1e-6)

    unpacked = CausalLMTask(SimpleNamespace(pad_token_id=0, eos_token_id=0), None, packing=False)
    lines.clear()
    fresh = tiny_llama()
    unpacked.choose_batches(fresh, None, lines.append)
    assert lines == [] and fresh.config._attn_implementation == "sdpa"


def test_padded_batches_and_generation_are_unchanged_after_the_switch():
    """Without boundaries the function is SDPA: padded forwards and greedy generation with a
    cache give what plain sdpa gives."""
    model = tiny_llama()
    ids = torch.tensor([[5, 6, 7, 8, 9], [0, 0, 3, 4, 5]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]])
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask).logits
        ref_gen = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6,
                                 do_sample=False, pad_token_id=0)
        use_varlen_attention(model)
        out = model(input_ids=ids, attention_mask=mask).logits
        gen = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6,
                             do_sample=False, pad_token_id=0)
    torch.testing.assert_close(out[mask.bool()], ref[mask.bool()], atol=1e-6, rtol=0)
    assert torch.equal(gen, ref_gen)


def test_boundaries_that_do_not_cut_the_rows_are_refused():
    q = torch.randn(2, 4, 6, 8)
    module = SimpleNamespace(is_causal=True, num_key_value_groups=1)
    for bad in ([0, 4, 12], [0, 5, 12], [0, 6, 6, 12], [0, 6, 11]):
        with pytest.raises(ValueError, match="do not cut 2 row"):
            varlen_attention(module, q, q, q, None,
                             cu_seq_lens_q=torch.tensor(bad, dtype=torch.int32))
    with pytest.raises(ValueError, match="packed rows take no cache"):
        varlen_attention(module, q, torch.randn(2, 4, 7, 8), torch.randn(2, 4, 7, 8), None,
                         cu_seq_lens_q=torch.tensor([0, 12], dtype=torch.int32))
    out, _ = varlen_attention(module, q, q, q, None,
                              cu_seq_lens_q=torch.tensor([0, 2, 6, 12], dtype=torch.int32))
    assert out.shape == (2, 6, 4, 8)


def test_block_mask_is_the_dense_fallback_of_the_same_boundaries():
    cu = cu_seq_lens([2, 1, 3])
    causal = block_mask(cu, 1, 6, causal=True)[0, 0].int().tolist()
    assert causal == [[1, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0], [0, 0, 1, 0, 0, 0],
                      [0, 0, 0, 1, 0, 0], [0, 0, 0, 1, 1, 0], [0, 0, 0, 1, 1, 1]]
    full = block_mask(cu_seq_lens([2, 1, 1, 2]), 2, 3, causal=False)
    assert full.shape == (2, 1, 3, 3)
    assert full[1, 0].int().tolist() == [[1, 0, 0], [0, 1, 1], [0, 1, 1]]
