"""The federated: block is validated with the run config; every bad key named at once."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import tiny_config

from tunelab.errors import ConfigError
from tunelab.federate.config import load_federated_config, validate_federated


def _tree(tmp_path: Path, **fed) -> dict:
    tree = tiny_config(tmp_path / "model", {"train": tmp_path / "t.tsv", "dev": tmp_path / "d.tsv"},
                       tmp_path / "run")
    tree["federated"] = {"clients": 4, "rounds": 2, "local_steps": 3, **fed}
    return tree


def test_valid_block_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "fed.yaml"
    path.write_text(yaml.safe_dump(_tree(tmp_path)))
    fed = load_federated_config(path, ["federated.clients_per_round=2",
                                       "federated.strategy=fedprox", "train.lr=0.01"])
    assert fed.federated.per_round == 2 and fed.federated.strategy == "fedprox"
    assert fed.run.train.lr == 0.01
    assert fed.dump()["federated"]["clients"] == 4


def test_missing_block(tmp_path: Path) -> None:
    tree = _tree(tmp_path)
    del tree["federated"]
    with pytest.raises(ConfigError, match="federated: missing"):
        validate_federated(tree)


@pytest.mark.parametrize("fed, key", [
    ({"clients_per_round": 5}, "federated.clients_per_round"),
    ({"local_epochs": 1.0}, "federated.local_steps"),
    ({"strategy": "fedsgd"}, "federated.strategy"),
    ({"split": {"kind": "files", "files": ["a.tsv"]}}, "federated.split.files"),
    ({"split": {"kind": "dirichlet", "alpha": 0}}, "federated.split.alpha"),
    ({"dp": {"clipping_norm": -1, "noise_multiplier": 1}}, "federated.dp.clipping_norm"),
])
def test_bad_key_is_named(tmp_path: Path, fed: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate_federated(_tree(tmp_path, **fed))


def test_run_and_federated_errors_together(tmp_path: Path) -> None:
    tree = _tree(tmp_path, rounds=0)
    tree["train"]["lr"] = -1
    tree["method"] = {"name": "full"}
    with pytest.raises(ConfigError) as err:
        validate_federated(tree)
    assert "federated.rounds" in str(err.value) and "train.lr" in str(err.value)


def test_full_fine_tuning_is_refused(tmp_path: Path) -> None:
    tree = _tree(tmp_path)
    tree["method"] = {"name": "full"}
    with pytest.raises(ConfigError, match="method.name: only adapter tensors travel"):
        validate_federated(tree)
