"""Several LoRA adapters on one base, switching and disabling them, and merging them:
against peft's add_weighted_adapter, and against small hand-computed TIES / DARE cases."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from tunelab import methods
from tunelab.config import validate
from tunelab.errors import AdapterError
from tunelab.methods.lora import lora_layers
from tunelab.methods.merging import CombineSpec, drop_and_rescale, merge_task_tensors
from tunelab.methods.multi_adapter import (adapter_names, adapters_disabled, add_weighted_adapter,
                                           load_named_adapter, save_named_adapter, set_adapter)
from tunelab.methods.peft_format import load_adapter, merge, save_adapter

from test_methods_contract import INPUT, logits, tiny_classifier

IDS = torch.randint(1, 100, (2, 9), generator=torch.Generator().manual_seed(3))


def tiny_llama(hidden: int = 32) -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=100, hidden_size=hidden, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(cfg).eval()


def lm_out(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=IDS).logits


def make_adapter(make_model, out: Path, seed: int, task: str, **lora) -> Path:
    """A LoRA adapter with random non-zero A, B (and head) saved in the PEFT layout."""
    model = make_model()
    cfg = validate({"data": {"train": "x"}, "method": {"name": "lora", **lora}}).method
    report = methods.apply(model, cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return save_adapter(model, cfg, report.head, "tiny", out, task)


@pytest.fixture
def cls_adapters(tmp_path):
    """Two classification adapters on different targets and ranks, each with its own head."""
    a = make_adapter(tiny_classifier, tmp_path / "a", 1, "classification", r=4, alpha=8,
                     targets=["query", "value"])
    b = make_adapter(tiny_classifier, tmp_path / "b", 2, "classification", r=2, alpha=2,
                     targets=["key", "value", "dense"], scaling="rslora")
    return a, b


def alone(adapter: Path) -> torch.Tensor:
    model = tiny_classifier()
    load_adapter(model, adapter, methods.head_modules(model))
    return logits(model.eval())


def test_several_adapters_switch_and_disable_exactly(cls_adapters):
    a, b = cls_adapters
    base = logits(tiny_classifier())
    model = tiny_classifier()
    assert load_named_adapter(model, "a", a) == [f"bert.encoder.layer.{i}.attention.self.{n}"
                                                 for i in (0, 1) for n in ("query", "value")]
    load_named_adapter(model, "b", b)
    assert adapter_names(model) == ["a", "b"]
    # the first adapter loaded is active; each gives exactly its single-adapter outputs
    assert torch.equal(logits(model), alone(a))
    set_adapter(model, "b")
    assert torch.equal(logits(model), alone(b))
    assert not torch.allclose(logits(model), base, atol=1e-3)
    with adapters_disabled(model):
        assert torch.equal(logits(model), base)  # the base model's outputs, head included
    assert torch.equal(logits(model), alone(b))
    set_adapter(model, None)
    assert torch.equal(logits(model), base)
    set_adapter(model, "a")
    assert torch.equal(logits(model), alone(a))
    # query has only adapter a: while b is active it runs as the plain base layer
    query = model.bert.encoder.layer[0].attention.self.query
    set_adapter(model, "b")
    assert query.adapter_names() == ["a"] and query.__dict__["forward"] == query.base_forward
    with pytest.raises(AdapterError, match="no adapter named 'c' is loaded \\(loaded: a, b\\)"):
        set_adapter(model, "c")
    # folding into the base folds the adapter in use, and only it (query stays the base)
    folded = copy.deepcopy(model)
    assert merge(folded) == 13  # q, k, v and 3 dense per layer, and the pooler
    assert torch.allclose(logits(folded), alone(b), atol=1e-5)
    assert torch.equal(folded.bert.encoder.layer[0].attention.self.query.weight, query.weight)


def test_a_trained_adapter_can_be_disabled_and_keeps_its_plain_forward():
    model = tiny_classifier()
    base = logits(model)
    cfg = validate({"data": {"train": "x"}, "method": {"name": "lora", "targets": "all-linear"}}).method
    methods.apply(model, cfg)
    layers = lora_layers(model)
    # the single-adapter path is the class's forward: nothing per call was added to it
    assert all("forward" not in layer.__dict__ for layer in layers.values())
    with torch.no_grad():
        for layer in layers.values():
            layer.lora_B.weight.normal_()
    trained = logits(model)
    with adapters_disabled(model):
        assert torch.equal(logits(model), base)
    assert torch.equal(logits(model), trained)
    assert all("forward" not in layer.__dict__ for layer in layers.values())


def test_loading_refuses_other_bases_methods_and_names(cls_adapters, tmp_path):
    a, _ = cls_adapters
    model = tiny_llama()
    wide = make_adapter(lambda: tiny_llama(48), tmp_path / "wide", 1, "causal_lm", r=2,
                        targets=["q_proj"])
    with pytest.raises(AdapterError, match=r"adapter 'w', module model\.layers\.0\.self_attn\.q_proj: "
                                           r"lora_A \(2, 48\) and lora_B \(48, 2\) do not fit the layer \(32 x 32\)"):
        load_named_adapter(model, "w", wide)
    with pytest.raises(AdapterError, match="adapter 'a': method.targets: no Linear layer matches"):
        load_named_adapter(model, "a", a)
    assert not lora_layers(model)  # nothing changed
    dora = make_adapter(tiny_llama, tmp_path / "dora", 1, "causal_lm", r=2, targets=["q_proj"])
    cfg = json.loads((dora / "adapter_config.json").read_text())
    (dora / "adapter_config.json").write_text(json.dumps({**cfg, "use_dora": True}))
    with pytest.raises(AdapterError, match="adapter 'd' is DoRA; only LoRA adapters can share"):
        load_named_adapter(model, "d", dora)
    ok = make_adapter(tiny_llama, tmp_path / "ok", 1, "causal_lm", r=2, targets=["q_proj"])
    load_named_adapter(model, "x", ok)
    with pytest.raises(AdapterError, match="an adapter named 'x' is already loaded"):
        load_named_adapter(model, "x", ok)


# ------------------------------------------------------------------------ merging


def delta(model, name: str) -> dict[str, torch.Tensor]:
    out = {}
    for module, layer in lora_layers(model).items():
        f = layer.factors(name)
        if f is not None:
            out[module] = (f[1] @ f[0]) * f[2]
    return out


@pytest.fixture
def lm_adapters(tmp_path):
    a = make_adapter(tiny_llama, tmp_path / "a", 1, "causal_lm", r=4, alpha=8,
                     targets=["q_proj", "v_proj"])
    b = make_adapter(tiny_llama, tmp_path / "b", 2, "causal_lm", r=4, alpha=4,
                     targets=["v_proj", "down_proj"])
    c = make_adapter(tiny_llama, tmp_path / "c", 3, "causal_lm", r=2, alpha=6,
                     targets=["q_proj", "v_proj"])
    return {"a": a, "b": b, "c": c}


def ours_loaded(paths: dict[str, Path]):
    model = tiny_llama()
    for name, path in paths.items():
        load_named_adapter(model, name, path)
    return model


def test_one_adapter_with_weight_one_is_that_adapter(lm_adapters):
    model = ours_loaded({"a": lm_adapters["a"]})
    want = lm_out(model)
    for combine in ("linear", "svd", "cat"):
        add_weighted_adapter(model, ["a"], [1.0], combine, CombineSpec(combine))
        got = delta(model, combine)
        assert set(got) == set(delta(model, "a"))
        for module, d in delta(model, "a").items():
            assert torch.allclose(got[module], d, atol=1e-6, rtol=1e-5), (combine, module)
        set_adapter(model, combine)
        assert torch.allclose(lm_out(model), want, atol=1e-5)
        set_adapter(model, "a")


CASES = [("linear", {}), ("svd", {}), ("svd", {"rank": 3}), ("cat", {}),
         ("ties", {"density": 0.5}), ("ties", {"density": 0.7, "majority_sign": "frequency"}),
         ("magnitude_prune", {"density": 0.4}), ("ties_svd", {"density": 0.5, "rank": 6})]


@pytest.mark.parametrize("combine,opts", CASES, ids=[f"{c}-{o}" for c, o in CASES])
def test_same_adapters_give_the_same_delta_weights_as_peft(combine, opts, lm_adapters):
    from peft import PeftModel

    names = ["a", "b"] if combine in ("linear", "ties", "magnitude_prune") else ["a", "b", "c"]
    weights = [0.7, -0.4, 1.3][: len(names)]
    peft = PeftModel.from_pretrained(tiny_llama(), str(lm_adapters[names[0]]), adapter_name=names[0])
    for n in names[1:]:
        peft.load_adapter(str(lm_adapters[n]), adapter_name=n)
    peft.add_weighted_adapter(names, weights, "m", combination_type=combine,
                              density=opts.get("density"), svd_rank=opts.get("rank"),
                              majority_sign_method=opts.get("majority_sign", "total"))
    ours = ours_loaded({n: lm_adapters[n] for n in names})
    spec = CombineSpec(combine, opts.get("density"), opts.get("rank"),  # type: ignore[arg-type]
                       opts.get("majority_sign", "total"))
    rank = add_weighted_adapter(ours, names, weights, "m", spec)
    got = delta(ours, "m")
    theirs = {n.removeprefix("base_model.model."): m.get_delta_weight("m")
              for n, m in peft.named_modules() if hasattr(m, "lora_A") and "m" in m.lora_A}
    assert rank == peft.peft_config["m"].r
    assert set(got) == set(theirs) and len(got) == 6  # q, v, down in 2 layers: the union
    for module in got:
        assert torch.allclose(got[module], theirs[module], atol=1e-5), module


def test_factor_merges_need_one_rank_and_svd_recompresses(lm_adapters):
    model = ours_loaded({k: lm_adapters[k] for k in ("a", "c")})
    with pytest.raises(AdapterError, match="need one rank \\(a has r=4, c has r=2\\); use svd"):
        add_weighted_adapter(model, ["a", "c"], [1, 1], "m", CombineSpec("ties", density=0.5))
    with pytest.raises(AdapterError, match="needs a density in \\(0, 1\\]"):
        add_weighted_adapter(model, ["a"], [1], "m", CombineSpec("dare_linear"))
    with pytest.raises(AdapterError, match="2 adapters but 1 weights"):
        add_weighted_adapter(model, ["a", "c"], [1], "m", CombineSpec("svd"))
    # svd to rank 1: the best rank-1 approximation of each layer's weighted delta sum
    add_weighted_adapter(model, ["a", "c"], [1.0, 0.5], "r1", CombineSpec("svd", rank=1))
    da, dc, got = delta(model, "a"), delta(model, "c"), delta(model, "r1")
    for module, d in got.items():
        full = da[module] + 0.5 * dc[module]
        u, s, vh = torch.linalg.svd(full)
        assert torch.allclose(d, s[0] * torch.outer(u[:, 0], vh[0]), atol=1e-5)
        assert torch.linalg.matrix_rank(d) == 1


def test_ties_by_hand():
    t1 = torch.tensor([1.0, -2.0, 3.0, -0.5, 0.2])
    t2 = torch.tensor([-1.5, 1.0, 2.0, 0.1, -0.3])
    # density 0.4 keeps int(0.4 * 5) = 2 entries each: t1 -> [0, -2, 3, 0, 0], t2 -> [-1.5, 0, 2, 0, 0]
    # sign vote on the pruned sums [-1.5, -2, 5, 0, 0] -> [-, -, +, +, +]; mean of agreeing weighted
    got = merge_task_tensors([t1, t2], [2.0, 1.0], "ties", density=0.4)
    assert torch.equal(got, torch.tensor([-1.5, -4.0, (6.0 + 2.0) / 2, 0.0, 0.0]))
    # the vote counts unweighted values: weights 3, 1 would make the sum of entry 0 positive
    a, b = torch.tensor([1.0, 2.0]), torch.tensor([-2.0, 1.0])
    assert torch.equal(merge_task_tensors([a, b], [3.0, 1.0], "ties", density=1.0),
                       torch.tensor([-2.0, (6.0 + 1.0) / 2]))
    # 'frequency' elects the more frequent sign: two small + beat one large -
    c = torch.tensor([0.1, 0.1]), torch.tensor([0.2, 0.2]), torch.tensor([-5.0, 1.0])
    assert torch.allclose(merge_task_tensors(list(c), [1, 1, 1], "ties", 1.0, "frequency"),
                          torch.tensor([0.15, 1.3 / 3]))
    assert torch.allclose(merge_task_tensors(list(c), [1, 1, 1], "ties", 1.0, "total"),
                          torch.tensor([-5.0, 1.3 / 3]))


def test_dare_by_hand_with_a_seeded_mask():
    t = torch.arange(1.0, 2001.0)
    got = drop_and_rescale(t, 0.25, torch.Generator().manual_seed(5))
    mask = torch.bernoulli(torch.full_like(t, 0.25), generator=torch.Generator().manual_seed(5))
    kept = mask.bool()
    assert torch.equal(got[kept], t[kept] / 0.25) and torch.equal(got[~kept], torch.zeros_like(t[~kept]))
    assert 0.2 < kept.float().mean() < 0.3
    # dare_linear: each tensor dropped and rescaled on its own (draws in order), then weighted
    t1, t2 = torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([-1.0, 1.0, -1.0, 1.0])
    g = torch.Generator().manual_seed(0)
    m1 = torch.bernoulli(torch.full_like(t1, 0.5), generator=g)
    m2 = torch.bernoulli(torch.full_like(t2, 0.5), generator=g)
    got = merge_task_tensors([t1, t2], [0.5, 2.0], "dare_linear", 0.5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(got, 0.5 * t1 * m1 / 0.5 + 2.0 * t2 * m2 / 0.5)
    # dare_ties: the same draws, then the sign vote and the mean of agreeing entries
    p1, p2 = t1 * m1 / 0.5, t2 * m2 / 0.5
    agree = torch.stack([p1, p2]).sign() == torch.where(p1 + p2 >= 0, 1.0, -1.0)
    want = ((torch.stack([0.5 * p1, 2.0 * p2]) * agree).sum(0) / agree.sum(0).clamp(min=1))
    got = merge_task_tensors([t1, t2], [0.5, 2.0], "dare_ties", 0.5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(got, want)


def test_dare_merge_is_seeded(lm_adapters):
    model = ours_loaded({k: lm_adapters[k] for k in ("a", "b")})
    for name, seed in (("x", 1), ("y", 1), ("z", 2)):
        add_weighted_adapter(model, ["a", "b"], [1, 1], name, CombineSpec("dare_ties", 0.5, seed=seed))
    x, y, z = delta(model, "x"), delta(model, "y"), delta(model, "z")
    assert all(torch.equal(x[m], y[m]) for m in x) and not all(torch.equal(x[m], z[m]) for m in x)


def test_heads_are_kept_not_combined(cls_adapters, tmp_path):
    from peft import PeftModel
    from transformers import BertForSequenceClassification

    a, b = cls_adapters
    model = tiny_classifier()
    load_named_adapter(model, "a", a)
    load_named_adapter(model, "b", b)
    with pytest.raises(AdapterError, match="adapters a, b each carry their own task head"):
        add_weighted_adapter(model, ["a", "b"], [0.5, 0.5], "m", CombineSpec("svd"))
    add_weighted_adapter(model, ["a", "b"], [0.5, 0.5], "m", CombineSpec("svd"), head_from="b")
    set_adapter(model, "m")
    want = logits(model)
    out = save_named_adapter(model, "m", tmp_path / "m")
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert (cfg["r"], cfg["lora_alpha"], cfg["use_rslora"], cfg["modules_to_save"]) == (4, 4, False, ["classifier"])
    assert cfg["target_modules"] == ["dense", "key", "query", "value"]
    assert torch.allclose(alone(out), want, atol=1e-6)
    base = BertForSequenceClassification(tiny_classifier().config)
    base.load_state_dict(tiny_classifier().state_dict())
    theirs = PeftModel.from_pretrained(base.eval(), str(out))
    with torch.no_grad():
        assert torch.allclose(theirs(**INPUT).logits, want, atol=1e-5)


# ------------------------------------------------------------------------ the CLI


@pytest.fixture
def two_runs(tiny_model_dir, tiny_data, tmp_path):
    from conftest import tiny_config
    from tunelab.recipes.run import train

    runs = []
    for name, seed in (("pos", 0), ("neg", 1)):
        tree = tiny_config(tiny_model_dir, tiny_data, tmp_path / name, max_steps=6, seed=seed,
                           eval_every=6, checkpoint_every=6)
        train(validate(tree), log=lambda _: None)
        runs.append(tmp_path / name)
    return runs


def test_merge_cli_combines_runs_into_a_run_and_into_the_base(two_runs, tmp_path, capsys):
    from transformers import AutoModelForSequenceClassification

    from tunelab.cli import main
    from tunelab.runs.trained import load_run_base, load_trained

    pos, neg = two_runs
    args = ["merge", str(pos), str(neg), "--weights", "0.6", "0.4", "--combine", "ties",
            "--density", "0.5"]
    assert main(args + ["--out", str(tmp_path / "m")]) == 2
    assert "each carry their own task head" in capsys.readouterr().err
    assert main(args + ["--head", "neg", "--out", str(neg)]) == 2
    assert f"--out {neg} is one of the sources" in capsys.readouterr().err
    assert main(args + ["--head", "neg", "--out", str(tmp_path / "m")]) == 0
    assert "combined pos x 0.6, neg x 0.4 (ties, density 0.5): rank 4 on 4 layers" in capsys.readouterr().out
    # the same combination in-process
    model, tok, _ = load_run_base(pos)
    load_named_adapter(model, "pos", pos / "adapter")
    load_named_adapter(model, "neg", neg / "adapter")
    add_weighted_adapter(model, ["pos", "neg"], [0.6, 0.4], "m", CombineSpec("ties", 0.5), "neg")
    set_adapter(model, "m")
    enc = tok(["a wonderful story", "the plot was awful"], padding=True, return_tensors="pt")
    with torch.no_grad():
        want = model(**enc).logits
    merged, _, info = load_trained(tmp_path / "m")  # the output is a run directory
    with torch.no_grad():
        assert torch.allclose(merged(**enc).logits, want, atol=1e-6)
    assert info["merge"]["names"] == ["pos", "neg"] and info["merge"]["head_from"] == "neg"
    assert main(["predict", str(tmp_path / "m"), "a wonderful story"]) == 0
    assert main(args + ["--head", "pos", "--out", str(tmp_path / "m")]) == 0  # a merge over a merge
    assert main(["merge", str(neg), "--out", str(pos)]) == 2
    assert "holds a trained run; choose a new directory" in capsys.readouterr().err
    assert main(args + ["--head", "neg", "--out", str(tmp_path / "full"), "--into-base"]) == 0
    assert "merged the combined adapter into 4 layers" in capsys.readouterr().out
    plain = AutoModelForSequenceClassification.from_pretrained(tmp_path / "full").eval()
    with torch.no_grad():
        assert torch.allclose(plain(**enc).logits, want, atol=1e-5)
    # the one-run form keeps working, and refuses to write over an adapter
    assert main(["merge", str(pos), str(tmp_path / "one")]) == 0
    assert main(["merge", str(pos), str(neg / "adapter")]) == 2
    assert "holds a run or an adapter; to combine adapters, write the output with --out" in capsys.readouterr().err
    assert main(["merge", str(pos), str(tmp_path / "two"), "--into-base"]) == 2
    assert "--into-base combines adapters; name the output with --out OUT" in capsys.readouterr().err


def test_merge_cli_on_adapter_directories_recompresses_and_checks_bases(tmp_path, capsys):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from sft_fixtures import tiny_llama_dir
    from tunelab.cli import main

    base = tiny_llama_dir(tmp_path / "llama")
    made = {}
    for name, seed, targets in (("a", 1, ["q_proj", "v_proj"]), ("b", 2, ["v_proj", "o_proj"])):
        model = AutoModelForCausalLM.from_pretrained(base).eval()
        cfg = validate({"data": {"train": "x"}, "method": {"name": "lora", "r": 4, "targets": targets}}).method
        methods.apply(model, cfg)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for layer in lora_layers(model).values():
                layer.lora_B.weight.copy_(torch.randn(layer.lora_B.weight.shape, generator=g))
        made[name] = save_adapter(model, cfg, [], str(base), tmp_path / name, "causal_lm")
    out = tmp_path / "svd2"
    assert main(["merge", str(made["a"]), str(made["b"]), "--combine", "svd", "--rank", "2",
                 "--weights", "1", "-0.5", "--out", str(out)]) == 0
    assert "(svd): rank 2 on 6 layers" in capsys.readouterr().out
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert (cfg["r"], cfg["lora_alpha"], cfg["task_type"]) == (2, 2, "CAUSAL_LM")
    ids = torch.tensor([[5, 9, 30, 2, 7]])
    ours = AutoModelForCausalLM.from_pretrained(base).eval()
    load_named_adapter(ours, "a", made["a"])
    load_named_adapter(ours, "b", made["b"])
    add_weighted_adapter(ours, ["a", "b"], [1.0, -0.5], "m", CombineSpec("svd", rank=2))
    set_adapter(ours, "m")
    theirs = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base).eval(), str(out))
    with torch.no_grad():
        assert torch.allclose(theirs(ids).logits, ours(ids).logits, atol=1e-5)
    # typos and mismatches fail before any model loads, naming what is wrong
    assert main(["merge", str(made["a"]), "--combine", "tie", "--out", str(tmp_path / "x")]) == 2
    assert "combine 'tie' is not one of linear, ties" in capsys.readouterr().err
    other = json.loads((made["b"] / "adapter_config.json").read_text())
    (made["b"] / "adapter_config.json").write_text(json.dumps({**other, "base_model_name_or_path": "other"}))
    assert main(["merge", str(made["a"]), str(made["b"]), "--out", str(tmp_path / "x")]) == 2
    assert f"{made['b']} was trained on other, {made['a']} on {base}" in capsys.readouterr().err


def test_predict_eval_chat_pick_adapters_by_name(two_runs, tmp_path, capsys):
    import io

    from sft_fixtures import tiny_llama_dir
    from tunelab.cli import main
    from tunelab.commands.generate import chat, load_generator
    from tunelab.runs.named_adapters import load_run
    from tunelab.runs.trained import load_run_base

    pos, neg = two_runs
    text = "the plot was awful and boring"
    outs = {}
    for key, extra in (("pos", []), ("neg", ["--add-adapter", str(neg), "--adapter", "neg"]),
                       ("neg-alone", []), ("base", ["--adapter", "base"])):
        run = neg if key == "neg-alone" else pos
        assert main(["predict", str(run), text, *extra]) == 0
        outs[key] = capsys.readouterr().out
    assert outs["neg"] == outs["neg-alone"] and outs["neg"] != outs["pos"]
    torch.manual_seed(0)  # the base classifier's head is drawn at random when it loads
    model, tok, _ = load_run(pos, [f"other={neg}"], "base")
    torch.manual_seed(0)
    bare, _, _ = load_run_base(pos)
    assert adapter_names(model) == ["pos", "other"]
    enc = tok([text], return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(model(**enc).logits, bare(**enc).logits)
    assert main(["eval", str(pos), "--adapter", "nope"]) == 2
    assert "no adapter named 'nope' is loaded (loaded: pos)" in capsys.readouterr().err
    # a causal LM named by its directory, with two adapters, switched inside a chat
    llama = tiny_llama_dir(tmp_path / "llama")
    adapters = []
    for name, seed in (("x", 1), ("y", 2)):
        m, _ = load_generator(str(llama))
        cfg = validate({"data": {"train": "x"}, "method": {"name": "lora", "targets": ["q_proj"]}}).method
        methods.apply(m, cfg)
        with torch.no_grad():
            for layer in lora_layers(m).values():
                layer.lora_B.weight.copy_(torch.randn(layer.lora_B.weight.shape,
                                                      generator=torch.Generator().manual_seed(seed)))
        adapters.append(f"{name}={save_adapter(m, cfg, [], str(llama), tmp_path / name, 'causal_lm')}")
    model, _ = load_generator(str(llama), adapters, "y")
    assert adapter_names(model) == ["x", "y"] and model.tunelab_adapters.active == "y"
    chat(str(llama), None, 2, 0.0, stdin=io.StringIO("/adapter x\n/adapter base\n/adapter z\n"),
         adapters=adapters)
    out = capsys.readouterr().out
    assert "(adapter: x)" in out and "(adapter: base)" in out
    assert "(no adapter named 'z' is loaded (loaded: x, y); or base)" in out
