"""Causal LMs as sequence classifiers: a fresh `score` head read at the last real token.

A tiny random Llama (tests/sft_fixtures.py) with a byte-level BPE tokenizer stands in for
SmolLM2: the same transformers class (LlamaForSequenceClassification) and the same loading
code as `model.name: smollm2`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import toy_sentiment_files
from sft_fixtures import tiny_llama_dir, tiny_tokenizer

from tunelab.data.batching import collate, encode
from tunelab.data.packing import pack
from tunelab.kernels.dropout_attention import NAME as TUNELAB_ATTENTION
from tunelab.kernels.first_token import packing_blocker
from tunelab.kernels.last_token import last_real_positions, reads_last_token
from tunelab.models import load_classifier, load_tokenizer
from tunelab.tasks.classification import ClassificationTask

TEXTS = ["the quick brown fox", "hello", "one two three four five six seven eight",
         "the sea and the sky", "say hello world", "paris"]


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_llama_dir(tmp_path_factory.mktemp("llama"))


@pytest.fixture(scope="module")
def no_pad_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama whose tokenizer and config have no pad token (as SmolLM2's GGUF)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    root = tmp_path_factory.mktemp("llama-nopad")
    tok = tiny_tokenizer()
    tok.pad_token = None
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=256, eos_token_id=tok.eos_token_id,
                      bos_token_id=tok.bos_token_id, pad_token_id=None)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(root)
    tok.save_pretrained(root)
    return root


def classifier(path: Path):
    tokenizer = load_tokenizer(path)
    torch.manual_seed(1)
    model = load_classifier(path, ["neg", "pos"], pad_token_id=tokenizer.pad_token_id).eval()
    return model, tokenizer


def one_by_one(model, tokenizer) -> torch.Tensor:
    """(N, 2) logits of each text alone: no padding at all."""
    with torch.no_grad():
        return torch.cat([model(**tokenizer([t], return_tensors="pt")).logits for t in TEXTS])


def test_no_pad_token_gets_eos_as_pad_in_tokenizer_and_config(no_pad_llama_dir: Path) -> None:
    model, tokenizer = classifier(no_pad_llama_dir)
    assert tokenizer.pad_token_id == tokenizer.eos_token_id is not None
    assert model.config.pad_token_id == tokenizer.eos_token_id
    assert reads_last_token(model) and type(model).__name__ == "LlamaForSequenceClassification"
    # a batch of several padded rows: transformers refuses this without a pad id
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        assert model(**batch).logits.shape == (len(TEXTS), 2)


@pytest.mark.parametrize("side", ["right", "left"])
def test_pooled_position_is_the_last_real_token(no_pad_llama_dir: Path, side: str) -> None:
    model, tokenizer = classifier(no_pad_llama_dir)
    tokenizer.padding_side = side
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    lengths = batch["attention_mask"].sum(-1)
    width = batch["input_ids"].shape[1]
    want = lengths - 1 if side == "right" else torch.full_like(lengths, width - 1)
    assert torch.equal(last_real_positions(batch["input_ids"], model.config.pad_token_id), want)
    seen = {}
    model.score.register_forward_hook(lambda m, a, out: seen.update(all=out))
    with torch.no_grad():
        pooled = model(**batch).logits  # (B, 2)
    assert torch.equal(pooled, seen["all"][torch.arange(len(TEXTS)), want])
    # and that token's logits are each text's own, unpadded
    torch.testing.assert_close(pooled, one_by_one(model, tokenizer), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("attention", ["sdpa", TUNELAB_ATTENTION])
def test_packed_rows_give_the_padded_logits_and_gradients(llama_dir: Path, attention: str) -> None:
    model, tokenizer = classifier(llama_dir)
    model.set_attn_implementation(attention)  # training on CPU switches to tunelab's
    assert model.config._attn_implementation == attention and packing_blocker(model) is None
    data = encode(tokenizer, TEXTS, None, [0, 1, 0, 1, 1, 0], max_length=32)
    task = ClassificationTask(["neg", "pos"], 32, tokenizer.pad_token_id)
    task.packing, task.causal = True, True
    index = list(range(len(TEXTS)))
    packed = task.collate(data, index)
    assert "lasts" in packed and "firsts" not in packed and "token_type_ids" not in packed
    assert packed["input_ids"].shape[0] < len(TEXTS)  # really packed: fewer rows than texts
    padded = collate(data, packed["example_ids"].tolist(), tokenizer.pad_token_id)
    grads = []
    for batch in (packed, padded):
        model.zero_grad()
        logits = task.logits(model, batch)
        torch.nn.functional.cross_entropy(logits, batch["labels"]).backward()
        grads.append((logits.detach(), model.score.weight.grad.clone(),
                      model.model.layers[0].self_attn.q_proj.weight.grad.clone()))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_packed_causal_mask_stays_inside_each_example() -> None:
    from tunelab.data.batching import Encoded

    # the third example ends in the pad id (a tokenizer that pads with EOS and appends it)
    data = Encoded([[5, 6, 7, 1], [8, 9], [3, 0]], None, [0, 1, 0])
    out = pack(data, [0, 1, 2], pad_id=0, causal=True)
    assert out["input_ids"].tolist() == [[5, 6, 7, 1], [8, 9, 3, 0]]
    assert out["position_ids"].tolist() == [[0, 1, 2, 3], [0, 1, 0, 1]]
    mask = out["attention_mask"][:, 0].int().tolist()  # (R, W, W): causal, one example each
    assert mask[0] == [[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]]
    assert mask[1] == [[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]]
    # where transformers pools each one padded: 1 at (0, 3), 9 at (1, 1), 3 at (1, 2), not
    # the trailing pad id
    assert out["lasts"].tolist() == [3, 5, 6]
    assert "token_type_ids" not in out


@pytest.fixture(scope="module")
def lora_run(llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, list]:
    """LoRA (r 8 on the attention projections) + a fresh score head on the toy sentiment
    task, packed batches; (run dir, summary, log lines)."""
    from conftest import tiny_config

    from tunelab.config import validate
    from tunelab.recipes.run import train

    root = tmp_path_factory.mktemp("decoder-run")
    tree = tiny_config(llama_dir, toy_sentiment_files(root, dev=64), root / "run", max_steps=120,
                       lr=1e-2, eval_every=20, checkpoint_every=1000)
    tree["method"] = {"name": "lora", "r": 8, "alpha": 16,
                      "targets": ["q_proj", "k_proj", "v_proj", "o_proj"]}
    logs: list[str] = []
    summary = train(validate(tree), log=logs.append)
    return root / "run", summary, logs


def test_tiny_decoder_classifier_learns_the_toy_task(lora_run) -> None:
    _, summary, logs = lora_run
    assert "batches: random, packed into rows (no padding)" in logs
    assert "task head (trains fully): score" in logs
    assert summary["initial_dev"]["accuracy"] <= 0.6
    assert summary["final_dev"]["accuracy"] >= 0.75  # 64 dev examples, chance 0.5


def test_trained_run_predicts_through_tunelab_predict(lora_run, capsys) -> None:
    """`tunelab predict RUN` code: the adapter and the score head load on the base, and its
    labels score what the run's own evaluation scored."""
    from tunelab.commands.predict import predict
    from tunelab.runs.trained import load_trained

    run_dir, summary, _ = lora_run
    rows = [line.split("\t") for line in (run_dir.parent / "dev.tsv").read_text().splitlines()[1:]]
    out = predict(run_dir, [t for t, _ in rows], None)
    right = sum(label == gold for (label, _), (_, gold) in zip(out, rows))
    assert right / len(rows) == summary["final_dev"]["accuracy"]
    assert capsys.readouterr().out.splitlines()[0] == f"{out[0][0]}\t{out[0][1]:.4f}\t{rows[0][0]}"
    model, tokenizer, _ = load_trained(run_dir)
    assert model.config.pad_token_id == tokenizer.pad_token_id
    assert model.score.weight.abs().sum() > 0 and type(model).__name__.startswith("Llama")


def test_packing_refused_by_name_where_it_cannot_apply(llama_dir: Path) -> None:
    from types import SimpleNamespace

    from tunelab.errors import ConfigError

    model, tokenizer = classifier(llama_dir)
    model.set_attn_implementation("eager")
    why = "attention 'eager' does not take a boolean block mask"
    assert packing_blocker(model) == why
    task = ClassificationTask(["neg", "pos"], 32, tokenizer.pad_token_id)
    cfg = SimpleNamespace(data=SimpleNamespace(packing=True),
                          train=SimpleNamespace(gradient_checkpointing=False, bucket_by_length=True))
    with pytest.raises(ConfigError, match=f"data.packing: true, but {why}; set data.packing: false"):
        task.choose_batches(model, cfg, print)
    cfg.data.packing = None
    logs: list[str] = []
    task.choose_batches(model, cfg, logs.append)
    assert not task.packing and logs == [f"batches: sorted by length, padded (not packed: {why})"]


def test_decoder_token_classifier_learns_and_predicts(llama_dir: Path, tmp_path: Path) -> None:
    """LlamaForTokenClassification (transformers has one for Llama, Qwen2, Mistral, GPT-2...):
    the token-classification task runs on it unchanged. Each token sees only its left context."""
    from ner_fixtures import ner_config, toy_ner_files

    from tunelab.commands.predict import predict
    from tunelab.config import validate
    from tunelab.recipes.run import train

    tree = ner_config(llama_dir, toy_ner_files(tmp_path), tmp_path / "ner")
    summary = train(validate(tree), log=lambda _: None)
    assert summary["final_dev"]["f1"] >= summary["initial_dev"]["f1"] + 0.3
    found = predict(tmp_path / "ner", ["john smith visited paris today ."], None)
    assert [e.type for e in found[0]] and {e.type for e in found[0]} <= {"PER", "LOC", "ORG"}


def test_merged_decoder_classifier_loads_in_transformers(lora_run, tmp_path: Path) -> None:
    """`tunelab merge RUN OUT`: the adapter folded in, the score head kept; transformers'
    AutoModelForSequenceClassification gives the run's own logits."""
    from transformers import AutoModelForSequenceClassification

    from tunelab.commands.merge_run import merge
    from tunelab.runs.trained import load_trained

    run_dir, _, _ = lora_run
    out = merge(run_dir, tmp_path / "merged")
    model, tokenizer, _ = load_trained(run_dir)
    merged = AutoModelForSequenceClassification.from_pretrained(out).eval()
    assert type(merged).__name__ == "LlamaForSequenceClassification"
    assert merged.config.pad_token_id == tokenizer.pad_token_id
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(merged(**batch).logits, model(**batch).logits,
                                   atol=1e-5, rtol=1e-4)


def test_adapter_and_score_head_load_in_peft(lora_run, llama_dir: Path) -> None:
    """The run's adapter is PEFT's layout (task_type SEQ_CLS, modules_to_save: [score]):
    peft puts the trained score head back on a fresh classifier and gives the run's logits."""
    import json

    from peft import PeftModel

    from tunelab.runs.trained import load_trained

    run_dir, _, _ = lora_run
    config = json.loads((run_dir / "adapter" / "adapter_config.json").read_text())
    assert config["task_type"] == "SEQ_CLS" and config["modules_to_save"] == ["score"]
    model, tokenizer, info = load_trained(run_dir)
    torch.manual_seed(123)  # another fresh head, which the adapter's must replace
    base = load_classifier(llama_dir, info["labels"], pad_token_id=tokenizer.pad_token_id)
    peft_model = PeftModel.from_pretrained(base, str(run_dir / "adapter")).eval()
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(peft_model(**batch).logits, model(**batch).logits,
                                   atol=1e-5, rtol=1e-4)
