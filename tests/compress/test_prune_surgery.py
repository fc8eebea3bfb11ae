"""Head and FFN surgery (tunelab/models/prune.py): the parameter count drops by exactly what
the removed rows and columns hold, the result equals the original with those units zeroed,
and it saves and reloads with plain transformers to the same logits."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tunelab.errors import ModelError
from tunelab.models.prune import parameter_count, prune_ffn, prune_heads

IDS = torch.tensor([[5, 9, 3, 17, 2, 11], [4, 4, 8, 1, 30, 6]])


def tiny_llama(kv_heads: int = 2, arch: str = "Llama"):
    """A 2-layer causal LM, hidden 32, 4 query heads of head_dim 8 (Qwen2: q/k/v biases and
    no head_dim in its config)."""
    import transformers

    torch.manual_seed(0)
    config = getattr(transformers, f"{arch}Config")(
        vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=kv_heads, max_position_embeddings=64)
    return getattr(transformers, f"{arch}ForCausalLM")(config).eval()


def tiny_bert_classifier():
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, num_labels=3)
    return BertForSequenceClassification(config).eval()


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=IDS).logits


def zero_heads(model, removed: dict[int, list[int]]) -> None:
    """What pruning must equal: the removed heads' o_proj columns zeroed (their output unread)."""
    d = model.config.hidden_size // model.config.num_attention_heads
    with torch.no_grad():
        for layer, heads in removed.items():
            for h in heads:
                model.model.layers[layer].self_attn.o_proj.weight[:, h * d:(h + 1) * d] = 0


def reloaded(model, tmp_path: Path, auto: str):
    import transformers

    model.save_pretrained(tmp_path)
    return getattr(transformers, auto).from_pretrained(tmp_path, dtype=torch.float32).eval()


@pytest.mark.parametrize("arch", ["Llama", "Qwen2"])
def test_gqa_heads_drop_exactly_their_rows_and_reload(tmp_path: Path, arch: str) -> None:
    model = tiny_llama(kv_heads=2, arch=arch)  # 4 query heads, 2 per KV group, head_dim 8
    before, c = parameter_count(model), model.config
    d, q_bias = c.hidden_size // c.num_attention_heads, model.model.layers[0].self_attn.q_proj.bias
    keep = {0: [0, 3], 1: [1, 2]}  # one query head per group in each layer
    expected_ref = tiny_llama(kv_heads=2, arch=arch)
    zero_heads(expected_ref, {0: [1, 2], 1: [0, 3]})
    prune_heads(model, keep)
    removed = c.num_hidden_layers * 2  # two heads per layer
    # q_proj rows (and their biases, Qwen2) and o_proj columns of each removed head
    per_head = d * c.hidden_size * 2 + (d if q_bias is not None else 0)
    assert before - parameter_count(model) == removed * per_head
    assert (model.config.num_attention_heads, model.config.num_key_value_heads) == (2, 2)
    assert model.config.head_dim == d  # stated, since hidden_size / heads no longer gives it
    torch.testing.assert_close(logits(model), logits(expected_ref))
    again = reloaded(model, tmp_path, "AutoModelForCausalLM")
    assert type(again) is type(model)
    assert parameter_count(again) == parameter_count(model)
    torch.testing.assert_close(logits(again), logits(model))


def test_mha_heads_take_their_keys_and_values(tmp_path: Path) -> None:
    model = tiny_llama(kv_heads=4)  # one query head per KV group
    before, c = parameter_count(model), model.config
    reference = tiny_llama(kv_heads=4)
    zero_heads(reference, {0: [1, 2], 1: [0, 3]})
    prune_heads(model, {0: [0, 3], 1: [1, 2]})
    # q, k, v rows and o columns of two heads in each of the two layers
    assert before - parameter_count(model) == 4 * c.head_dim * c.hidden_size * 4
    assert (model.config.num_attention_heads, model.config.num_key_value_heads) == (2, 2)
    torch.testing.assert_close(logits(model), logits(reference))
    torch.testing.assert_close(logits(reloaded(model, tmp_path, "AutoModelForCausalLM")),
                               logits(model))


def test_ffn_neurons_bert_and_llama(tmp_path: Path) -> None:
    bert = tiny_bert_classifier()
    reference = tiny_bert_classifier()
    before, h = parameter_count(bert), bert.config.hidden_size
    removed = {0: [0, 5, 63], 1: [10, 11, 12]}
    with torch.no_grad():
        for layer, neurons in removed.items():  # the neurons' outputs unread
            reference.bert.encoder.layer[layer].output.dense.weight[:, neurons] = 0
    prune_ffn(bert, {i: [j for j in range(64) if j not in r] for i, r in removed.items()})
    # per neuron: an intermediate.dense row and bias, an output.dense column
    assert before - parameter_count(bert) == 6 * (h + 1 + h)
    assert bert.config.intermediate_size == 61
    torch.testing.assert_close(logits(bert), logits(reference))
    torch.testing.assert_close(
        logits(reloaded(bert, tmp_path / "bert", "AutoModelForSequenceClassification")),
        logits(bert))

    llama = tiny_llama()
    before = parameter_count(llama)
    prune_ffn(llama, {0: list(range(0, 64, 2)), 1: list(range(32))})
    # per neuron: gate and up rows, a down column
    assert before - parameter_count(llama) == 2 * 32 * 3 * llama.config.hidden_size
    torch.testing.assert_close(logits(reloaded(llama, tmp_path / "llama", "AutoModelForCausalLM")),
                               logits(llama))


def test_bad_surgery_is_refused_with_the_reason() -> None:
    with pytest.raises(ModelError, match="head_dim.*Llama"):
        prune_heads(tiny_bert_classifier(), {0: [0]})
    model = tiny_llama()
    before = parameter_count(model)
    with pytest.raises(ModelError, match="layer 1 keeps \\[2, 0\\] query heads per KV group"):
        prune_heads(model, {0: [0, 2], 1: [0, 1]})  # layer 1: both of group 0, none of group 1
    assert parameter_count(model) == before  # refused before any layer was cut
    with pytest.raises(ModelError, match="3 attention heads.*LlamaConfig refuses.*divides"):
        prune_heads(tiny_llama(kv_heads=4), {0: [0, 1, 2], 1: [0, 1, 2]})  # 32 % 3 != 0
    with pytest.raises(ModelError, match="same count"):
        prune_ffn(tiny_llama(), {0: list(range(10)), 1: list(range(20))})
    with pytest.raises(ModelError, match="layer 0 keeps"):
        prune_ffn(tiny_llama(), {0: [64], 1: [1]})
