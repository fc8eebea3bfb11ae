"""`tunelab prune` end to end on tiny trained runs: the output loads with plain transformers
and computes what the run's model computes with the removed units switched off, the record
names what went by the measured scores, the recovery run keeps the trained classifier and
evaluates, `tunelab info` shows the record, and bad options are refused with the reason."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import tiny_config, toy_sentiment_files

from tunelab.commands.prune import prune
from tunelab.compress.importance import skipped
from tunelab.compress.prune import PruneOptions, check_options, least
from tunelab.compress.record import read_record
from tunelab.config import validate
from tunelab.errors import ConfigError
from tunelab.methods.peft_format import merge
from tunelab.runs.trained import load_trained

TEXTS = ["the movie was really good", "awful plot and weak acting", "quite nice"]


def trained_run(model_dir: Path, root: Path, **method) -> Path:
    from tunelab.recipes.run import train

    tree = tiny_config(model_dir, toy_sentiment_files(root), root / "run", max_steps=4)
    tree["method"].update(method)
    train(validate(tree), log=lambda _: None)
    return root / "run"


@pytest.fixture(scope="module")
def bert_run(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_run(tiny_model_dir, tmp_path_factory.mktemp("bert-run"))


def merged_run(run: Path):
    model, tokenizer, info = load_trained(run)
    merge(model)
    return model, tokenizer, info


def logits(model, tokenizer) -> torch.Tensor:
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**batch).logits


def plain_reload(out: Path):
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(out, dtype=torch.float32).eval()


def test_bert_ffn_and_layer_pruning_end_to_end(bert_run: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture) -> None:
    from tunelab.commands.evaluate import evaluate
    from tunelab.commands.info import info
    from tunelab.config import load_config
    from tunelab.models.load import load_classifier

    out = tmp_path / "pruned"
    prune(bert_run, out, ffn=0.25, layers=1, examples=48, recover_steps=2)
    record = read_record(out)
    original, tokenizer, run_info = merged_run(bert_run)
    blocks = original.bert.encoder.layer
    h, width = original.config.hidden_size, original.config.intermediate_size
    removed = round(0.25 * width)
    # the dropped layer and the removed neurons are the lowest measured scores
    assert record["layers"]["dropped"] == least(record["scores"]["layers"], 1)
    assert record["ffn"]["after"] == width - removed
    for i, neurons in record["ffn"]["removed"].items():
        assert neurons == least(record["scores"]["ffn"][int(i)], removed)
    # parameters: one whole block, plus `removed` neurons (row + bias + column) in the other
    block = sum(p.numel() for p in blocks[0].parameters())
    p = record["parameters"]
    assert p["before"] - p["after"] == block + removed * (h + 1 + h)

    # the output is the run's model with those neurons unread and that layer skipped
    pruned = plain_reload(out)
    assert sum(t.numel() for t in pruned.parameters()) == p["after"]
    assert pruned.config.id2label == original.config.id2label
    dropped = record["layers"]["dropped"][0]
    with torch.no_grad():
        for i, neurons in record["ffn"]["removed"].items():
            blocks[int(i)].output.dense.weight[:, neurons] = 0
    with skipped(blocks[dropped]):
        expected = logits(original, tokenizer)
    torch.testing.assert_close(logits(pruned, tokenizer), expected, atol=1e-5, rtol=1e-4)

    # the recovery run starts from the trained classifier, not a new one
    head = load_classifier(out, run_info["labels"]).classifier.weight
    torch.testing.assert_close(head, original.classifier.weight)
    assert record["recovery"]["steps"] == 2 and (out / "recovered" / "run.json").is_file()
    scores = evaluate(out / "recovered", None, "dev")
    assert 0.0 <= scores["accuracy"] <= 1.0

    capsys.readouterr()
    info(load_config(out / "recovered" / "config.yaml"))
    shown = capsys.readouterr().out
    assert f"FFN neurons per layer: {width} -> {width - removed}" in shown
    assert f"dropped [{dropped}]" in shown
    accuracy = record["recovery"]["final_dev"]["accuracy"]
    assert "dev after recovery: " in shown and f"accuracy: {accuracy:.4f}" in shown


def test_llama_heads_pruned_by_importance(tmp_path: Path) -> None:
    from sft_fixtures import tiny_llama_dir

    run = trained_run(tiny_llama_dir(tmp_path / "llama"), tmp_path, targets=["q_proj", "v_proj"])
    out = tmp_path / "pruned"
    prune(run, out, heads=0.5, examples=32, recover_steps=0)
    record = read_record(out)
    original, tokenizer, _ = merged_run(run)
    c = original.config
    per_group = c.num_attention_heads // c.num_key_value_heads
    removed = record["heads"]["removed"]
    for i, heads in removed.items():  # the least important query head of each KV group
        s = record["scores"]["heads"][int(i)]
        assert heads == [g * per_group + least(s[g * per_group:(g + 1) * per_group], 1)[0]
                         for g in range(c.num_key_value_heads)]
    n_removed = sum(len(h) for h in removed.values())
    p = record["parameters"]
    assert p["before"] - p["after"] == n_removed * c.head_dim * c.hidden_size * 2  # q rows, o cols
    assert "recovery" not in record and not (out / "recovered").exists()

    pruned = plain_reload(out)
    assert pruned.config.num_attention_heads == c.num_attention_heads - len(removed["0"])
    with torch.no_grad():
        for i, heads in removed.items():
            for hd in heads:
                original.model.layers[int(i)].self_attn.o_proj.weight[
                    :, hd * c.head_dim:(hd + 1) * c.head_dim] = 0
    torch.testing.assert_close(logits(pruned, tokenizer), logits(original, tokenizer),
                               atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("options, message", [
    ({"heads": 0.5}, r"--heads: BertConfig has no head_dim.*use --ffn FRACTION and --layers K"),
    ({"ffn": 1.5}, r"--ffn 1.5: .*fraction between 0 and 1"),
    ({"ffn": 0.001}, r"--ffn 0.001: removes 0 of the \d+ FFN neurons"),
    ({"layers": 2}, r"--layers 2: .*the model has 2, so give 1 to 1"),
    ({"examples": 0, "ffn": 0.5}, r"--examples 0"),
    ({}, r"nothing to remove; give --heads FRACTION, --ffn FRACTION"),
])
def test_bad_options_name_the_option(bert_run: Path, tmp_path: Path, options: dict,
                                     message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        prune(bert_run, tmp_path / "out", **options)
    assert not (tmp_path / "out").exists()


def test_bad_out_and_head_counts(bert_run: Path, tmp_path: Path) -> None:
    from transformers import LlamaConfig

    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="already holds other files"):
        prune(bert_run, tmp_path / "taken", ffn=0.5)
    gqa = LlamaConfig(hidden_size=32, num_attention_heads=4, num_key_value_heads=2, head_dim=8)
    with pytest.raises(ConfigError, match=r"--heads 0.2: removes 0 of 2 heads .*from 0.5 to 0.5"):
        check_options(PruneOptions(heads=0.2), gqa)
    mha = LlamaConfig(hidden_size=32, num_attention_heads=4, num_key_value_heads=4, head_dim=8)
    with pytest.raises(ConfigError, match=r"--heads 0.25: 3 attention heads .*divides hidden_size"):
        check_options(PruneOptions(heads=0.25), mha)


def test_causal_lm_run_heads_and_ffn(tmp_path: Path) -> None:
    import json

    from sft_fixtures import PAIRS, tiny_llama_dir
    from transformers import AutoModelForCausalLM

    from tunelab.recipes.run import train

    data = tmp_path / "train.json"
    data.write_text(json.dumps([{"instruction": q, "input": "", "output": a} for q, a in PAIRS * 6]))
    tree = {"task": "causal_lm", "model": {"name": str(tiny_llama_dir(tmp_path / "llama")),
                                           "max_length": 64},
            "data": {"path": str(data), "eval_size": 4},
            "method": {"name": "lora", "r": 4, "alpha": 8, "targets": "all-linear"},
            "train": {"batch_size": 4, "lr": 1e-2, "max_steps": 3, "eval_every": 3},
            "output_dir": str(tmp_path / "run")}
    train(validate(tree), log=lambda _: None)
    out = tmp_path / "pruned"
    prune(tmp_path / "run", out, heads=0.5, ffn=0.25, examples=16, recover_steps=2)
    record = read_record(out)
    original, tokenizer, _ = merged_run(tmp_path / "run")
    c = original.config
    removed = round(0.25 * c.intermediate_size)
    n_heads = sum(len(h) for h in record["heads"]["removed"].values())
    p = record["parameters"]
    assert p["before"] - p["after"] == (n_heads * c.head_dim * c.hidden_size * 2
                                        + c.num_hidden_layers * removed * 3 * c.hidden_size)
    assert (out / "recovered" / "run.json").is_file() and record["recovery"]["steps"] == 2

    pruned = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():  # what the pruned model must compute: the removed units unread
        for i, heads in record["heads"]["removed"].items():
            layer = original.model.layers[int(i)]
            for hd in heads:
                layer.self_attn.o_proj.weight[:, hd * c.head_dim:(hd + 1) * c.head_dim] = 0
            layer.mlp.down_proj.weight[:, record["ffn"]["removed"][i]] = 0
    ids = tokenizer(["say fox", "hello world"], padding=True, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(pruned(**ids).logits, original(**ids).logits,
                                   atol=1e-5, rtol=1e-4)
