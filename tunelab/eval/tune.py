"""Hyperparameter search: `tunelab tune CONFIG --trials N [--cv K]`.

Optuna's TPE sampler (seeded) proposes values for the config's `search:` keys; each trial is
one ordinary run (or a K-fold cross-validation) into OUT/trial-NNNN. A median pruner stops
a trial whose dev metric at an evaluation step is worse than the median of earlier trials
at that step (with --cv: whose running fold mean after fold k is). The study lives in
OUT/study.db (SQLite): running the same command again continues it, up to N finished
trials in all. The best trial's config is written to OUT/best.yaml, ready for
`tunelab train`.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any, Callable

from tunelab.config import SEARCH_KEY, RunConfig, dump_config, validate
from tunelab.config.load import note_to_stderr
from tunelab.config.switch import apply_overrides
from tunelab.config.tree import read_yaml
from tunelab.errors import CheckpointError, ConfigError
from tunelab.eval.cv import (
    LOG_FILE,
    cross_validate,
    file_log,
    fresh_dir,
    make_folds,
    run_metric,
    tidy,
)
from tunelab.eval.search import Param, parse_space, with_values
from tunelab.io import write_text
from tunelab.recipes.run import config_diff, train
from tunelab.runs.layout import write_json
from tunelab.tasks.metrics import HIGHER_IS_BETTER
from tunelab.train.signals import Interrupted

STUDY_FILE = "study.db"
STUDY_NAME = "tunelab"
BEST_YAML = "best.yaml"
BEST_JSON = "best.json"


def load_search(path: str | Path, overrides: list[str] | None = None
                ) -> tuple[dict[str, Any], RunConfig, list[Param]]:
    """(config tree, validated base config, search space) of a config file with `search:`."""
    tree = read_yaml(path)
    raw = tree.pop(SEARCH_KEY, None)
    if raw is None:
        raise ConfigError(f"{path}: no '{SEARCH_KEY}:' section to tune; add one, e.g. "
                          f"{SEARCH_KEY}: {{train.lr: {{log_uniform: [1.0e-5, 1.0e-2]}}, "
                          "method.r: {choice: [4, 8, 16]}}")
    for note in apply_overrides(tree, overrides, str(path)):
        note_to_stderr(note)
    cfg = validate(tree, str(path))
    return tree, cfg, parse_space(raw, tree, str(path))


def tune(path: str | Path, overrides: list[str] | None, trials: int, cv: int | None = None,
         keep: str = "none", overwrite: bool = False, prune: bool = True,
         log: Callable[[str], None] = print, first: list[dict[str, Any]] | None = None
         ) -> dict[str, Any]:
    """Run (or continue) the study until it holds `trials` finished trials; write and return
    the best. `first`: parameter values to try first in a new study (Optuna's enqueue)."""
    import optuna

    if trials < 1:
        raise ConfigError(f"--trials {trials}: give at least 1")
    tree, cfg, space = load_search(path, overrides)
    if cv is not None:
        make_folds(cfg, cv)  # a task or data that cannot be folded fails now, not in trial 0
    metric = run_metric(cfg)
    out = Path(cfg.output_dir)
    db = out / STUDY_FILE
    if overwrite or not db.is_file():
        fresh_dir(out, overwrite, "study")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = _open_study(db, cfg, space, metric, cv, trials, prune)
    done = _finished(study)
    if not done and first:
        for values in first:
            study.enqueue_trial(values)
    todo = trials - len(done)
    log(f"study {db}: {len(done)} finished trial(s), running {max(todo, 0)} more; "
        f"{'maximizing' if HIGHER_IS_BETTER[metric] else 'minimizing'} dev {metric}"
        + (f" (mean over {cv} folds)" if cv else "") + f"; run logs in {out / LOG_FILE}")
    if todo > 0:
        objective = _objective(tree, space, metric, cv, keep, out, log)
        study.optimize(objective, n_trials=todo, catch=())
    return _report(study, tree, space, metric, out, log)


def _open_study(db: Path, cfg: RunConfig, space: list[Param], metric: str, cv: int | None,
                trials: int, prune: bool) -> Any:
    """The study in `db`, new or resumed; a resumed one must have the same config and space."""
    import optuna

    fingerprint = {"config": cfg.model_dump(mode="json"), "cv": cv, "metric": metric,
                   "search": {p.key: {p.kind: list(p.args)} for p in space}}
    fingerprint = json.loads(json.dumps(fingerprint))  # tuples -> lists, as stored
    startup = min(10, max(2, trials // 3))  # TPE and the pruner start after these
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=0) if prune
              else optuna.pruners.NopPruner())
    study = optuna.create_study(storage=f"sqlite:///{db}", study_name=STUDY_NAME,
                                direction="maximize" if HIGHER_IS_BETTER[metric] else "minimize",
                                pruner=pruner, load_if_exists=True)
    stored = study.user_attrs.get("fingerprint")
    if stored is None:
        study.set_user_attr("fingerprint", fingerprint)
    else:
        diffs = config_diff(stored, fingerprint)
        if diffs:
            raise CheckpointError(f"{db} holds a study of another config or search space: "
                                  + "; ".join(diffs[:5]) + "; tune the same way, pass "
                                  "--overwrite to start a new study, or set output_dir")
    # seeded by train.seed, offset by the trials already run, so a resumed study does not
    # replay the first draws
    study.sampler = optuna.samplers.TPESampler(seed=cfg.train.seed + len(study.trials),
                                               n_startup_trials=startup)
    return study


def _finished(study: Any) -> list[Any]:
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))


def _objective(tree: dict[str, Any], space: list[Param], metric: str, cv: int | None, keep: str,
               out: Path, log: Callable[[str], None]) -> Callable[[Any], float]:
    import optuna

    def objective(trial: Any) -> float:
        values = {p.key: p.suggest(trial) for p in space}
        run_dir = out / f"trial-{trial.number:04d}"
        trial.set_user_attr("run_dir", str(run_dir))
        shown = _show(values)
        cfg = validate({**with_values(tree, values), "output_dir": str(run_dir)},
                       f"trial {trial.number} ({shown})")
        log(f"trial {trial.number}: {shown}")
        run_log = file_log(out / LOG_FILE, f"[trial {trial.number}] ")
        higher = HIGHER_IS_BETTER[metric]

        def stop_if_bad(value: float, step: int, where: str) -> None:
            trial.report(value, step)
            if trial.should_prune():
                trial.set_user_attr("pruned_at", where)
                log(f"trial {trial.number}: pruned at {where} ({metric} {value:.4f} is "
                    f"{'below' if higher else 'above'} the median of earlier trials there)")
                raise optuna.TrialPruned(where)

        def on_eval(record: dict[str, Any]) -> None:
            if record["step"] > 0:  # step 0 scores the untrained model: nothing to judge
                stop_if_bad(record[metric], record["step"], f"step {record['step']}")

        def on_fold(k: int, results: list[dict[str, Any]]) -> None:
            stop_if_bad(statistics.fmean(r["scores"][metric] for r in results), k, f"fold {k}")

        try:
            if cv:
                report = cross_validate(cfg, cv, keep, overwrite=True, log=run_log,
                                        on_fold=on_fold)
                value, extra = report["mean"][metric], f" +- {report['std'][metric]:.4f}"
            else:
                summary = train(cfg, overwrite=True, log=run_log, on_eval=on_eval)
                value, extra = summary["final_dev"][metric], ""
        except Interrupted as exc:
            raise Interrupted(f"trial {trial.number}: {exc}; finished trials are kept in "
                              f"{out / STUDY_FILE}: run the same tune command to continue") from None
        finally:
            for part in ([run_dir] + sorted(run_dir.glob("fold-*")) if run_dir.is_dir() else []):
                tidy(part, keep)
        log(f"trial {trial.number}: dev {metric} {value:.4f}{extra}")
        return value

    return objective


def _show(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in values.items())


def _report(study: Any, tree: dict[str, Any], space: list[Param], metric: str, out: Path,
            log: Callable[[str], None]) -> dict[str, Any]:
    """Print every trial, write the best config as OUT/best.yaml and OUT/best.json."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    log(f"{'trial':>5}  {'state':<8}  {metric:<20}  params")
    for t in trials:
        value = "-" if t.value is None else f"{t.value:.4f}"
        if t.state == TrialState.PRUNED:  # its last reported value, where it stopped
            value += f" at {t.user_attrs.get('pruned_at', '?')}"
        params = {p.key: p.value(t.params[p.key]) for p in space if p.key in t.params}
        log(f"{t.number:>5}  {t.state.name.lower():<8}  {value:<20}  {_show(params)}")
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        raise CheckpointError(f"no trial of {out / STUDY_FILE} has finished ({len(trials)} "
                              "pruned or failed); run more trials, or tune with --no-prune")
    best = study.best_trial
    values = {p.key: p.value(best.params[p.key]) for p in space}
    cfg = validate({**with_values(tree, values), "output_dir": str(out / "best")},
                   f"best trial {best.number}")
    text = (f"# tunelab tune: trial {best.number} of {len(trials)}, dev {metric} "
            f"{best.value:.4f}; {_show(values)}\n" + dump_config(cfg))
    write_text(out / BEST_YAML, text)  # atomic: a kill leaves the previous best.yaml
    result = {"trial": best.number, "metric": metric, "value": best.value, "params": values,
              "run_dir": best.user_attrs.get("run_dir"), "config": str(out / BEST_YAML),
              "finished": len(_finished(study)), "pruned": sum(
                  t.state == TrialState.PRUNED for t in trials)}
    write_json(out / BEST_JSON, result)
    log(f"best: trial {best.number}, dev {metric} {best.value:.4f}: {_show(values)}")
    log(f"best config, written to {out / BEST_YAML} (train it with `tunelab train "
        f"{out / BEST_YAML}`):")
    log(text.rstrip())
    return result
