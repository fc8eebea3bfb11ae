"""Real model (packaged all-MiniLM-L6-v2) on real data (SST-2, CoNLL-2003 in ../shared/data)."""

from __future__ import annotations

import os

import pytest
import torch

from conftest import real_data_dir
from tunelab.config import load_config
from tunelab.runs.trained import load_trained
from tunelab.recipes.run import train

pytestmark = [pytest.mark.real, pytest.mark.integration]


def test_lora_on_minilm_lifts_sst2_dev_accuracy_and_loads_in_peft(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNELAB_DATA_DIR", str(real_data_dir()))
    cfg = load_config(None, ["data.train=sst2", "data.max_train_examples=1920",
                             "method.name=lora", "method.targets=all-linear", "train.lr=1e-3",
                             "train.max_steps=60", "train.eval_every=60", "train.batch_size=32",
                             f"output_dir={tmp_path / 'run'}"])
    logs: list[str] = []
    summary = train(cfg, log=logs.append)
    history = [line for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    final = summary["final_dev"]
    assert summary["dev_examples"] == 872
    # chance is 0.51 on SST-2 dev; 60 steps of LoRA reach ~0.78 here
    assert final["accuracy"] >= 0.70, final
    assert len(history) >= 7

    # The adapter directory loads in peft on the same base and gives the same logits.
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    ours, tok, info = load_trained(tmp_path / "run")
    base = AutoModelForSequenceClassification.from_pretrained(info["base_model"], num_labels=2)
    theirs = PeftModel.from_pretrained(base, tmp_path / "run" / "adapter").eval()
    enc = tok(["a gorgeous , witty , seductive movie .", "the story is lame and boring"],
              padding=True, return_tensors="pt")
    with torch.no_grad():
        diff = (ours(**enc).logits - theirs(**enc).logits).abs().max().item()
    assert diff < 1e-4


def test_untrained_head_is_near_chance(monkeypatch):
    """The baseline the learning test is measured against."""
    monkeypatch.setenv("TUNELAB_DATA_DIR", str(real_data_dir()))
    from tunelab.data import load_splits
    from tunelab.methods import apply
    from tunelab.models import load_classifier, load_tokenizer
    from tunelab.runs.resolve import resolve
    from tunelab.tasks.classification import ClassificationTask

    cfg = load_config(None, ["data.train=sst2", "train.seed=0"])
    splits = load_splits(cfg.data)
    torch.manual_seed(0)
    model = load_classifier(resolve("minilm"), splits.labels)
    apply(model, cfg.method)
    tok = load_tokenizer(resolve("minilm"))
    task = ClassificationTask(splits.labels, 128, tok.pad_token_id)
    scores = task.evaluate(model, task.encode(tok, splits.dev), 64, torch.device("cpu"))
    assert 0.35 <= scores["accuracy"] <= 0.65


def test_lora_sft_on_smollm2_lowers_held_out_loss(tmp_path, monkeypatch):
    """Real SmolLM2-135M-Instruct (packaged GGUF, converted once) on real Alpaca data."""
    monkeypatch.setenv("TUNELAB_DATA_DIR", str(real_data_dir()))
    cfg = load_config(None, [
        "task=causal_lm", "model.name=smollm2", "model.max_length=128", "data.path=alpaca_en",
        "data.max_examples=32", "data.eval_size=8", "data.samples=0", "method.name=lora",
        "method.r=8", "method.alpha=16", "method.targets=all-linear", "train.max_steps=8",
        "train.batch_size=4", "train.lr=1e-3", "train.warmup_ratio=0", "train.eval_every=8",
        f"output_dir={tmp_path / 'sft'}"])
    summary = train(cfg, log=lambda _: None)
    before, after = summary["initial_dev"]["loss"], summary["final_dev"]["loss"]
    assert after < before - 0.02, (before, after)


def test_lora_translation_on_smollm2_raises_chrf_over_the_base_model(tmp_path, monkeypatch):
    """Real SmolLM2 + LoRA on real Multi30k en->de: test chrF after training beats the base
    model's, scored by sacrebleu on the same sentences with the same greedy decoding."""
    monkeypatch.setenv("TUNELAB_DATA_DIR", str(real_data_dir()))
    cfg = load_config(None, [
        "task=translation", "model.name=smollm2", "model.max_length=96", "data.path=multi30k",
        "data.max_train_examples=160", "data.max_dev_examples=16", "data.max_test_examples=16",
        "generation.max_new_tokens=32", "method.name=lora", "method.r=16", "method.alpha=32",
        "method.targets=all-linear", "train.max_steps=20", "train.batch_size=8", "train.lr=1e-3",
        "train.warmup_ratio=0", "train.eval_every=null", f"output_dir={tmp_path / 'mt'}"])
    summary = train(cfg, log=lambda _: None)
    before, after = summary["test_before"]["chrf"], summary["test"]["chrf"]
    assert after > before + 5, (before, after)
    assert summary["final_dev"]["loss"] < summary["initial_dev"]["loss"] - 0.3


def test_lora_on_minilm_learns_conll2003_ner_and_loads_in_peft(tmp_path, monkeypatch):
    """Real MiniLM on a seeded 960-sentence CoNLL-2003 sample: entity F1 on 300 dev sentences
    rises far above the untrained head's (~0.02); ~0.49 after 60 steps here."""
    data = real_data_dir()
    if not (data / "conll2003" / "train.txt").is_file():
        if os.environ.get("CI") == "true":
            pytest.fail(f"CoNLL-2003 not found in {data} (CI=true: this must not be skipped)")
        pytest.skip(f"CoNLL-2003 not found in {data}")
    monkeypatch.setenv("TUNELAB_DATA_DIR", str(data))
    cfg = load_config(None, [
        "task=token_classification", "data.train=conll2003", "data.max_train_examples=960",
        "data.max_eval_examples=300", "model.max_length=64", "method.name=lora", "method.r=16",
        "method.alpha=32", "method.targets=all-linear", "train.lr=2e-3", "train.batch_size=16",
        "train.max_steps=60", "train.eval_every=60", f"output_dir={tmp_path / 'ner'}"])
    summary = train(cfg, log=lambda _: None)
    before, after = summary["initial_dev"]["f1"], summary["final_dev"]["f1"]
    assert before < 0.1 and after >= 0.3 and after > before + 0.25, (before, after)
    assert summary["final_dev"]["token_accuracy"] > 0.85

    from peft import PeftModel
    from transformers import AutoModelForTokenClassification

    ours, tok, info = load_trained(tmp_path / "ner")
    base = AutoModelForTokenClassification.from_pretrained(info["base_model"],
                                                           num_labels=len(info["labels"]))
    theirs = PeftModel.from_pretrained(base, tmp_path / "ner" / "adapter").eval()
    enc = tok(["EU rejects German call to boycott British lamb .", "Peter Blackburn"],
              padding=True, return_tensors="pt")
    with torch.no_grad():
        diff = (ours(**enc).logits - theirs(**enc).logits).abs().max().item()
    assert diff < 1e-4
