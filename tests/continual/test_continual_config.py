"""The continual config: defaults, and errors that name the key at fault."""

from __future__ import annotations

import pytest

from tunelab.continual.config import (
    STRATEGY_NAMES,
    load_continual_config,
    validate_continual,
)
from tunelab.continual.strategies import STRATEGIES
from tunelab.errors import ConfigError


def tree(**extra) -> dict:
    return {"stages": [{"name": "sst2", "data": {"train": "sst2"}},
                       {"name": "news", "data": {"train": "ag_news"}}], **extra}


def test_defaults_classification_stages_naive_and_lora() -> None:
    cfg = validate_continual(tree())
    assert [s.task for s in cfg.stages] == ["classification", "classification"]
    assert cfg.strategy.name == "naive" and cfg.method.name == "lora"
    assert [s.head_name for s in cfg.stages] == ["sst2", "news"]


def test_every_strategy_in_the_config_has_a_registry_entry() -> None:
    assert set(STRATEGY_NAMES) == set(STRATEGIES)
    for name in STRATEGY_NAMES:
        assert validate_continual(tree(strategy=name)).strategy.name == name


def test_unknown_strategy_says_did_you_mean() -> None:
    with pytest.raises(ConfigError, match=r"strategy.name: unknown strategy 'ewcc' \(did you "
                                          r"mean 'ewc'\?\)"):
        validate_continual(tree(strategy={"name": "ewcc"}))


def test_unknown_strategy_key_is_named() -> None:
    with pytest.raises(ConfigError, match="strategy.strenght.*strategy.strength"):
        validate_continual(tree(strategy={"name": "ewc", "strenght": 3}))


def test_stage_names_are_unique_and_heads_keep_one_task() -> None:
    t = tree()
    t["stages"][1]["name"] = "sst2"
    with pytest.raises(ConfigError, match="stages.1.name: 'sst2' is stage 0's name"):
        validate_continual(t)
    t = tree()
    t["stages"].append({"name": "ner", "task": "token_classification", "head": "sst2",
                        "data": {"train": "conll2003"}})
    with pytest.raises(ConfigError, match="stages.2.head: head 'sst2' is a classification head"):
        validate_continual(t)


def test_adapter_per_stage_needs_own_heads_and_an_adapter_method() -> None:
    t = tree(strategy="adapter-per-stage")
    t["stages"][1]["head"] = "sst2"
    with pytest.raises(ConfigError, match="remove head from stage news"):
        validate_continual(t)
    with pytest.raises(ConfigError, match="method.name: adapter-per-stage keeps the base frozen"):
        validate_continual(tree(strategy="adapter-per-stage", method={"name": "full"}))


def test_packing_and_metric_are_refused(tmp_path) -> None:
    t = tree()
    t["stages"][0]["data"]["packing"] = True
    with pytest.raises(ConfigError, match="stages.0.data.packing"):
        validate_continual(t)
    with pytest.raises(ConfigError, match="train.metric"):
        validate_continual(tree(train={"metric": "accuracy"}))


def test_yaml_and_overrides(tmp_path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("stages:\n  - {name: a, data: {train: sst2}}\nstrategy: {name: replay}\n")
    cfg = load_continual_config(path, ["strategy.per_stage=16", "train.max_steps=5"])
    assert cfg.strategy.per_stage == 16 and cfg.train.max_steps == 5
