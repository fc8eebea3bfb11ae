"""`tunelab continual CONFIG`: stage after stage, with a strategy against forgetting; and
`tunelab train CONFIG --continue-from RUN`: one new stage of the same task on top of a run."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import yaml

from tunelab import methods
from tunelab.continual.config import load_continual_config, validate_continual
from tunelab.continual.run import continual as run_continual
from tunelab.errors import CheckpointError, ConfigError
from tunelab.runs.layout import ADAPTER_DIR, MODEL_DIR

# the run types a run can be continued from (a stage is one of these tasks)
CONTINUABLE = ("classification", "token_classification")


def continual(config: str, overrides: list[str] | None = None,
              overwrite: bool = False) -> dict[str, Any]:
    """Validate the whole config (every stage) before any weights load, then run it."""
    summary = run_continual(load_continual_config(config, overrides), overwrite=overwrite)
    print(f"accuracy matrix and transfer: {summary['report']}")
    return summary


def continue_from(cfg: Any, run_dir: str | Path, strategy: str = "naive",
                  overwrite: bool = False, resume: bool = False,
                  log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train `cfg` (new data of RUN's task, same labels) starting from RUN's weights, as a
    two-stage continual run whose first stage (RUN's own data) is already trained: RUN's dev
    set is scored before and after, so the run reports what the new data made it forget, and
    `strategy` (replay, ewc, lwf) keeps it from forgetting."""
    run = Path(run_dir)
    if resume:
        raise ConfigError("--resume: a --continue-from run starts over (it is short: one new "
                          "stage); drop --resume and pass --overwrite")
    if not (run / "config.yaml").is_file():
        raise CheckpointError(f"--continue-from: {run} holds no run (no config.yaml); give a "
                              "run directory that `tunelab train` wrote")
    old = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    if cfg.task not in CONTINUABLE or old.get("task") != cfg.task:
        raise ConfigError(f"--continue-from: {run} is a {old.get('task')} run and the config a "
                          f"{cfg.task} run; continue a classification or token_classification "
                          "run with new data of the same task")
    if old.get("method", {}).get("name") != cfg.method.name:
        raise ConfigError(f"method.name: {run} trained {old.get('method', {}).get('name')}; "
                          f"continue it with the same method (the config says {cfg.method.name})")
    tree = cfg.model_dump(mode="json")
    adapter = methods.METHODS[cfg.method.name].saves_adapter
    if adapter:
        tree["model"]["init_adapter"] = str(run / ADAPTER_DIR)
    else:  # a fully fine-tuned run: its saved model is the starting model
        tree["model"]["name"] = str(run / MODEL_DIR)
    stages = [{"name": "previous", "task": cfg.task, "data": old["data"]},
              {"name": "new", "task": cfg.task, "data": tree["data"], "head": "previous"}]
    continual_tree = {"model": tree["model"], "method": tree["method"], "train": tree["train"],
                      "stages": stages, "strategy": {"name": strategy}, "trained_stages": 1,
                      "output_dir": tree["output_dir"]}
    summary = run_continual(validate_continual(continual_tree, "--continue-from"),
                            overwrite=overwrite, log=log)
    log(f"the new stage's run: {Path(cfg.output_dir) / 'stages' / 'new'}; report: "
        f"{summary['report']}")
    return summary
