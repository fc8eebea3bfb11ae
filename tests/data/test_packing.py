"""Packed classification batches: random batches in a few rows, attention per example; the
loss and every gradient equal the padded batch's, and runs choose packing only where the
model reads packed rows right."""

from types import SimpleNamespace

import pytest
import torch
from conftest import tiny_config, with_lora_everywhere
from transformers import AutoTokenizer

from tunelab import methods
from tunelab.config import load_config, validate
from tunelab.data.batching import collate, encode
from tunelab.data.packing import pack, pack_rows
from tunelab.errors import ConfigError
from tunelab.kernels.dropout_attention import use_dropout_attention
from tunelab.kernels.first_token import first_token_only, packing_blocker
from tunelab.meta.config import load_meta_config
from tunelab.models import load_classifier, load_token_classifier
from tunelab.recipes.run import choose_batches, train
from tunelab.tasks.causal_lm import CausalLMTask
from tunelab.tasks.classification import ClassificationTask

TEXTS = ["a great movie", "terrible and boring from the first scene to the last one", "ok",
         "the plot was thin but the acting carried it", "fine", "not my kind of film at all",
         "a long slow and quite wonderful story about two brothers", "bad"]
PAIRS = ["yes", "no way", "it was", "a", "hmm", "the film", "I think so too", "no"]


def test_rows_hold_every_example_once_and_no_row_is_wider_than_the_longest():
    assert pack_rows([5, 3, 2, 4, 1]) == [[0], [3, 4], [1, 2]]  # first-fit decreasing
    lengths = [7, 1, 3, 3, 6, 2, 2, 5, 4, 1]
    rows = pack_rows(lengths)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= 7 for row in rows)
    assert len(rows) == 5  # 34 tokens in rows of 7: the fewest rows that hold them


def test_a_packed_batch_restarts_positions_and_attends_within_each_example(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    data = encode(tok, TEXTS, PAIRS, [0, 1, 0, 1, 1, 0, 1, 0], 64)
    index = [6, 2, 1, 5, 7]
    b = pack(data, index, tok.pad_token_id)
    rows, width = b["input_ids"].shape
    lengths = {i: len(data.input_ids[i]) for i in index}
    assert width == max(lengths.values()) and rows < len(index)
    flat = b["input_ids"].flatten()
    assert (flat[b["firsts"]] == tok.cls_token_id).all()
    assert b["position_ids"].flatten()[b["firsts"]].tolist() == [0] * len(index)
    # each example's ids, positions and token types sit unpadded from its first token on
    seen = []
    for first, label in zip(b["firsts"].tolist(), b["labels"].tolist()):
        i = next(i for i in index if i not in seen and data.labels[i] == label
                 and flat[first:first + lengths[i]].tolist() == data.input_ids[i])
        seen.append(i)
        n = lengths[i]
        assert b["position_ids"].flatten()[first:first + n].tolist() == list(range(n))
        assert b["token_type_ids"].flatten()[first:first + n].tolist() == data.token_type_ids[i]
        row, col = divmod(first, width)
        allowed = b["attention_mask"][row, 0, col]  # (W,): the keys this example's CLS sees
        assert allowed.nonzero().flatten().tolist() == list(range(col, col + n))
    assert sorted(seen) == sorted(index)
    assert b["attention_mask"].any(-1).all()  # padding attends to padding: no empty row


def _loss_and_grads(task, model, batch):
    model.zero_grad()
    loss = task.loss_sum(model, batch)
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()
                         if p.grad is not None}


@pytest.mark.parametrize("pairs", [None, PAIRS])
@pytest.mark.parametrize("attention", ["sdpa", "tunelab"])
def test_packed_loss_and_gradients_equal_the_padded_batch(tiny_model_dir, pairs, attention):
    torch.manual_seed(0)
    model = with_lora_everywhere(load_classifier(tiny_model_dir, ["neg", "pos"], dropout=0.0))
    if attention == "tunelab":
        use_dropout_attention(model)
    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    task = ClassificationTask(["neg", "pos"], 64, tok.pad_token_id)
    data = encode(tok, TEXTS, pairs, [0, 1, 0, 1, 1, 0, 1, 0], 64)
    index = list(range(len(TEXTS)))
    padded, padded_grads = _loss_and_grads(task, model, collate(data, index, tok.pad_token_id))
    task.packing = True
    packed_batch = task.collate(data, index)
    assert "firsts" in packed_batch and packed_batch["input_ids"].shape[0] < len(index)
    packed, packed_grads = _loss_and_grads(task, model, packed_batch)
    assert abs(packed - padded) < 1e-5 * len(index)
    assert set(packed_grads) == set(padded_grads) and len(padded_grads) > 10
    for name, grad in padded_grads.items():
        assert torch.allclose(packed_grads[name], grad, atol=1e-6, rtol=1e-4), name


def test_packed_training_batches_are_random_and_scoring_stays_padded(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    task = ClassificationTask(["neg", "pos"], 64, tok.pad_token_id)
    lengths = [3, 30, 4, 28, 5, 25, 6, 22] * 8
    bucketed = task.plan_batches(lengths, 8, seed=0, epoch=0, bucket=True)
    task.packing = True
    packed = task.plan_batches(lengths, 8, seed=0, epoch=0, bucket=True)
    spread = lambda plan: sum(max(lengths[i] for i in b) - min(lengths[i] for i in b)  # noqa: E731
                              for b in plan)
    assert sorted(sum(packed, [])) == list(range(len(lengths)))
    assert spread(packed) > 5 * spread(bucketed)  # mixed lengths in each batch
    model = load_classifier(tiny_model_dir, ["neg", "pos"], dropout=0.0).eval()
    data = encode(tok, TEXTS, None, [0, 1, 0, 1, 1, 0, 1, 0], 64)
    probs = task.predict(model, data, batch_size=4, device=torch.device("cpu")).probs
    with torch.no_grad():
        plain = model(**{k: v for k, v in collate(data, list(range(8)), tok.pad_token_id).items()
                         if k != "labels"}).logits.softmax(-1)
    assert torch.allclose(probs, plain, atol=1e-6)


def test_what_cannot_read_packed_rows_says_why(tiny_model_dir):
    model = load_classifier(tiny_model_dir, ["neg", "pos"], dropout=0.0)
    assert packing_blocker(model) is None
    assert "gradient checkpointing" in packing_blocker(model, gradient_checkpointing=True)
    model.set_attn_implementation("eager")
    assert "attention 'eager'" in packing_blocker(model)
    tagger = load_token_classifier(tiny_model_dir, ["O", "B-X"], dropout=0.0)
    assert "BertForTokenClassification is not a classifier" in packing_blocker(tagger)
    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    data = encode(tok, TEXTS, None, [0] * 8, 64)
    batch = pack(data, [0, 1, 2], tok.pad_token_id)
    with pytest.raises(RuntimeError, match="packed batches: BertForTokenClassification"):
        with first_token_only(tagger, batch["firsts"]):
            pass
    prompted = load_classifier(tiny_model_dir, ["neg", "pos"], dropout=0.0)
    cfg = load_config(None, ["model.name=minilm", "data.train=sst2", "method.name=prompt_tuning",
                             "method.num_virtual_tokens=4", "output_dir=/tmp/unused"])
    methods.apply(prompted, cfg.method)
    assert "virtual tokens" in packing_blocker(prompted)


def _logged_run(tree):
    lines: list[str] = []
    summary = train(validate(tree), overwrite=True, log=lines.append)
    return summary, lines


def test_runs_pack_where_they_can_and_insisting_elsewhere_is_a_clear_error(
        tiny_model_dir, tiny_data, tmp_path):
    """(test_train's learning test trains packed: the default for this classifier)"""
    tree = tiny_config(tiny_model_dir, tiny_data, tmp_path / "packed", max_steps=4)
    summary, lines = _logged_run(tree)
    assert "batches: random, packed into rows (no padding)" in lines and summary["steps"] == 4
    tree["train"]["gradient_checkpointing"] = True
    tree["output_dir"] = str(tmp_path / "gc")
    _, lines = _logged_run(tree)
    assert ("batches: sorted by length, padded (not packed: gradient checkpointing re-runs "
            "the last layer without the first-token cut)") in lines
    tree["data"]["packing"] = True
    with pytest.raises(ConfigError, match="data.packing: true, but gradient checkpointing"):
        _logged_run(tree)
    tree["data"]["packing"] = False
    tree["train"].update(gradient_checkpointing=False, bucket_by_length=False)
    _, lines = _logged_run(tree)
    assert "batches: random, padded" in lines


def test_packing_keys_elsewhere_are_refused_or_left_to_their_task(tiny_model_dir, tiny_data,
                                                                 tmp_path):
    tree = tiny_config(tiny_model_dir, tiny_data, tmp_path / "p")
    tree["data"]["packing"] = True
    tree["method"] = {"name": "prompt_tuning", "num_virtual_tokens": 4}
    with pytest.raises(ConfigError, match="data.packing: prompt_tuning prepends virtual tokens"):
        validate(tree)
    tree["data"]["packing"] = None  # the default: prompt methods train in padded batches
    validate(tree)
    tasks = {"a": {"data": {**tree["data"], "packing": False}}, "b": {"data": tree["data"]}}
    with pytest.raises(ConfigError, match="tasks.a.data.packing: multitask batches are not packed"):
        validate({"task": "multitask", "model": tree["model"], "tasks": tasks,
                  "method": {"name": "full"}, "output_dir": str(tmp_path / "m")})
    with pytest.raises(ConfigError, match="sources.1.packing: episodes are small padded batches"):
        load_meta_config(None, ["meta.sources=[{train: sst2}, {train: sst2, packing: true}]"])
    # a causal LM task keeps the data.packing its own setup chose
    sft = CausalLMTask(SimpleNamespace(pad_token_id=0), None, packing=True)
    choose_batches(validate(tiny_config(tiny_model_dir, tiny_data, tmp_path / "c")), sft,
                   load_classifier(tiny_model_dir, ["neg", "pos"], dropout=0.0), print)
    assert sft.packing is True
