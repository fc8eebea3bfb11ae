"""The privacy: block and the combinations DP-SGD refuses, each with the key at fault named."""

from __future__ import annotations

import math

import pytest

from tunelab.config import dump_config, load_config
from tunelab.config.privacy import PrivacyConfig
from tunelab.errors import ConfigError


def base(**privacy) -> dict:
    return {"data": {"train": "sst2"}, "privacy": privacy or {"target_epsilon": 8}}


def err(tree: dict, overrides: list[str] | None = None) -> str:
    with pytest.raises(ConfigError) as exc:
        load_config(None, overrides or [], base=tree)
    return str(exc.value)


def test_epsilon_or_noise_is_required_and_ranges_are_checked():
    assert "privacy: give target_epsilon" in err({"data": {"train": "sst2"}, "privacy": {}})
    msg = err(base(target_epsilon=0, accountant="gdp", max_grad_norm=-1))
    assert "privacy.target_epsilon" in msg and "privacy.accountant" in msg
    assert "privacy.max_grad_norm" in msg
    assert "privacy.delta" in err(base(target_epsilon=8, delta=1.5))


def test_a_valid_block_loads_and_unset_packing_becomes_unpacked():
    cfg = load_config(None, ["train.grad_accum=4"], base=base(noise_multiplier=1.1))
    assert cfg.privacy.noise_multiplier == 1.1 and cfg.privacy.accountant == "rdp"
    assert cfg.data.packing is False  # None would pack BERT-style models: explicit, and saved
    assert "packing: false" in dump_config(cfg)
    plain = load_config(None, [], base={"data": {"train": "sst2"}})
    assert plain.privacy is None and plain.data.packing is None  # untouched without privacy


@pytest.mark.parametrize("n", [1, 96, 500, 67_349, 10**6])
def test_default_delta_is_a_power_of_ten_below_one_over_2n(n):
    delta = PrivacyConfig(target_epsilon=8).delta_for(n)
    assert delta <= 1 / (2 * n) < 10 * delta
    assert math.log10(delta) == round(math.log10(delta))
    assert PrivacyConfig(target_epsilon=8, delta=1e-7).delta_for(n) == 1e-7


@pytest.mark.parametrize("overrides, key", [
    (["method.name=dora"], "method.name: dora"),
    (["method.name=adalora"], "method.name: adalora"),
    (["method.name=vera"], "method.name: vera"),
    (["method.name=prompt_tuning"], "method.name: prompt_tuning"),
    (["method.dropout=0.1"], "method.dropout"),
    (["data.packing=true"], "data.packing"),
    (["train.gradient_checkpointing=true"], "train.gradient_checkpointing"),
    (["train.compile=true"], "train.compile"),
])
def test_combinations_dp_cannot_make_private_are_refused(overrides, key):
    msg = err(base(), overrides)
    assert msg.startswith(f"config: {key}") and "privacy" in msg


def test_augmentation_is_refused():
    tree = base()
    tree["data"]["augment"] = {}
    assert err(tree).startswith("config: data.augment:")


def test_multitask_and_other_tasks_are_refused():
    tasks = {"a": {"data": {"train": "sst2"}}, "b": {"data": {"train": "sst2"}}}
    msg = err({"task": "multitask", "tasks": tasks, "privacy": {"noise_multiplier": 1.0}})
    assert msg.startswith("config: privacy: a multitask run")
    msg = err({"task": "translation", "privacy": {"noise_multiplier": 1.0}})
    assert msg.startswith("config: privacy: translation runs")


def test_packed_or_fully_fine_tuned_chat_sft_is_refused():
    tree = {"task": "causal_lm", "data": {"path": "chat.jsonl", "packing": True},
            "method": {"name": "lora"}, "privacy": {"noise_multiplier": 1.0}}
    assert err(tree).startswith("config: data.packing:")
    tree = {"task": "causal_lm", "data": {"path": "chat.jsonl"}, "method": {"name": "full"},
            "privacy": {"noise_multiplier": 1.0}}
    assert err(tree).startswith("config: method.name: full trains a causal LM's output layer")
