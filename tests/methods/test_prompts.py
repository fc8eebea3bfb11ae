"""Prompt tuning, p-tuning and prefix tuning: peft's numbers and files both ways, generation
with the virtual tokens in the cache, init from text, runs, and the settings they refuse."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from conftest import tiny_config
from sft_fixtures import tiny_llama_dir
from test_methods_contract import INPUT, method_cfg, tiny_classifier
from sft_fixtures import PAIRS

from tunelab import methods
from tunelab.cli import main
from tunelab.config import validate
from tunelab.errors import AdapterError, ConfigError, MethodError
from tunelab.methods.peft_format import load_adapter, merge, save_adapter
from tunelab.runs.trained import load_trained
from tunelab.recipes.run import train

N = 4  # virtual tokens in the interop tests
MASKED = {"input_ids": INPUT["input_ids"], "token_type_ids": torch.zeros(3, 11, dtype=torch.long),
          "attention_mask": torch.tensor([[1] * 11, [1] * 8 + [0] * 3, [1] * 5 + [0] * 6])}
LM_IDS = torch.tensor([[5, 17, 33, 40, 41, 62, 7], [9, 11, 24, 50, 3, 3, 3]])
LM_MASK = torch.tensor([[1] * 7, [1] * 4 + [0] * 3])


def quiet(_: str) -> None:
    pass


def peft_config(kind: str, task: str, **extra):
    from peft import PrefixTuningConfig, PromptEncoderConfig, PromptTuningConfig

    cls = {"prompt_tuning": PromptTuningConfig, "p_tuning": PromptEncoderConfig,
           "prefix_tuning": PrefixTuningConfig}[kind]
    return cls(task_type=task, num_virtual_tokens=N, **extra)


def perturb_peft(peft_model) -> None:
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in peft_model.prompt_encoder.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)


def peft_bert_logits(theirs, kind: str, inputs: dict) -> torch.Tensor:
    """peft's own output; for prefix tuning on BERT, peft 0.21's forward looks for a
    `past_key_values` argument that transformers 5 renamed `cache`, so its prefix cache
    (get_prompt) is passed to the model by hand, with the mask extended as peft does."""
    with torch.no_grad():
        if kind != "prefix_tuning":
            return theirs(**inputs).logits
        mask = torch.cat([torch.ones(3, N, dtype=torch.long), inputs["attention_mask"]], dim=1)
        return theirs.base_model(**{**inputs, "attention_mask": mask},
                                 cache=theirs.get_prompt(3)).logits


def ours_logits(model, inputs: dict) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(**inputs).logits


def tiny_llama(root: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_llama_dir(root)).eval()


# ----------------------------------------------------------------------------- same numbers as peft


@pytest.mark.parametrize("kind,extra", [("prompt_tuning", {}), ("p_tuning", {}),
                                        ("p_tuning", {"encoder_reparameterization_type": "LSTM",
                                                      "encoder_hidden_size": 16}),
                                        ("prefix_tuning", {})],
                         ids=["prompt", "p-mlp", "p-lstm", "prefix"])
def test_same_weights_same_logits_as_peft_on_a_bert_classifier(kind, extra):
    from peft import get_peft_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = get_peft_model(tiny_classifier(), peft_config(kind, "SEQ_CLS", **extra)).eval()
    perturb_peft(theirs)
    ours = tiny_classifier()
    opts = {"num_virtual_tokens": N, "init": "random"} if kind != "p_tuning" else \
        {"num_virtual_tokens": N, "encoder": extra.get("encoder_reparameterization_type",
                                                       "mlp").lower(),
         "encoder_hidden_size": extra.get("encoder_hidden_size")}
    methods.apply(ours, method_cfg(kind, opts))
    ours.bert.prompt_encoder.load_state_dict(theirs.prompt_encoder["default"].state_dict())
    want = peft_bert_logits(theirs, kind, MASKED)
    assert (ours_logits(ours, MASKED) - want).abs().max().item() < 1e-5


@pytest.mark.parametrize("kind", ["prompt_tuning", "p_tuning", "prefix_tuning"])
def test_same_weights_same_logits_as_peft_on_a_causal_lm(kind, tmp_path):
    from peft import get_peft_model

    theirs = get_peft_model(tiny_llama(tmp_path / "a"), peft_config(kind, "CAUSAL_LM")).eval()
    perturb_peft(theirs)
    ours = tiny_llama(tmp_path / "b")
    opts = {"num_virtual_tokens": N} | ({"init": "random"} if kind != "p_tuning" else {})
    methods.apply(ours, method_cfg(kind, opts))
    ours.model.prompt_encoder.load_state_dict(theirs.prompt_encoder["default"].state_dict())
    with torch.no_grad():
        want = theirs(input_ids=LM_IDS, attention_mask=LM_MASK).logits
    if kind != "prefix_tuning":  # peft returns logits at the virtual positions too
        want = want[:, N:]
    got = ours_logits(ours, {"input_ids": LM_IDS, "attention_mask": LM_MASK})
    assert got.shape == (2, 7, ours.config.vocab_size)
    real = LM_MASK.bool()  # padded positions may differ (peft attends them differently)
    assert (got[real] - want[real]).abs().max().item() < 1e-5


# ----------------------------------------------------------------------------- files, both ways


@pytest.mark.parametrize("kind", ["prompt_tuning", "p_tuning", "prefix_tuning"])
def test_a_tunelab_adapter_loads_in_peft(kind, tmp_path):
    from peft import PeftModel

    ours = tiny_classifier()
    cfg = method_cfg(kind, {"num_virtual_tokens": N})
    report = methods.apply(ours, cfg)
    torch.manual_seed(9)
    with torch.no_grad():
        for p in ours.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)
    save_adapter(ours, cfg, report.head, "tiny", tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    peft_type = {"prompt_tuning": "PROMPT_TUNING", "p_tuning": "P_TUNING",
                 "prefix_tuning": "PREFIX_TUNING"}[kind]
    assert config["peft_type"] == peft_type and config["num_virtual_tokens"] == N
    assert (config["token_dim"], config["num_layers"], config["num_attention_heads"]) == (32, 2, 2)
    from safetensors.torch import load_file

    assert sorted(load_file(tmp_path / "adapter_model.safetensors")) == [
        "base_model.classifier.bias", "base_model.classifier.weight", "prompt_embeddings"]
    theirs = PeftModel.from_pretrained(tiny_classifier(), tmp_path).eval()
    want = ours_logits(ours, MASKED)
    assert (peft_bert_logits(theirs, kind, MASKED) - want).abs().max().item() < 1e-5


@pytest.mark.parametrize("kind,extra", [("prompt_tuning", {}), ("p_tuning", {}),
                                        ("prefix_tuning", {}),
                                        ("prefix_tuning", {"prefix_projection": True})],
                         ids=["prompt", "p-mlp", "prefix", "prefix-projection"])
def test_a_peft_adapter_loads_in_tunelab(kind, extra, tmp_path):
    from peft import get_peft_model

    theirs = get_peft_model(tiny_llama(tmp_path / "a"), peft_config(kind, "CAUSAL_LM", **extra))
    perturb_peft(theirs)
    theirs.save_pretrained(tmp_path / "adapter")
    with torch.no_grad():
        want = theirs.eval()(input_ids=LM_IDS, attention_mask=LM_MASK).logits
    if kind != "prefix_tuning":
        want = want[:, N:]
    ours = tiny_llama(tmp_path / "b")
    report = load_adapter(ours, tmp_path / "adapter", [])
    assert report.matched == ["model.prompt_encoder"]
    got = ours_logits(ours, {"input_ids": LM_IDS, "attention_mask": LM_MASK})
    real = LM_MASK.bool()
    assert (got[real] - want[real]).abs().max().item() < 1e-5


def test_a_peft_classifier_adapter_brings_its_head(tmp_path):
    from peft import get_peft_model

    theirs = get_peft_model(tiny_classifier(), peft_config("prompt_tuning", "SEQ_CLS"))
    perturb_peft(theirs)
    with torch.no_grad():
        theirs.base_model.classifier.modules_to_save["default"].weight.mul_(3)
    theirs.save_pretrained(tmp_path)
    want = ours_logits(theirs, MASKED)
    ours = tiny_classifier(seed=4)  # another head: the adapter's must replace it
    torch.manual_seed(0)
    ours = tiny_classifier()
    with torch.no_grad():
        ours.classifier.weight.zero_()
    load_adapter(ours, tmp_path, ["classifier"])
    assert (ours_logits(ours, MASKED) - want).abs().max().item() < 1e-5


def test_an_adapter_without_the_table_is_refused(tmp_path):
    from safetensors.torch import save_file

    ours = tiny_classifier()
    cfg = method_cfg("prompt_tuning", {"num_virtual_tokens": N})
    save_adapter(ours, cfg, methods.apply(ours, cfg).head, "tiny", tmp_path)
    save_file({"base_model.classifier.weight": torch.zeros(3, 32)},
              str(tmp_path / "adapter_model.safetensors"))
    with pytest.raises(AdapterError, match="no 'prompt_embeddings' tensor; is this a "
                                           "prompt-method adapter"):
        load_adapter(tiny_classifier(), tmp_path, ["classifier"])


# ----------------------------------------------------------------------------- generation


def greedy_without_cache(model, ids: torch.Tensor, steps: int) -> torch.Tensor:
    """The reference: the whole sequence through the model again for every new token."""
    with torch.no_grad():
        for _ in range(steps):
            logits = model(input_ids=ids, use_cache=False).logits[:, -1]
            ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], dim=1)
    return ids


@pytest.mark.parametrize("kind", ["prompt_tuning", "p_tuning", "prefix_tuning"])
def test_generate_with_the_cache_equals_full_recomputation(kind, tmp_path):
    model = tiny_llama(tmp_path)
    methods.apply(model, method_cfg(kind, {"num_virtual_tokens": N}))
    torch.manual_seed(2)
    with torch.no_grad():
        for p in model.model.prompt_encoder.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    base = tiny_llama(tmp_path)
    prompt = LM_IDS[:1]
    want = greedy_without_cache(model, prompt, 8)
    with torch.no_grad():
        got = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt),
                             max_new_tokens=8, do_sample=False)
        plain = base.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt),
                              max_new_tokens=8, do_sample=False)
    assert torch.equal(got, want)
    assert not torch.equal(got, plain)  # the virtual tokens do change what is generated
    # a left-padded batch: every row continues as it does alone (positions and mask extended)
    short = LM_IDS[1:, :4]
    alone = greedy_without_cache(model, short, 5)[0, 4:]
    batch = torch.cat([torch.full((1, 3), 3), short], dim=1)
    with torch.no_grad():
        rows = model.generate(input_ids=torch.cat([LM_IDS[:1], batch]), max_new_tokens=5,
                              attention_mask=torch.cat([torch.ones(1, 7, dtype=torch.long),
                                                        LM_MASK[1:].flip(1)]),
                              do_sample=False, pad_token_id=3)
    assert torch.equal(rows[0, 7:], want[0, 7:12]) and torch.equal(rows[1, 7:], alone)


# ----------------------------------------------------------------------------- init


@pytest.mark.parametrize("kind", ["prompt_tuning", "prefix_tuning"])
def test_init_from_text_acts_as_that_text_before_the_input(kind, tmp_path):
    """Virtual tokens started from a text's embeddings (or, for prefix tuning, from the keys
    and values the model computes for it) read like that text written before the input."""
    from transformers import AutoTokenizer

    model_dir = tiny_llama_dir(tmp_path)
    text = "the quick brown fox"
    ids = AutoTokenizer.from_pretrained(model_dir)(text)["input_ids"]
    model = tiny_llama(tmp_path)
    methods.apply(model, method_cfg(kind, {"num_virtual_tokens": len(ids) + 2, "init": "text",
                                          "init_text": text}))
    tiled = torch.tensor([(ids * 2)[: len(ids) + 2]])  # cut or repeated to n tokens, as peft
    x = LM_IDS[:1]
    base = tiny_llama(tmp_path)
    with torch.no_grad():
        want = base(input_ids=torch.cat([tiled, x], dim=1)).logits[:, tiled.shape[1]:]
    assert (ours_logits(model, {"input_ids": x}) - want).abs().max().item() < 1e-5


def test_vocab_init_copies_rows_of_the_embedding_table():
    model = tiny_classifier()
    torch.manual_seed(0)
    methods.apply(model, method_cfg("prompt_tuning", {"num_virtual_tokens": 6}))
    words = model.bert.embeddings.word_embeddings.weight
    table = model.bert.prompt_encoder.embedding.weight
    assert all(any(torch.equal(row, w) for w in words) for row in table)


def test_text_init_needs_a_model_directory():
    with pytest.raises(MethodError, match="init: text reads the model's tokenizer, but this "
                                          "model was not loaded from a directory"):
        methods.apply(tiny_classifier(), method_cfg("prompt_tuning", {"init": "text",
                                                                      "init_text": "hi"}))


# ----------------------------------------------------------------------------- refusals


def lm_tree(model: Path, data: Path, out: Path, method: dict, **data_opts) -> dict:
    return {"task": "causal_lm", "model": {"name": str(model), "max_length": 64},
            "data": {"path": str(data), "eval_size": 4, "samples": 1, "sample_tokens": 6,
                     **data_opts},
            "method": method,
            "train": {"batch_size": 4, "lr": 3e-2, "max_steps": 30, "eval_every": 15,
                      "log_every": 5, "warmup_ratio": 0.0, "weight_decay": 0.0},
            "output_dir": str(out)}


@pytest.mark.parametrize("method,extra,message", [
    ("prompt_tuning", {"data": {"packing": True}},
     "data.packing: prompt_tuning prepends virtual tokens to every example, and a packed row "
     "holds many; set data.packing: false"),
    ("prefix_tuning", {"train": {"gradient_checkpointing": True}},
     "train.gradient_checkpointing: transformers drops the cache in checkpointed layers, and "
     "the prefix lives in the cache; set it to false for prefix_tuning"),
    ("prompt_tuning", {"method": {"init": "text"}}, "method.init_text: init 'text' needs the text"),
    ("prompt_tuning", {"method": {"init_text": "hi"}},
     "method.init_text is only read with init: text (init is 'vocab')"),
    ("prefix_tuning", {"method": {"projection": True, "init": "vocab"}},
     "method.init: vocab sets the prefix itself, but with projection: true an MLP makes it"),
    ("prefix_tuning", {"method": {"encoder_hidden_size": 8}},
     "method.encoder_hidden_size is the projection MLP's width; set projection: true")])
def test_settings_the_prompt_methods_refuse(method, extra, message):
    tree = lm_tree(Path("m"), Path("d.json"), Path("o"), {"name": method})
    for section, values in extra.items():
        tree[section].update(values)
    with pytest.raises(ConfigError) as exc:
        validate(tree)
    assert message in str(exc.value)


def test_merge_refuses_virtual_tokens():
    model = tiny_classifier()
    methods.apply(model, method_cfg("prefix_tuning", {}))
    with pytest.raises(AdapterError, match="prompt methods add virtual tokens, not weight "
                                           "changes, so there is nothing to merge"):
        merge(model)


def test_too_many_positions_for_bert_say_what_to_lower():
    model = tiny_classifier()  # 64 positions
    methods.apply(model, method_cfg("prompt_tuning", {"num_virtual_tokens": 60}))
    with pytest.raises(MethodError, match="60 virtual tokens \\+ 11 input tokens exceed the "
                                          "model's 64 positions; lower model.max_length or "
                                          "method.num_virtual_tokens"):
        model(**INPUT)


def test_encoder_decoder_models_are_refused():
    from transformers import T5Config, T5ForConditionalGeneration

    model = T5ForConditionalGeneration(T5Config(vocab_size=50, d_model=16, d_ff=32, num_layers=1,
                                                num_heads=2, d_kv=8))
    with pytest.raises(MethodError, match="encoder-decoder models are not supported by the "
                                          "prompt methods yet"):
        methods.apply(model, method_cfg("prompt_tuning", {}))


# ----------------------------------------------------------------------------- runs


@pytest.fixture
def lm_data(tmp_path) -> tuple[Path, Path]:
    """The tiny Llama with a 30x sharper output layer: its random head (std 0.02 over 32
    dimensions) gives near-uniform logits that nothing on the input side can move far, so
    the virtual tokens' effect would be lost in it."""
    from transformers import AutoModelForCausalLM

    rows = [{"instruction": q, "input": "", "output": a} for q, a in PAIRS * 6]
    data = tmp_path / "train.json"
    data.write_text(json.dumps(rows))
    model_dir = tiny_llama_dir(tmp_path / "llama")
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    with torch.no_grad():
        model.lm_head.weight.mul_(30)
    model.save_pretrained(model_dir)
    return model_dir, data


@pytest.mark.parametrize("method", [{"name": "prompt_tuning", "num_virtual_tokens": 8},
                                    {"name": "p_tuning", "num_virtual_tokens": 8},
                                    {"name": "prefix_tuning", "num_virtual_tokens": 8}],
                         ids=lambda m: m["name"])
def test_causal_lm_sft_learns_saves_and_generates(method, lm_data, tmp_path, capsys):
    model_dir, data = lm_data
    run = tmp_path / "run"
    summary = train(validate(lm_tree(model_dir, data, run, method)), log=quiet)
    assert summary["final_dev"]["loss"] < 0.92 * summary["initial_dev"]["loss"]
    ours, tok, _ = load_trained(run)
    assert [n for n, _ in ours.named_modules() if n.endswith("prompt_encoder")] == \
        ["model.prompt_encoder"]
    capsys.readouterr()
    assert main(["eval", str(run)]) == 0  # the saved table gives the run's final loss
    loss = float(capsys.readouterr().out.splitlines()[1].split()[1])
    assert loss == pytest.approx(summary["final_dev"]["loss"], abs=1e-3)
    assert main(["generate", str(run), "--prompt", "say one", "--max-new-tokens", "5"]) == 0
    printed = capsys.readouterr().out.strip()
    prompt = tok.apply_chat_template([{"role": "user", "content": "say one"}],
                                     add_generation_prompt=True, return_tensors="pt",
                                     return_dict=True)
    with torch.no_grad():
        out = ours.generate(**prompt, max_new_tokens=5, do_sample=False)
    assert printed == tok.decode(out[0, prompt["input_ids"].shape[1]:],
                                 skip_special_tokens=True).strip()
    assert main(["merge", str(run), str(tmp_path / "merged")]) == 2
    assert "nothing to merge" in capsys.readouterr().err


@pytest.mark.parametrize("method", [{"name": "prompt_tuning"}, {"name": "prefix_tuning"},
                                    {"name": "p_tuning"}], ids=lambda m: m["name"])
def test_classification_run_through_the_cli(method, tiny_model_dir, tiny_data, tmp_path, capsys):
    """A random tiny BERT gives virtual tokens little to steer (learning is checked in the
    contract suite and on MiniLM); here the trained state must come back from the adapter."""
    tree = tiny_config(tiny_model_dir, tiny_data, tmp_path / "run", max_steps=12, lr=3e-2,
                       eval_every=None, load_best_at_end=False)
    tree["method"] = method
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tree))
    assert main(["train", str(path)]) == 0
    out = capsys.readouterr().out
    assert "task head (trains fully): classifier" in out and "suggested train.lr: about " in out
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["final_dev"]["loss"] != summary["initial_dev"]["loss"]
    ours, tok, _ = load_trained(tmp_path / "run")
    enc = tok(["a wonderful story", "awful"], padding=True, return_tensors="pt")
    assert main(["predict", str(tmp_path / "run"), "a wonderful story", "awful"]) == 0
    probs = [float(line.split("\t")[1]) for line in capsys.readouterr().out.splitlines()]
    with torch.no_grad():
        want = ours(**enc).logits.softmax(-1).max(-1).values.tolist()
    assert probs == pytest.approx(want, abs=1e-4)
    assert main(["eval", str(tmp_path / "run")]) == 0
    accuracy = float(capsys.readouterr().out.split("accuracy: ")[1].split()[0])
    assert accuracy == pytest.approx(summary["final_dev"]["accuracy"], abs=1e-6)


def test_resume_keeps_the_p_tuning_network(tiny_model_dir, tiny_data, tmp_path, monkeypatch):
    """Checkpoints hold the prompt encoder's network (the adapter holds only its output), so
    an interrupted p-tuning run resumes to the uninterrupted run's adapter."""
    import os
    import signal

    from safetensors.torch import load_file

    from tunelab.train import loop as loop_mod
    from tunelab.train.signals import Interrupted

    tree = tiny_config(tiny_model_dir, tiny_data, tmp_path / "straight", lr=1e-2)
    tree["method"] = {"name": "p_tuning", "num_virtual_tokens": 4, "encoder": "lstm",
                      "encoder_dropout": 0.1}
    train(validate(tree), log=quiet)
    tree["output_dir"] = str(tmp_path / "interrupted")
    real_step = loop_mod.Trainer._step

    def step_then_signal(self, step, trainable):
        out = real_step(self, step, trainable)
        if step == 5:  # between checkpoints (every 4)
            os.kill(os.getpid(), signal.SIGTERM)
        return out

    monkeypatch.setattr(loop_mod.Trainer, "_step", step_then_signal)
    with pytest.raises(Interrupted):
        train(validate(tree), log=quiet)
    monkeypatch.setattr(loop_mod.Trainer, "_step", real_step)
    train(validate(tree), resume=True, log=quiet)
    a, b = (load_file(str(tmp_path / d / "adapter" / "adapter_model.safetensors"))
            for d in ("straight", "interrupted"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
