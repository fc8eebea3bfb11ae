"""Hyperparameter search: spaces parse and validate, a study resumes from its SQLite file,
pruning stops a bad trial, and the best config is written ready to train."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from conftest import tiny_config
from tunelab.cli import main
from tunelab.config import load_config
from tunelab.errors import CheckpointError, ConfigError
from tunelab.eval.search import parse_space
from tunelab.eval.tune import tune


def quiet(_: str) -> None:
    pass


BASE = {"data": {"train": "x.tsv"}, "method": {"name": "lora", "r": 8}}


def test_spaces_parse_every_distribution():
    space = parse_space({"train.lr": {"log_uniform": ["1e-5", 1.0e-2]},  # YAML reads 1e-5 as text
                         "train.warmup_ratio": {"uniform": [0, 0.2]},
                         "train.batch_size": {"int": [8, 64]},
                         "train.eval_batch_size": {"log_int": [16, 256]},
                         "method.r": {"choice": [4, 8, 16]},
                         "method.targets": {"choice": [["query", "value"], "all-linear"]}},
                        BASE, "cfg.yaml")
    kinds = {p.key: (p.kind, p.args) for p in space}
    assert kinds["train.lr"] == ("log_uniform", (1e-5, 1e-2))
    assert kinds["train.batch_size"] == ("int", (8, 64))
    assert kinds["method.targets"] == ("choice", (["query", "value"], "all-linear"))
    list_choice = space[-1]
    assert list_choice.value(0) == ["query", "value"]  # Optuna stores the option's index
    from optuna.trial import FixedTrial

    trial = FixedTrial({"train.lr": 3e-4, "train.warmup_ratio": 0.1, "train.batch_size": 16,
                        "train.eval_batch_size": 32, "method.r": 16, "method.targets": 0})
    assert [p.suggest(trial) for p in space] == [3e-4, 0.1, 16, 32, 16, ["query", "value"]]


@pytest.mark.parametrize("search, message", [
    ({"train.lrr": {"log_uniform": [1e-5, 1e-2]}},
     "search.train.lrr {log_uniform: [1e-05, 0.01]}: the config with train.lrr at its lower "
     "bound is invalid: unknown key 'train.lrr' (did you mean 'train.lr'?)"),
    ({"train.lr": {"loguniform": [1e-5, 1e-2]}},
     "search.train.lr: unknown distribution 'loguniform' (did you mean 'log_uniform'?)"),
    ({"train.lr": {"log_uniform": [0, 1e-2]}}, "a log scale needs low > 0 (got 0.0)"),
    ({"train.lr": {"uniform": [1e-2, 1e-5]}}, "low 0.01 must be below high 1e-05"),
    ({"train.lr": {"log_uniform": [1e-5, 2]}},
     "train.lr at its upper bound is invalid: train.lr: input should be less than or equal to 1"),
    ({"method.r": {"uniform": [4, 16]}},
     "at a value inside the range, 8.584 is invalid: method.r: input should be a valid integer"),
    ({"train.batch_size": {"int": [8, 64.5]}}, "bound 64.5 is not a whole number"),
    ({"train.lr": {"uniform": [1e-5, "fast"]}}, "bound 'fast' is not a number"),
    ({"method.r": {"choice": []}}, "search.method.r.choice: expected a non-empty list"),
    ({"method.r": {"choice": [4, 4]}}, "options repeat"),
    ({"train.lr": 0.1}, "search.train.lr: expected one distribution"),
    ({"train.lr": {"uniform": [0.1, 0.2], "int": [1, 2]}}, "expected one distribution"),
    ({"output_dir": {"choice": ["a", "b"]}}, "not a searchable dotted config key"),
    ({"train.optimizer": {"choice": ["adamw", "adam"]}},
     "train.optimizer at choice 'adam' is invalid: train.optimizer: input should be 'adamw', "
     "'sgd' or 'rmsprop'"),
    ({"method.alpha_typo": {"choice": [8, 16]}}, "unknown key 'method.alpha_typo'"),
    ([], "expected a mapping of dotted config keys"),
])
def test_bad_spaces_fail_with_a_clear_error(search, message):
    with pytest.raises(ConfigError) as err:
        parse_space(search, BASE, "cfg.yaml")
    assert str(err.value).startswith("cfg.yaml: search")
    assert message in str(err.value)


def test_a_key_of_another_method_is_refused():
    with pytest.raises(ConfigError, match="unknown key 'method.r'"):
        parse_space({"method.r": {"choice": [4, 8]}}, {**BASE, "method": {"name": "full"}}, "c")


def write_config(path: Path, tree: dict, search: dict) -> Path:
    path.write_text(yaml.safe_dump({**tree, "search": search}))
    return path


def trial_dirs(out: Path) -> list[str]:
    return sorted(p.name for p in out.glob("trial-*"))


def test_a_three_trial_study_resumes_from_its_storage(tiny_model_dir, tiny_data, tmp_path, capsys):
    tree = tiny_config(tiny_model_dir, tiny_data, tmp_path / "study", max_steps=4, eval_every=2)
    search = {"train.lr": {"log_uniform": ["1e-4", "1e-2"]}, "method.r": {"choice": [2, 4]}}
    path = write_config(tmp_path / "tune.yaml", tree, search)
    out = tmp_path / "study"
    assert main(["tune", str(path), "--trials", "2", "--no-prune"]) == 0
    import optuna

    study = optuna.load_study(study_name="tunelab", storage=f"sqlite:///{out / 'study.db'}")
    first = [t.params for t in study.trials]
    assert len(first) == 2 and trial_dirs(out) == ["trial-0000", "trial-0001"]
    capsys.readouterr()

    assert main(["tune", str(path), "--trials", "3", "--no-prune"]) == 0  # one more, not three
    assert "2 finished trial(s), running 1 more" in capsys.readouterr().out
    study = optuna.load_study(study_name="tunelab", storage=f"sqlite:///{out / 'study.db'}")
    assert [t.params for t in study.trials[:2]] == first
    assert len(study.trials) == 3 and study.trials[2].params != study.trials[0].params
    assert trial_dirs(out) == ["trial-0000", "trial-0001", "trial-0002"]
    assert main(["tune", str(path), "--trials", "3", "--no-prune"]) == 0
    assert "3 finished trial(s), running 0 more" in capsys.readouterr().out
    assert len(optuna.load_study(study_name="tunelab",
                                 storage=f"sqlite:///{out / 'study.db'}").trials) == 3

    # the best config: ready to train, no search section, the best trial's values
    best = json.loads((out / "best.json").read_text())
    values = {t.number: t.value for t in study.trials}
    assert best["value"] == max(values.values()) and values[best["trial"]] == best["value"]
    text = (out / "best.yaml").read_text()
    assert "search" not in yaml.safe_load(text)
    cfg = load_config(out / "best.yaml")
    assert cfg.train.lr == pytest.approx(best["params"]["train.lr"])
    assert cfg.method.r == best["params"]["method.r"] and cfg.output_dir == str(out / "best")
    summary = json.loads((out / f"trial-{best['trial']:04d}" / "summary.json").read_text())
    assert summary["final_dev"]["accuracy"] == best["value"]
    assert not (out / "trial-0000" / "adapter").exists()  # --keep none (the default)

    # another space or config is not silently mixed into the same study
    write_config(path, tree, {**search, "method.r": {"choice": [2, 8]}})
    assert main(["tune", str(path), "--trials", "4"]) == 2
    err = capsys.readouterr().err
    assert "holds a study of another config or search space: search.method.r.choice" in err
    assert main(["tune", str(path), "train.lr=1e-3", "--trials", "4"]) == 2
    assert "a study of another config" in capsys.readouterr().err


def test_pruning_stops_a_bad_trial(tiny_model_dir, tiny_data, tmp_path):
    tree = tiny_config(tiny_model_dir, tiny_data, tmp_path / "study", max_steps=24, eval_every=8,
                       checkpoint_every=None, metric="loss", lr=3e-3)
    tree["method"] = {"name": "full"}  # a random tiny base learns fast when all of it trains
    path = write_config(tmp_path / "tune.yaml", tree, {"train.lr": {"log_uniform": [1e-5, 1.0]}})
    lines: list[str] = []
    # two sane trials first (the pruner waits for 2 with --trials 3), then a diverging one (at
    # lr 0.5 its loss at step 8 could still be ln 2, depending on the dropout draws)
    result = tune(path, None, 3, log=lines.append,
                  first=[{"train.lr": 3e-3}, {"train.lr": 2e-3}, {"train.lr": 1.0}])
    import optuna

    trials = optuna.load_study(study_name="tunelab",
                               storage=f"sqlite:///{tmp_path / 'study' / 'study.db'}").trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "PRUNED"]
    assert trials[2].user_attrs["pruned_at"] == "step 8"
    history = [json.loads(x) for x in
               (tmp_path / "study" / "trial-0002" / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in history) == 8  # stopped at its first evaluation, of 24 steps
    assert max(r["step"] for r in history if r.get("split") == "dev") == 8
    assert not (tmp_path / "study" / "trial-0002" / "checkpoints").exists()
    assert any(line.startswith("trial 2: pruned at step 8 (loss") for line in lines)
    assert result["pruned"] == 1 and result["trial"] in (0, 1)
    assert trials[result["trial"]].value == min(t.value for t in trials[:2])  # minimizes loss


def test_tune_scored_by_cross_validation(tiny_model_dir, tiny_data, tmp_path):
    tree = tiny_config(tiny_model_dir, tiny_data, tmp_path / "study", max_steps=3,
                       eval_every=None, checkpoint_every=None)
    path = write_config(tmp_path / "tune.yaml", tree, {"train.lr": {"uniform": [1e-3, 1e-2]}})
    result = tune(path, None, 2, cv=2, keep="adapters", log=quiet)
    for k in (0, 1):
        cv = json.loads((tmp_path / "study" / f"trial-{k:04d}" / "cv.json").read_text())
        assert cv["folds"] == 2 and len(cv["per_fold"]) == 2
        fold = tmp_path / "study" / f"trial-{k:04d}" / "fold-1"
        assert (fold / "adapter").is_dir() and not (fold / "checkpoints").exists()
        if k == result["trial"]:
            assert math.isclose(result["value"], cv["mean"]["accuracy"])


def test_tune_errors_come_before_any_trial(tiny_model_dir, tiny_data, tmp_path, capsys):
    tree = tiny_config(tiny_model_dir, tiny_data, tmp_path / "study")
    path = write_config(tmp_path / "tune.yaml", tree, {"train.lr": {"log_uniform": [1e-5, 2.0]}})
    assert main(["tune", str(path), "--trials", "3"]) == 2
    assert "less than or equal to 1" in capsys.readouterr().err
    assert not (tmp_path / "study").exists()
    plain = tmp_path / "plain.yaml"
    plain.write_text(yaml.safe_dump(tree))
    with pytest.raises(ConfigError, match="no 'search:' section to tune"):
        tune(plain, None, 3, log=quiet)
    # `tunelab train` (and every other command) runs the config as written, search aside
    assert load_config(path).train.lr == tree["train"]["lr"]
    (tmp_path / "study").mkdir()
    (tmp_path / "study" / "other.txt").write_text("x")
    write_config(path, tree, {"train.lr": {"log_uniform": [1e-5, 1e-2]}})
    with pytest.raises(CheckpointError, match="is not empty and is not a tunelab run"):
        tune(path, None, 1, log=quiet)


def test_train_on_eval_sees_every_dev_evaluation_and_may_stop_the_run(tiny_model_dir, tiny_data,
                                                                      tmp_path):
    from tunelab.config import validate
    from tunelab.recipes.run import train

    cfg = validate(tiny_config(tiny_model_dir, tiny_data, tmp_path / "a", max_steps=8,
                               eval_every=4))
    seen: list[dict] = []
    train(cfg, log=quiet, on_eval=seen.append)
    logged = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert seen == [r for r in logged if r.get("split") == "dev"]
    assert [r["step"] for r in seen] == [0, 4, 8]

    class Stop(Exception):
        pass

    def stop_at_4(record: dict) -> None:
        if record["step"] == 4:
            raise Stop

    with pytest.raises(Stop):
        train(cfg.model_copy(update={"output_dir": str(tmp_path / "b")}), log=quiet,
              on_eval=stop_at_4)
    logged = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in logged) == 4


def test_an_interrupted_trial_is_not_counted_and_reruns(tiny_model_dir, tiny_data, tmp_path,
                                                        monkeypatch):
    import optuna

    from tunelab.eval import tune as tune_mod  # the module that calls train
    from tunelab.train.signals import Interrupted

    tree = tiny_config(tiny_model_dir, tiny_data, tmp_path / "study", max_steps=3, eval_every=None)
    path = write_config(tmp_path / "tune.yaml", tree, {"train.lr": {"uniform": [1e-3, 1e-2]}})
    real_train = tune_mod.train

    def interrupted(*args, **kwargs):
        raise Interrupted("SIGINT at step 2/3: checkpoint saved; continue with --resume")

    monkeypatch.setattr(tune_mod, "train", interrupted)
    with pytest.raises(Interrupted, match="trial 0: SIGINT at step 2/3.*run the same tune command"):
        tune(path, None, 2, log=quiet)
    monkeypatch.setattr(tune_mod, "train", real_train)
    lines: list[str] = []
    tune(path, None, 2, log=lines.append)
    assert lines[0].startswith(f"study {tmp_path / 'study' / 'study.db'}: 0 finished trial(s), "
                               "running 2 more")
    study = optuna.load_study(study_name="tunelab",
                              storage=f"sqlite:///{tmp_path / 'study' / 'study.db'}")
    assert [t.state.name for t in study.trials] == ["FAIL", "COMPLETE", "COMPLETE"]
