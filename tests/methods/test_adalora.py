"""AdaLoRA: peft's allocation decisions step for step, the budget schedule, adapters both ways
with pruned ranks, a training run (ranks change, are saved, logged and plotted), exact
resume, and export to a plain LoRA adapter that computes the same outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import AdaLoraConfig as PeftAdaLoraConfig
from peft import LoraConfig as PeftLoraConfig
from peft import PeftModel, get_peft_model
from safetensors.torch import load_file

from conftest import interrupt_then_resume, tiny_config
from test_methods_contract import INPUT, logits, method_cfg, perturb, tiny_classifier
from tunelab import methods
from tunelab.cli import main
from tunelab.config import validate
from tunelab.errors import ConfigError, MethodError
from tunelab.methods.adalora import adalora_layers, rank_pattern
from tunelab.methods.lora import lora_layers
from tunelab.methods.peft_format import load_adapter, save_adapter
from tunelab.recipes.run import train

PEFT_KW = {"task_type": "SEQ_CLS", "init_r": 4, "target_r": 2, "lora_alpha": 8,
           "target_modules": ["query", "value"], "total_step": 10, "tinit": 1, "tfinal": 2}
OURS = {"init_r": 4, "target_r": 2, "alpha": 8, "targets": ["query", "value"], "tinit": 1,
        "tfinal": 2, "total_step": 10}
LABELS = torch.tensor([0, 1, 2])


def quiet(_: str) -> None:
    pass


def peft_adalora(**kw):
    return get_peft_model(tiny_classifier(), PeftAdaLoraConfig(**{**PEFT_KW, **kw})).eval()


def our_name(peft_name: str) -> str:
    """peft's parameter name -> ours: no wrapper prefix, adapter name or modules_to_save."""
    return (peft_name.removeprefix("base_model.model.").replace(".default", "")
            .replace("modules_to_save.", ""))


def copy_weights(theirs, ours) -> None:
    params = dict(ours.named_parameters())
    with torch.no_grad():
        for name, p in theirs.named_parameters():
            if p.requires_grad:
                params[our_name(name)].copy_(p)


def peft_pattern(theirs) -> dict[str, list[bool]] | None:
    pattern = theirs.peft_config["default"].rank_pattern
    return None if pattern is None else {our_name(k): v for k, v in pattern.items()}


def train_both(theirs, ours, hook, steps: int) -> None:
    """The same AdamW steps on one batch; peft allocates as its docs say, we through the hook."""
    opt_t = torch.optim.AdamW([p for p in theirs.parameters() if p.requires_grad], lr=1e-2,
                              weight_decay=0.0)
    opt_o = torch.optim.AdamW([p for p in ours.parameters() if p.requires_grad], lr=1e-2,
                              weight_decay=0.0)
    for step in range(steps):
        loss_t = theirs(**INPUT, labels=LABELS).loss  # peft adds the orthogonality penalty
        loss_t.backward()
        opt_t.step()
        theirs.base_model.update_and_allocate(step)
        opt_t.zero_grad()
        loss_o = ours(**INPUT, labels=LABELS).loss + hook.extra_loss()
        loss_o.backward()
        opt_o.step()
        hook.after_step(step)
        opt_o.zero_grad()
        assert loss_o.item() == pytest.approx(loss_t.item(), abs=1e-5), step
        assert rank_pattern(ours) == peft_pattern(theirs), step


def trained_pair(steps: int):
    """peft's AdaLoRA model and ours from the same weights after `steps` identical steps."""
    torch.manual_seed(0)
    theirs = peft_adalora()
    ours = tiny_classifier()
    hook = methods.apply(ours, method_cfg("adalora", OURS)).hook
    copy_weights(theirs, ours)
    hook.start(10)
    train_both(theirs, ours, hook, steps)
    return theirs, ours


def test_rank_allocation_matches_peft_step_for_step():
    theirs, ours = trained_pair(10)
    ranks = {n: int(m.pattern().sum()) for n, m in adalora_layers(ours).items()}
    assert sum(ranks.values()) == 2 * 4  # target_r x layers after the final allocation
    assert len(set(ranks.values())) > 1  # the budget went where it helps: ranks differ
    mine = dict(ours.named_parameters())
    for name, p in theirs.named_parameters():
        if p.requires_grad:
            assert torch.allclose(mine[our_name(name)], p, atol=1e-5), name


@pytest.mark.parametrize("tinit,tfinal,delta", [(1, 2, 1), (0, 0, 1), (3, 5, 2), (0, 4, 3)])
def test_budget_schedule_is_peft_s_cubic(tinit, tfinal, delta):
    from peft.tuners.adalora.layer import RankAllocator as PeftAllocator

    theirs = peft_adalora(tinit=tinit, tfinal=tfinal, deltaT=delta, total_step=20)
    reference = PeftAllocator(theirs.base_model.model, theirs.peft_config["default"], "default")
    ours = tiny_classifier()
    hook = methods.apply(ours, method_cfg("adalora", {**OURS, "tinit": tinit, "tfinal": tfinal,
                                                      "deltaT": delta, "total_step": None})).hook
    hook.start(20)  # total_step unset: the run's length
    assert [hook.budget(s) for s in range(22)] == [reference.budget_schedule(s) for s in range(22)]
    if (tinit, tfinal, delta) == (1, 2, 1):
        assert [hook.budget(s)[0] for s in range(0, 20, 3)] == [16, 13, 10, 9, 8, 8, 8]


def test_schedule_without_a_shrinking_phase_is_refused():
    with pytest.raises(ConfigError, match=r"tinit \(8\) \+ tfinal \(2\) leave no step of "
                                          r"method.total_step \(10\)"):
        method_cfg("adalora", {"tinit": 8, "tfinal": 2, "total_step": 10})
    hook = methods.apply(tiny_classifier(), method_cfg("adalora", {"tinit": 5, "tfinal": 5})).hook
    with pytest.raises(ConfigError, match=r"method.tinit / method.tfinal: .*leave no step of the "
                                          r"run's steps \(9\) to shrink"):
        hook.start(9)
    with pytest.raises(ConfigError, match="target_r .9. must not exceed init_r .4."):
        method_cfg("adalora", {"init_r": 4, "target_r": 9})


def test_peft_adapter_with_pruned_ranks_round_trips(tmp_path: Path):
    """peft trains and prunes; tunelab loads it at the kept ranks, re-saves it, peft reloads."""
    theirs, _ = trained_pair(7)  # mid-schedule: some ranks pruned
    want = logits(theirs)
    theirs.save_pretrained(tmp_path / "peft")
    loaded = tiny_classifier()
    load_adapter(loaded, tmp_path / "peft", ["classifier"])
    assert torch.allclose(logits(loaded), want, atol=1e-5)
    saved = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())["rank_pattern"]
    assert {n: m.r for n, m in adalora_layers(loaded).items()} == {
        k.removesuffix(".lora_E"): sum(v) for k, v in saved.items()}
    from tunelab.methods.peft_format import read_adapter_config

    config, method, path = read_adapter_config(tmp_path / "peft")
    save_adapter(loaded, method.config_from_adapter(config, str(path)), ["classifier"], "tiny",
                 tmp_path / "ours")
    ours_cfg = json.loads((tmp_path / "ours" / "adapter_config.json").read_text())
    assert ours_cfg["rank_pattern"] == saved and ours_cfg["total_step"] == 10
    back = PeftModel.from_pretrained(tiny_classifier(), tmp_path / "ours").eval()
    assert torch.allclose(logits(back), want, atol=1e-5)


def test_our_pruned_adapter_loads_in_peft(tmp_path: Path):
    torch.manual_seed(0)
    model = tiny_classifier()
    cfg = method_cfg("adalora", OURS)
    report = methods.apply(model, cfg)
    perturb(model)
    report.hook.start(10)
    for p in model.parameters():
        p.grad = torch.randn_like(p) if p.requires_grad else None
    for step in range(6):
        report.hook.after_step(step)
    assert report.hook.rank() < 16
    want = logits(model)
    save_adapter(model, cfg, report.head, "tiny", tmp_path)
    state = load_file(str(tmp_path / "adapter_model.safetensors"))
    pattern = json.loads((tmp_path / "adapter_config.json").read_text())["rank_pattern"]
    for key, kept in pattern.items():
        layer = key.removesuffix(".lora_E")
        assert state[f"base_model.model.{layer}.lora_A"].shape == (sum(kept), 32)
        assert state[f"base_model.model.{layer}.lora_B"].shape == (32, sum(kept))
    theirs = PeftModel.from_pretrained(tiny_classifier(), tmp_path).eval()
    assert torch.allclose(logits(theirs), want, atol=1e-5)
    fresh = tiny_classifier()
    load_adapter(fresh, tmp_path, ["classifier"])
    assert torch.allclose(logits(fresh.eval()), want, atol=1e-6)


def test_peft_lora_rank_pattern_loads_by_its_suffix_rule(tmp_path: Path):
    theirs = get_peft_model(tiny_classifier(), PeftLoraConfig(
        task_type="SEQ_CLS", r=4, lora_alpha=8, target_modules=["query", "value"],
        rank_pattern={"layer.0.attention.self.query": 2, "value": 3})).eval()
    perturb(theirs)
    theirs.save_pretrained(tmp_path)
    ours = tiny_classifier()
    load_adapter(ours, tmp_path, ["classifier"])
    assert {n.split("layer.")[1]: m.r for n, m in lora_layers(ours).items()} == {
        "0.attention.self.query": 2, "0.attention.self.value": 3,
        "1.attention.self.query": 4, "1.attention.self.value": 3}
    assert torch.allclose(logits(ours.eval()), logits(theirs), atol=1e-5)


def adalora_tree(model_dir, data, out, **train_kw) -> dict:
    tree = tiny_config(model_dir, data, out, **{"max_steps": 12, "lr": 1e-2, **train_kw})
    tree["method"] = {"name": "adalora", "init_r": 4, "target_r": 2, "alpha": 8,
                      "targets": ["query", "value"], "tinit": 2, "tfinal": 3}
    return tree


def test_training_run_prunes_logs_plots_saves_and_exports(tiny_model_dir, tiny_data, tmp_path,
                                                          capsys):
    from transformers import AutoModelForSequenceClassification

    from tunelab.models import load_classifier
    from tunelab.runs.trained import load_trained

    run = tmp_path / "run"
    summary = train(validate(adalora_tree(tiny_model_dir, tiny_data, run)), log=quiet)
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    budget = {r["step"]: r["rank_budget"] for r in records if "rank_budget" in r}
    rank = {r["step"]: r["rank"] for r in records if "rank" in r}
    # 4 layers: 16 ranks for steps 0..2 (logged as 1..3), cubic to 8 at step 12 - 3, then held
    cubic = [16] * 3 + [int(8 * (1 - (s - 2) / 7) ** 3 + 8) for s in range(3, 10)] + [8, 8]
    assert [budget[s] for s in range(1, 13)] == cubic == [16, 16, 16, 13, 10, 9, 8, 8, 8, 8, 8, 8]
    assert rank[3] == 16 and rank[4] == 13 and rank[12] == 8  # the masks follow the budget
    assert summary["rank_total"] == 8 and sum(summary["rank_pattern"].values()) == 8
    assert (run / "rank_pattern.png").stat().st_size > 1000
    adapter = json.loads((run / "adapter" / "adapter_config.json").read_text())
    assert adapter["total_step"] == 12 and adapter["peft_type"] == "ADALORA"
    assert {k.removesuffix(".lora_E"): sum(v) for k, v in adapter["rank_pattern"].items()} \
        == summary["rank_pattern"]

    # the run as a plain LoRA adapter: same outputs in tunelab and in peft
    model, tokenizer, info = load_trained(run)
    enc = tokenizer(["the movie was great", "awful plot and acting"], padding=True,
                    return_tensors="pt")
    with torch.no_grad():
        want = model(**enc).logits
    assert main(["export", str(run), "--to", "lora", str(tmp_path / "lora")]) == 0
    assert "wrote a LoRA adapter to" in capsys.readouterr().out
    config = json.loads((tmp_path / "lora" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA"
    ours = load_classifier(tiny_model_dir, info["labels"])
    load_adapter(ours, tmp_path / "lora", ["classifier"])
    assert {n: m.r for n, m in lora_layers(ours).items()} == {
        n: r for n, r in summary["rank_pattern"].items() if r > 0}
    base = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=2)
    theirs = PeftModel.from_pretrained(base, tmp_path / "lora").eval()
    with torch.no_grad():
        assert torch.allclose(ours.eval()(**enc).logits, want, atol=1e-5)
        assert torch.allclose(theirs(**enc).logits, want, atol=1e-5)


def test_export_refuses_other_runs(tiny_model_dir, tiny_data, tmp_path, capsys):
    train(validate(tiny_config(tiny_model_dir, tiny_data, tmp_path / "lora", max_steps=2)),
          log=quiet)
    assert main(["export", str(tmp_path / "lora"), "--to", "lora", str(tmp_path / "out")]) == 2
    assert "is a lora run; only adalora runs are converted" in capsys.readouterr().err


def test_resume_reproduces_the_uninterrupted_run(tiny_model_dir, tiny_data, tmp_path,
                                                 monkeypatch):
    """Interrupted mid-schedule, the resumed run keeps the same importance averages and masks."""
    tree = adalora_tree(tiny_model_dir, tiny_data, tmp_path / "straight")
    tree["model"]["dropout"] = 0.2
    train(validate(tree), log=quiet)
    # mid-schedule, between checkpoints
    interrupt_then_resume(tree, tmp_path / "interrupted", monkeypatch, at=5)
    a = load_file(str(tmp_path / "straight" / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "interrupted" / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ca, cb = (json.loads((tmp_path / d / "adapter" / "adapter_config.json").read_text())
              for d in ("straight", "interrupted"))
    assert ca["rank_pattern"] == cb["rank_pattern"]
    # the allocator's state two steps after the resume: the same averages and masks
    ha, hb = (torch.load(tmp_path / d / "checkpoints" / "step-0000008" / "optimizer.pt",
                         weights_only=True)["hook"] for d in ("straight", "interrupted"))
    for part in ("ema_ipt", "ema_unc", "masks"):
        assert ha[part].keys() == hb[part].keys() and len(ha[part]) > 0, part
        assert all(torch.equal(ha[part][k], hb[part][k]) for k in ha[part]), part


def test_rank_pattern_names_must_fit_the_model():
    cfg = method_cfg("adalora", {**OURS, "rank_pattern": {"nowhere.lora_E": [True] * 4}})
    with pytest.raises(MethodError, match=r"method.rank_pattern: nowhere.lora_E names no adapted "
                                          r"layer \(targets: \['query', 'value'\]\)"):
        methods.apply(tiny_classifier(), cfg)
    short = method_cfg("adalora", {**OURS, "rank_pattern": {
        "bert.encoder.layer.0.attention.self.query.lora_E": [True] * 3}})
    with pytest.raises(MethodError, match="query.lora_E' has 3 entries; init_r is 4"):
        methods.apply(tiny_classifier(), short)
    hook = methods.apply(tiny_classifier(), short.model_copy(update={"rank_pattern": {
        "bert.encoder.layer.0.attention.self.query.lora_E": [True, False, True, True]}})).hook
    with pytest.raises(ConfigError, match="method.rank_pattern: it describes a trained adapter"):
        hook.start(10)


def test_penalty_counts_once_per_step_however_the_batch_is_split(tiny_model_dir, tiny_data,
                                                                  tmp_path):
    """One step over [8] examples equals one over micro-batches [3] + [5], penalty included."""
    from tunelab.data import load_splits
    from tunelab.models import load_classifier, load_tokenizer
    from tunelab.tasks.classification import ClassificationTask
    from tunelab.train.loop import Trainer

    def one_step(parts: list[list[int]]) -> dict[str, torch.Tensor]:
        tree = adalora_tree(tiny_model_dir, tiny_data, tmp_path, optimizer="sgd", momentum=0.0,
                            max_grad_norm=None, lr=0.5, warmup_ratio=0.0, schedule="constant")
        tree["method"]["orth_reg_weight"] = 2.0
        cfg = validate(tree)
        splits = load_splits(cfg.data)
        torch.manual_seed(0)
        model = load_classifier(tiny_model_dir, splits.labels, dropout=0.0)
        report = methods.apply(model, cfg.method)
        tok = load_tokenizer(tiny_model_dir)
        task = ClassificationTask(splits.labels, 32, tok.pad_token_id)
        trainer = Trainer(model, task, task.encode(tok, splits.train), task.encode(tok, splits.dev),
                          cfg.train, tmp_path, torch.device("cpu"), hook=report.hook)
        trainer.micro_batches = lambda step: parts
        trainer._step(0, [p for p in model.parameters() if p.requires_grad])
        assert trainer.hook_log["orth_reg"] > 0
        return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    whole = one_step([list(range(8))])
    split = one_step([[0, 1, 2], [3, 4, 5, 6, 7]])
    for name in whole:
        assert torch.allclose(whole[name], split[name], atol=1e-6), name


def test_two_process_ddp_allocates_as_one_process_and_fsdp_is_refused(tiny_model_dir, tiny_data,
                                                                      tmp_path):
    """Every process sees the all-reduced gradients, so all prune the same triplets."""
    import sys

    import yaml

    from conftest import run

    paths = {}
    for name in ("single", "ddp", "fsdp"):
        tree = adalora_tree(tiny_model_dir, tiny_data, tmp_path / name, eval_every=6)
        tree["model"]["dropout"] = 0.0  # dropout draws differ per process
        if name == "fsdp":
            tree["train"]["distributed"] = "fsdp"
        paths[name] = tmp_path / f"{name}.yaml"
        paths[name].write_text(yaml.safe_dump(tree))
    single = run([sys.executable, "-m", "tunelab", "train", str(paths["single"])], tmp_path)
    assert single.returncode == 0, single.stderr
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                "--master_port", "29541", "-m", "tunelab", "train"]
    ddp = run(torchrun + [str(paths["ddp"])], tmp_path)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    a, b = (load_file(str(tmp_path / d / "adapter" / "adapter_model.safetensors"))
            for d in ("single", "ddp"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    ca, cb = (json.loads((tmp_path / d / "adapter" / "adapter_config.json").read_text())
              for d in ("single", "ddp"))
    assert ca["rank_pattern"] == cb["rank_pattern"] is not None
    fsdp = run(torchrun + [str(paths["fsdp"])], tmp_path)
    assert fsdp.returncode != 0
    assert "train.distributed: fsdp shards the parameters, and this method's RankAllocator " \
           "needs them whole every step; use ddp" in fsdp.stderr
