"""model.pooling: mean: the head reads the masked mean of the last layer, in training, in a
reloaded run, and in its ONNX export; what cannot hold it is refused by name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import tiny_config, toy_sentiment_files

from tunelab.cli import main
from tunelab.config import validate
from tunelab.errors import AdapterError, ConfigError, ModelError
from tunelab.models import load_classifier, load_tokenizer
from tunelab.models.pooling import MeanPooler, masked_mean, use_mean_pooling
from tunelab.recipes.run import train
from tunelab.runs.trained import load_trained

TEXTS = ["good movie", "a much longer sentence about a really bad film", "fine"]


def test_the_head_reads_the_mean_of_the_real_tokens(tiny_model_dir):
    model = load_classifier(tiny_model_dir, ["neg", "pos"], pooling="mean").eval()
    tokenizer = load_tokenizer(tiny_model_dir)
    enc = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**enc).logits
        hidden = model.bert(**enc).last_hidden_state  # (B, T, H)
        mask = enc["attention_mask"].unsqueeze(-1).float()
        by_hand = (hidden * mask).sum(1) / mask.sum(1)
        alone = torch.cat([model(**tokenizer([t], return_tensors="pt")).logits for t in TEXTS])
        cls = load_classifier(tiny_model_dir, ["neg", "pos"]).eval()
        cls.classifier.load_state_dict(model.classifier.state_dict())
        pooler_logits = cls(**enc).logits
    assert torch.allclose(logits, model.classifier(by_hand), atol=1e-6)
    assert torch.allclose(logits, alone, atol=1e-5)  # padding changes nothing
    assert (logits - pooler_logits).abs().max() > 1e-3  # the same head on the pooler differs
    assert not any("pooler" in k for k in model.state_dict())  # no new weights to save
    ids = enc["input_ids"][:1, :3]  # no attention mask given: every token counts
    with torch.no_grad():
        want = model.classifier(masked_mean(model.bert(ids).last_hidden_state,
                                            torch.ones_like(ids)))
        assert torch.allclose(model(input_ids=ids).logits, want, atol=1e-6)


def test_models_without_a_sequence_pooler_and_other_tasks_are_refused(tiny_model_dir, tmp_path):
    from transformers import RobertaConfig, RobertaForSequenceClassification

    roberta = RobertaForSequenceClassification(RobertaConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=40))
    with pytest.raises(ModelError, match="RobertaForSequenceClassification has none. Remove "
                                         "model.pooling"):
        use_mean_pooling(roberta)
    with pytest.raises(ModelError, match="no attention mask"):
        MeanPooler()(torch.zeros(2, 3, 4))
    tree = tiny_config(tiny_model_dir, toy_sentiment_files(tmp_path), tmp_path / "run")
    tree.update(task="token_classification")
    tree["data"] = {"train": str(tmp_path / "train.conll")}
    tree["model"]["pooling"] = "mean"
    with pytest.raises(ConfigError, match="model.pooling: mean is for task: classification"):
        validate(tree)
    tree["model"]["pooling"] = "max"
    with pytest.raises(ConfigError, match="model.pooling"):
        validate(tree)


@pytest.fixture(scope="module")
def mean_run(tiny_model_dir, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mean")
    tree = tiny_config(tiny_model_dir, toy_sentiment_files(root, dev=64), root / "run",
                       max_steps=128, eval_every=128, checkpoint_every=128, lr=3e-3)
    tree["model"]["pooling"] = "mean"
    tree["method"] = {"name": "full"}  # LoRA on a random tiny base learns too little
    train(validate(tree), log=lambda _: None)
    return root / "run"


def test_a_mean_pooled_run_learns_and_reloads_with_its_pooling(mean_run):
    info = json.loads((mean_run / "run.json").read_text())
    assert info["pooling"] == "mean"
    final = json.loads((mean_run / "summary.json").read_text())["final_dev"]
    assert final["accuracy"] >= 0.8  # the toy task, learnt through the mean
    model, tokenizer, _ = load_trained(mean_run)
    assert isinstance(model.bert.pooler, MeanPooler)
    enc = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model.bert(**enc).last_hidden_state
        want = model.classifier(masked_mean(hidden, enc["attention_mask"]))
        assert torch.allclose(model(**enc).logits, want, atol=1e-6)


def test_merge_refuses_and_onnx_keeps_the_mean(mean_run, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from tunelab.commands.merge_run import merge
    from tunelab.runs.onnx_model import OnnxModel

    with pytest.raises(AdapterError, match="model.pooling: mean, which a plain transformers"):
        merge(mean_run, tmp_path / "merged")
    assert main(["merge", str(mean_run), str(tmp_path / "merged")]) != 0
    assert "model.pooling: mean" in capsys.readouterr().err
    assert not (tmp_path / "merged").exists()
    assert main(["export", str(mean_run), "--to", "onnx", str(tmp_path / "onnx")]) == 0
    model, tokenizer, _ = load_trained(mean_run)
    session = OnnxModel(tmp_path / "onnx" / "model.onnx")
    for batch in (TEXTS[:1], TEXTS):
        enc = tokenizer(batch, padding=True, return_tensors="pt")
        with torch.no_grad():
            want = model(**enc).logits
        assert (session(**enc).logits - want).abs().max().item() < 1e-4


def test_packing_is_refused_with_the_mean_and_off_by_default(tiny_model_dir, tmp_path):
    tree = tiny_config(tiny_model_dir, toy_sentiment_files(tmp_path), tmp_path / "run",
                       max_steps=2, eval_every=2, checkpoint_every=2)
    tree["model"]["pooling"] = "mean"
    tree["data"]["packing"] = True
    with pytest.raises(ConfigError, match="data.packing: true, but model.pooling: mean "
                                          "averages whole rows"):
        train(validate(tree), log=lambda _: None)
    del tree["data"]["packing"]
    lines: list[str] = []
    train(validate(tree), log=lines.append)
    assert any("not packed: model.pooling: mean" in line for line in lines)
