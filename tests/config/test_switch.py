"""Switching the method or the task on the command line: the file's keys the new one lacks are
dropped, with one note naming them; keys given on the command line are never dropped."""

import pytest
import yaml

from conftest import REPO
from tunelab.cli import main
from tunelab.config import apply_overrides, load_config
from tunelab.errors import ConfigError

SST2_LORA = REPO / "examples" / "sst2-lora.yaml"


def load(path, overrides):
    notes: list[str] = []
    return load_config(path, overrides, log=notes.append), notes


def test_lora_example_switched_to_full_drops_the_lora_keys_with_one_note():
    file_keys = yaml.safe_load(SST2_LORA.read_text())["method"]
    lora_only = [k for k in file_keys if k != "name"]  # r, alpha, targets in the example
    cfg, notes = load(SST2_LORA, ["method.name=full"])
    assert cfg.method.name == "full"
    assert notes == [f"method.name=full (command line) replaces lora from {SST2_LORA}: dropped "
                     + ", ".join(f"method.{k}" for k in lora_only)]
    assert lora_only == ["r", "alpha", "targets"]


def test_lora_to_dora_keeps_the_shared_keys_and_says_nothing():
    cfg, notes = load(SST2_LORA, ["method.name=dora"])
    assert (cfg.method.name, cfg.method.r, cfg.method.alpha) == ("dora", 8, 16)
    assert notes == []


def test_a_switch_to_a_method_sharing_some_keys_drops_only_the_others():
    cfg, notes = load(SST2_LORA, ["method.name=vera"])  # vera has r and targets, not alpha
    assert (cfg.method.r, cfg.method.targets) == (8, "all-linear")
    assert notes[0].endswith("dropped method.alpha")


def test_a_command_line_key_the_new_method_lacks_is_still_an_error():
    notes: list[str] = []
    with pytest.raises(ConfigError) as exc:
        load_config(SST2_LORA, ["method.r=4", "method.name=full"], log=notes.append)
    assert "unknown key 'method.r'" in str(exc.value)
    assert "method.alpha" not in str(exc.value) and "method.targets" not in str(exc.value)
    assert notes == [f"method.name=full (command line) replaces lora from {SST2_LORA}: dropped "
                     "method.alpha, method.targets"]


def test_a_typo_in_the_file_is_not_dropped_by_a_switch(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data: {train: sst2}\nmethod: {name: lora, r: 8, rr: 4}\n")
    with pytest.raises(ConfigError, match="unknown key 'method.rr'"):
        load_config(path, ["method.name=full"], log=lambda _: None)


def test_the_same_method_or_no_switch_changes_nothing():
    for overrides in (["method.name=lora"], ["train.lr=1e-4"], []):
        cfg, notes = load(SST2_LORA, overrides)
        assert (cfg.method.name, cfg.method.r, notes) == ("lora", 8, [])


def test_task_switch_drops_the_file_task_specific_data_keys(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("task: classification\n"
                    "data: {train: sst2, format: tsv, columns: {text: sentence}, per_class: 8,"
                    " max_train_examples: 100}\n"
                    "method: {name: lora, r: 4}\n")
    cfg, notes = load(path, ["task=token_classification", "data.train=conll2003"])
    assert cfg.task == "token_classification"
    assert cfg.data.max_train_examples == 100 and cfg.method.r == 4  # shared keys kept
    assert notes == [f"task=token_classification (command line) replaces classification from "
                     f"{path}: dropped data.format, data.columns, data.per_class"]


def test_task_switch_drops_whole_sections_the_new_task_lacks():
    tree = {"task": "translation", "data": {"path": "multi30k", "source_lang": "en"},
            "generation": {"num_beams": 2}}
    notes = apply_overrides(tree, ["task=causal_lm", "data.path=alpaca_en"], "t.yaml")
    assert "generation" not in tree and "source_lang" not in tree["data"]
    assert notes == ["task=causal_lm (command line) replaces translation from t.yaml: dropped "
                     "data.source_lang, generation"]


def test_task_switch_keeps_a_key_given_on_the_command_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data: {train: sst2, per_class: 8}\n")
    with pytest.raises(ConfigError, match="unknown key 'data.per_class'"):
        load_config(path, ["task=token_classification", "data.per_class=4"], log=lambda _: None)


def test_method_and_task_switch_together():
    cfg, notes = load(SST2_LORA, ["task=masked_lm", "data.path=sst2", "method.name=bitfit"])
    assert (cfg.task, cfg.method.name) == ("masked_lm", "bitfit")
    assert len(notes) == 2
    assert notes[0].startswith("task=masked_lm (command line) replaces classification")
    assert "data.train" in notes[0] and "data.max_train_examples" in notes[0]
    assert notes[1].endswith("dropped method.r, method.alpha, method.targets")


def test_the_cli_prints_the_note_to_stderr(capsys):
    assert main(["config", "show", str(SST2_LORA), "method.name=full"]) == 0
    out, err = capsys.readouterr()
    assert err == (f"note: method.name=full (command line) replaces lora from {SST2_LORA}: "
                   "dropped method.r, method.alpha, method.targets\n")
    assert "name: full" in out and "alpha" not in out


def test_the_cli_prints_the_note_before_the_error(capsys):
    assert main(["config", "show", str(SST2_LORA), "method.r=4", "method.name=full"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("note: method.name=full")
    assert err[1].startswith("error: ") and "unknown key 'method.r'" in err[1]
