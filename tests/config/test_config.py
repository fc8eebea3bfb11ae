from pathlib import Path

import pytest

from conftest import REPO
from tunelab.config import RunConfig, dump_config, load_config, validate
from tunelab.errors import ConfigError

BASE = {"data": {"train": "sst2"}}


def err(tree: dict, overrides: list[str] | None = None) -> str:
    with pytest.raises(ConfigError) as exc:
        load_config(None, overrides or [], base=tree)
    return str(exc.value)


def test_unknown_top_level_key_suggests_the_right_one():
    assert err({**BASE, "trian": {}}) == (
        "config: unknown key 'trian' (did you mean 'train'?); valid keys here: model, method, "
        "train, privacy, output_dir, task, data, distill")


def test_unknown_method_key_lists_only_that_methods_keys():
    msg = err(BASE, ["method.name=lora", "method.rr=4"])
    assert msg == ("config: unknown key 'method.rr' (did you mean 'method.r'?); valid keys here: "
                   "name, r, alpha, dropout, targets, scaling, init, loraplus_lr_ratio, rank_pattern")


def test_nested_typo_and_range_errors_are_reported_together():
    msg = err({**BASE, "train": {"lr": 0, "batch_sise": 8}})
    assert "unknown key 'train.batch_sise' (did you mean 'train.batch_size'?)" in msg
    assert "train.lr: input should be greater than 0 (got 0)" in msg


def test_rank_must_be_positive():
    assert err(BASE, ["method.r=0"]) == (
        "config: method.r: input should be greater than or equal to 1 (got 0)")


def test_unknown_method_name():
    assert err(BASE, ["method.name=lorra"]) == (
        "config: method.name: unknown method 'lorra' (did you mean 'lora'?); choose from: "
        "full, freeze, bitfit, lora, dora, ia3, vera, loha, lokr, adalora, houlsby, pfeiffer, "
        "prompt_tuning, prefix_tuning, p_tuning")


def test_bad_regex_target():
    assert "method.targets: value error, not a valid regex" not in err(BASE, ["method.targets=q[("])
    assert "method.targets: not a valid regex" in err(BASE, ["method.targets=q[("])


def test_override_syntax_and_types():
    assert "expected dotted.key=value" in err(BASE, ["train.lr"])
    cfg = load_config(None, ["train.lr=1e-4", "method.targets=[query, value]", "train.epochs=2"],
                      base=BASE)
    assert cfg.train.lr == 1e-4 and cfg.method.targets == ["query", "value"]
    assert cfg.train.epochs == 2.0


def test_early_stopping_needs_eval_every():
    assert "train.early_stopping needs train.eval_every" in err(
        {**BASE, "train": {"early_stopping": {"patience": 2}}})


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text("data:\n  train: sst2\n  dev: [oops\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:\d+: not valid YAML"):
        load_config(path)


def test_missing_file_and_missing_required_key(tmp_path: Path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    assert err({}) == "config: missing required key 'data'"


def test_dumped_config_loads_back_identically(tmp_path: Path):
    cfg = load_config(REPO / "examples" / "sst2-lora.yaml", ["method.r=4"])
    path = tmp_path / "c.yaml"
    path.write_text(dump_config(cfg))
    assert load_config(path) == cfg
    assert isinstance(validate(cfg.model_dump()), RunConfig)
