"""DP-SGD (tunelab/train/privacy.py): per-example gradients and clipping, Poisson batches, the
noise Opacus calibrates, the epsilon the accountant gives, and the non-private limit."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from opacus.accountants import PRVAccountant, RDPAccountant
from opacus.accountants.utils import get_noise_multiplier
from safetensors.torch import load_file

from conftest import sigterm_after_step, tiny_config
from ner_fixtures import ner_config, toy_ner_files
from tunelab import methods
from tunelab.config import validate
from tunelab.config.privacy import PrivacyConfig
from tunelab.recipes.run import train
from tunelab.recipes.setup import setup
from tunelab.train.distributed import Dist
from tunelab.train.privacy import PrivateTraining
from tunelab.train.signals import Interrupted

N_TRAIN = 96  # rows in toy_sentiment_files' train.tsv


def quiet(_: str) -> None:
    pass


def private_tree(model_dir: Path, data: dict[str, Path], out: Path, privacy: dict,
                 **train) -> dict:
    tree = tiny_config(model_dir, data, out, **{"eval_every": None, "checkpoint_every": None,
                                                "eval_at_start": False, **train})
    tree["model"]["dropout"] = 0.0
    tree["privacy"] = privacy
    return tree


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# --------------------------------------------------------------------- per-example gradients

METHOD_CASES = {
    "lora": {"name": "lora", "r": 4, "alpha": 8, "targets": ["query", "value", "dense"]},
    "ia3": {"name": "ia3"},
    "bitfit": {"name": "bitfit"},
    "full": {"name": "full"},  # embeddings too: word, position (one row per batch), type
    "freeze": {"name": "freeze", "train_last_layers": 1},
}


def hooked(tree: dict, clip: float):
    """(setup, engine, model) for `tree` with the engine's hooks on, noise 0; LoRA's B drawn
    non-zero so that A gets gradients too."""
    cfg = validate(tree)
    s = setup(cfg, quiet)
    methods.apply(s.model, cfg.method)
    s.task.choose_batches(s.model, cfg, quiet)
    torch.manual_seed(1)
    for name, p in s.model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.1)
    s.model.train()
    trainable = [p for p in s.model.parameters() if p.requires_grad]
    engine = PrivateTraining(PrivacyConfig(noise_multiplier=0.0, max_grad_norm=clip),
                             cfg.train, len(s.train))
    engine.start(s.model, torch.optim.SGD(trainable, lr=0.1), 4, Dist(), quiet)
    return s, engine


def check_per_example(s, engine, index: list[int], clip: float) -> None:
    """The gradients Opacus gives per example equal each example's gradient computed alone;
    after clipping every one has norm <= clip, and the step's sum is the sum of those."""
    seen: dict[str, list[torch.Tensor]] = {}
    opt = engine.optimizer
    real = opt.clip_and_accumulate

    def spy() -> None:
        seen["per_example"] = [p.grad_sample.detach().clone() for p in opt.params]
        real()
        seen["summed"] = [p.summed_grad.detach().clone() for p in opt.params]

    opt.clip_and_accumulate = spy
    s.task.loss_sum(s.model, s.task.collate(s.train, index)).backward()
    engine.after_backward()
    per_example = seen["per_example"]
    assert all(g.shape[0] == len(index) for g in per_example)

    engine.hooks.disable_hooks()
    for row, i in enumerate(index):
        s.model.zero_grad(set_to_none=True)
        s.task.loss_sum(s.model, s.task.collate(s.train, [i])).backward()
        for p, g in zip(opt.params, per_example):
            alone = p.grad if p.grad is not None else torch.zeros_like(p)
            torch.testing.assert_close(g[row], alone, rtol=1e-4, atol=1e-6)
    engine.hooks.enable_hooks()

    flat = torch.cat([g.reshape(len(index), -1) for g in per_example], dim=1)  # (B, P)
    norms = flat.norm(dim=1)
    assert (norms > clip).any()  # the clip acts on this batch
    clipped = flat * (clip / (norms + 1e-6)).clamp(max=1.0).unsqueeze(1)
    assert (clipped.norm(dim=1) <= clip * (1 + 1e-5)).all()
    summed = torch.cat([g.reshape(-1) for g in seen["summed"]])
    torch.testing.assert_close(summed, clipped.sum(0), rtol=1e-4, atol=1e-7)

    engine.finish_step(0)  # noise 0: the clipped sum over the expected batch size
    grads = torch.cat([p.grad.reshape(-1) for p in opt.params])
    torch.testing.assert_close(grads, clipped.sum(0) / engine.expected, rtol=1e-4, atol=1e-8)
    engine.close()


@pytest.mark.parametrize("method", list(METHOD_CASES))
def test_per_example_gradients_are_exact_and_clipped_classification(
        tiny_model_dir, tiny_data, tmp_path, method):
    tree = private_tree(tiny_model_dir, tiny_data, tmp_path / "r", {"noise_multiplier": 0.0})
    tree["method"] = METHOD_CASES[method]
    s, engine = hooked(tree, clip=1e-3)
    check_per_example(s, engine, [0, 5, 17, 40, 63], clip=1e-3)


@pytest.mark.parametrize("method", ["lora", "full"])
def test_per_example_gradients_are_exact_and_clipped_ner(tiny_model_dir, tmp_path, method):
    tree = ner_config(tiny_model_dir, toy_ner_files(tmp_path), tmp_path / "r",
                      METHOD_CASES[method])
    tree["model"]["dropout"] = 0.0
    tree["privacy"] = {"noise_multiplier": 0.0}
    s, engine = hooked(tree, clip=1e-3)
    check_per_example(s, engine, [1, 2, 30, 77], clip=1e-3)


@pytest.mark.parametrize("method", ["lora", "head"])
def test_per_example_gradients_are_exact_and_clipped_chat_sft(tmp_path, method):
    """LoRA: exact. A trained output layer sees only the trained tokens (N, H), not (B, T, H),
    so its gradients cannot be split by example: refused, by name, at the first step."""
    from sft_fixtures import PAIRS, tiny_llama_dir
    from tunelab.errors import ConfigError

    data = tmp_path / "train.json"
    data.write_text(json.dumps([{"instruction": q, "input": "", "output": a}
                                for q, a in PAIRS * 3]))
    tree = {"task": "causal_lm", "model": {"name": str(tiny_llama_dir(tmp_path / "llama")),
                                           "max_length": 64, "dropout": 0.0},
            "data": {"path": str(data), "eval_size": 2},
            "method": {**METHOD_CASES[method], "targets": "all-linear"} if method == "lora"
            else {"name": "freeze", "train_last_layers": 0, "train_modules": ["lm_head"]},
            "privacy": {"noise_multiplier": 0.0}, "output_dir": str(tmp_path / "r")}
    s, engine = hooked(tree, clip=1e-3)
    if method == "head":
        s.task.loss_sum(s.model, s.task.collate(s.train, [0, 3, 5])).backward()
        with pytest.raises(ConfigError, match=r"privacy: lm_head.weight: its layer sees the "
                                              r"batch regrouped \(\d+ rows for 3 examples"):
            engine.after_backward()
        return
    check_per_example(s, engine, [0, 3, 5], clip=1e-3)


# --------------------------------------------------------------------- sampling

def test_poisson_batches_are_a_function_of_seed_and_step(tiny_model_dir, tiny_data, tmp_path):
    cfg = validate(private_tree(tiny_model_dir, tiny_data, tmp_path / "r",
                                {"noise_multiplier": 1.0}, batch_size=6, grad_accum=2))
    engine = PrivateTraining(cfg.privacy, cfg.train, N_TRAIN)
    q = 6 * 2 / N_TRAIN
    assert engine.sample_rate == pytest.approx(q)
    sizes = []
    for step in range(400):
        parts = engine.micro_batches(step)
        assert len(parts) == 2 and parts == engine.micro_batches(step)  # redrawn the same
        chosen = parts[0] + parts[1]
        assert len(set(chosen)) == len(chosen) and all(0 <= i < N_TRAIN for i in chosen)
        sizes.append(len(chosen))
    assert len(set(sizes)) > 3  # Poisson: the batch size varies
    # mean of 400 Binomial(N, q) draws: within 4 standard errors of N q
    assert abs(sum(sizes) / 400 - N_TRAIN * q) < 4 * math.sqrt(N_TRAIN * q * (1 - q) / 400)
    other = PrivateTraining(cfg.privacy, cfg.train.model_copy(update={"seed": 1}), N_TRAIN)
    assert any(other.micro_batches(s) != engine.micro_batches(s) for s in range(5))


def test_poisson_sample_is_split_by_length(tiny_model_dir, tiny_data, tmp_path):
    """Given the lengths, the same sample is split into micro-batches of similar lengths."""
    cfg = validate(private_tree(tiny_model_dir, tiny_data, tmp_path / "r",
                                {"noise_multiplier": 1.0}, batch_size=6, grad_accum=3))
    engine = PrivateTraining(cfg.privacy, cfg.train, N_TRAIN)
    lengths = [(7 * i) % 23 + 1 for i in range(N_TRAIN)]
    for step in range(50):
        plain, split = engine.micro_batches(step), engine.micro_batches(step, lengths)
        assert sorted(sum(split, [])) == sorted(sum(plain, []))  # the same Poisson sample
        assert [len(p) for p in split] == [len(p) for p in plain]
        flat = [lengths[i] for i in sum(split, [])]
        assert flat == sorted(flat)  # shortest first: each micro-batch pads little


# --------------------------------------------------------------------- whole runs

def test_noise_multiplier_and_epsilon_are_opacus(tiny_model_dir, tiny_data, tmp_path):
    tree = private_tree(tiny_model_dir, tiny_data, tmp_path / "r", {"target_epsilon": 4.0},
                        max_steps=6, log_every=2)
    summary = train(validate(tree), log=quiet)
    p = summary["privacy"]
    delta = 10.0 ** math.floor(math.log10(1 / (2 * N_TRAIN)))  # the default rule
    q = 8 / N_TRAIN
    assert p["delta"] == pytest.approx(delta) and p["sample_rate"] == pytest.approx(q)
    assert p["noise_multiplier"] == get_noise_multiplier(target_epsilon=4.0, target_delta=delta,
                                                         sample_rate=q, steps=6,
                                                         accountant="rdp")
    train_records = [r for r in read_jsonl(tmp_path / "r" / "metrics.jsonl") if "train_loss" in r]
    assert [r["step"] for r in train_records] == [2, 4, 6]
    for r in train_records:  # what the accountant says r["step"] steps spent
        acc = RDPAccountant()
        for _ in range(r["step"]):
            acc.step(noise_multiplier=p["noise_multiplier"], sample_rate=q)
        assert r["epsilon"] == pytest.approx(acc.get_epsilon(delta=delta), rel=1e-9)
    assert p["epsilon"] == train_records[-1]["epsilon"] <= 4.0
    run_json = json.loads((tmp_path / "r" / "run.json").read_text())
    assert run_json["privacy"]["epsilon"] == p["epsilon"]
    assert "example-level" in p["guarantee"] and f"delta={delta:.0e}" in p["guarantee"]
    from tunelab.report.rundata import read_run
    from tunelab.report.sections import overview

    rows = overview(read_run(tmp_path / "r")).blocks[-1].rows
    assert ["privacy", p["guarantee"]] in rows  # the report states it


def test_prv_accountant_and_a_budget_stop_the_run_early(tiny_model_dir, tiny_data, tmp_path):
    sigma, budget = 1.0, 1.2
    tree = private_tree(tiny_model_dir, tiny_data, tmp_path / "r",
                        {"noise_multiplier": sigma, "target_epsilon": budget,
                         "accountant": "prv", "delta": 1e-4}, max_steps=40, log_every=100)
    summary = train(validate(tree), log=quiet)
    p, q = summary["privacy"], 8 / N_TRAIN

    def spent(steps: int) -> float:
        acc = PRVAccountant()
        acc.history = [(sigma, q, steps)]
        return acc.get_epsilon(delta=1e-4)

    steps = summary["steps"]
    assert 0 < steps < 40 and summary["total_steps"] == steps
    assert p["epsilon"] == pytest.approx(spent(steps), rel=1e-9) and p["epsilon"] <= budget
    assert spent(steps + 1) > budget  # one more step would have passed the budget


def test_no_noise_no_clipping_equals_the_non_private_run(tiny_model_dir, tiny_data, tmp_path):
    """q = 1 (batch_size = N): every example is in every step, in both runs; with no noise
    and a clip no gradient reaches, DP-SGD's sum over the expected batch is the plain mean."""
    common = {"batch_size": N_TRAIN, "max_steps": 3, "max_grad_norm": None, "log_every": 3}
    plain = private_tree(tiny_model_dir, tiny_data, tmp_path / "plain", {}, **common)
    del plain["privacy"]
    plain["data"]["packing"] = False  # as under privacy: the same padded batches
    private = private_tree(tiny_model_dir, tiny_data, tmp_path / "dp",
                           {"noise_multiplier": 0.0, "max_grad_norm": 1e6}, **common)
    train(validate(plain), log=quiet)
    summary = train(validate(private), log=quiet)
    assert summary["privacy"]["epsilon"] is None  # no noise: no guarantee, said so
    a = load_file(str(tmp_path / "plain" / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "dp" / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    moved = False
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6)
        moved |= not torch.equal(a[k], torch.zeros_like(a[k]))
    assert moved


def test_resumed_private_run_matches_the_uninterrupted_one(tiny_model_dir, tiny_data, tmp_path,
                                                           monkeypatch):
    """Batches and noise are drawn from (seed, step): a resumed run takes the same steps."""
    tree = private_tree(tiny_model_dir, tiny_data, tmp_path / "a", {"noise_multiplier": 1.0},
                        max_steps=4, checkpoint_every=2)
    straight = train(validate(tree), log=quiet)
    tree["output_dir"] = str(tmp_path / "b")
    restore = sigterm_after_step(monkeypatch, 2)  # after step 3, one past the checkpoint
    with pytest.raises(Interrupted):
        train(validate(tree), log=quiet)
    restore()
    resumed = train(validate(tree), resume=True, log=quiet)
    a = load_file(str(tmp_path / "a" / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "b" / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    eps = [[r["epsilon"] for r in read_jsonl(tmp_path / d / "metrics.jsonl") if "epsilon" in r]
           for d in ("a", "b")]
    assert eps[0] == eps[1] and len(eps[0]) == 4
    assert resumed["privacy"]["epsilon"] == straight["privacy"]["epsilon"] == eps[0][-1]


# --------------------------------------------------------------------- refusals at run start

class Bypass(torch.nn.Module):
    """A trainable weight used outside its module: no hook sees it, so no per-example grad."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = torch.nn.Linear(3, 2)
        self.scale = torch.nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(self.inner(x), self.scale.weight)


def test_a_tensor_without_per_example_gradients_is_refused_by_name(tiny_model_dir, tiny_data,
                                                                     tmp_path):
    from tunelab.errors import ConfigError

    cfg = validate(private_tree(tiny_model_dir, tiny_data, tmp_path / "r",
                                {"noise_multiplier": 1.0}))
    model = Bypass()
    engine = PrivateTraining(cfg.privacy, cfg.train, 10)
    engine.start(model, torch.optim.SGD(model.parameters(), lr=0.1), 3, Dist(), quiet)
    model(torch.randn(4, 3)).sum().backward()
    with pytest.raises(ConfigError, match=r"privacy: scale\.weight got no per-example gradient"):
        engine.after_backward()
    engine.close()
    with pytest.raises(ConfigError, match="privacy: DP-SGD under torchrun"):
        PrivateTraining(cfg.privacy, cfg.train, 10).start(model, torch.optim.SGD(
            model.parameters(), lr=0.1), 3, Dist(rank=0, world=2), quiet)
