"""`tunelab continual CONFIG`: train the stages in order with a strategy against forgetting;
before any stage and after each one, score every stage's dev set (the accuracy matrix).

Writes into output_dir: config.yaml, metrics.jsonl (a baseline record, then one per stage:
its matrix row and the average accuracy and BWT over the stages seen so far), summary.json
(the matrix, ACC, BWT, FWT, forgetting, training time), accuracy_matrix.png, report.md, and
stages/NAME/ for each stage: its training log and a sub-run (config.yaml, run.json,
adapter/ or model/) of the final model with that stage's head, which `tunelab eval` loads."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import yaml

from tunelab import methods
from tunelab.config import dump_config
from tunelab.continual import matrix
from tunelab.continual.config import ContinualRun, stage_config
from tunelab.continual.plot import heat_map, write_report
from tunelab.continual.stages import Stages, build_stages
from tunelab.continual.strategies import STRATEGIES
from tunelab.errors import CheckpointError, ConfigError
from tunelab.io import write_text
from tunelab.methods.peft_format import save_adapter
from tunelab.models.heads import head_modules
from tunelab.recipes.run import pick_device, seed_everything
from tunelab.runs.layout import ADAPTER_DIR, MODEL_DIR, check_replaceable, write_json
from tunelab.train.loop import Trainer
from tunelab.train.prepare import autocast_for

METRICS = "metrics.jsonl"
MARKER = "continual.json"  # marks a continual run's output_dir (safe to --overwrite)


def continual(cfg: ContinualRun, overwrite: bool = False,
              log: Callable[[str], None] = print) -> dict[str, Any]:
    t0 = time.perf_counter()
    out = Path(cfg.output_dir)
    _check_output(out, overwrite)
    device = pick_device(cfg.train.device)
    seed_everything(cfg.train.seed)
    strategy = STRATEGIES[cfg.strategy.name](cfg.strategy, cfg.train.seed)
    stages = build_stages(cfg, log, strategy.per_stage_adapter)  # data first, then weights
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    write_json(out / MARKER, {"strategy": cfg.strategy.name, "stages": stages.names})
    write_text(out / "config.yaml", yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False,
                                                   allow_unicode=True))
    stages.model.to(device)
    autocast, precision = autocast_for(cfg.train.precision, device)
    names, rows, times, cpu = stages.names, [], [], []
    log(f"strategy {cfg.strategy.name}: {len(names)} stages ({', '.join(names)}) on "
        f"{device.type}, {precision}")
    baseline_scores = [stages.score(j, device, autocast) for j in range(len(names))]
    baseline = [_metric(stages, j, s) for j, s in enumerate(baseline_scores)]
    with open(out / METRICS, "w", encoding="utf-8") as metrics:
        _record(metrics, {"after": None, "row": baseline, "scores": dict(zip(names, baseline_scores))})
        for i in range(len(names)):
            if i < cfg.trained_stages:  # trained before: remembered, not trained again
                strategy.after_stage(i, stages, device, log)
                seconds = cpu_seconds = 0.0
            else:
                seconds, cpu_seconds = _train_stage(i, stages, strategy, device, log)
            scores = [stages.score(j, device, autocast) for j in range(len(names))]
            rows.append([_metric(stages, j, s) for j, s in enumerate(scores)])
            times.append(seconds)
            cpu.append(cpu_seconds)
            _record(metrics, {"after": i, "stage": names[i], "row": rows[-1],
                              "scores": dict(zip(names, scores)), "train_seconds": seconds,
                              "train_cpu_seconds": cpu_seconds,
                              **matrix.partial(rows)})
            log(f"after stage {names[i]}: " + ", ".join(
                f"{n} {v:.4f}" for n, v in zip(names[:i + 1], rows[-1])))
    for i in range(len(names)):
        _save_stage(i, stages)
    summary = {"strategy": cfg.strategy.name, "stages": names,
               "metrics": [stages.task(j).default_metric for j in range(len(names))],
               **matrix.summary(rows, baseline), "stage_seconds": times,
               "train_seconds": sum(times), "train_cpu_seconds": sum(cpu),
               "wall_seconds": time.perf_counter() - t0,
               "trainable": stages.report.trainable, "total": stages.report.total}
    summary["plot"] = str(heat_map(rows, baseline, names, out / "accuracy_matrix.png"))
    summary["report"] = str(write_report(summary, out / "report.md"))
    write_json(out / "summary.json", summary)
    log(f"average accuracy {summary['average_accuracy']:.4f}, BWT {_fmt(summary['bwt'])}, "
        f"FWT {_fmt(summary['fwt'])}, training {summary['train_seconds']:.1f}s; report: "
        f"{summary['report']}")
    return summary


def _train_stage(i: int, stages: Stages, strategy: Any, device: Any,
                 log: Callable[[str], None]) -> tuple[float, float]:
    """Stage i through the one training loop; (wall, CPU) seconds of training (the strategy's
    own work after the stage, EWC's Fisher, included). CPU seconds are the process's, all
    threads: on a machine shared with other jobs they move far less than wall time."""
    cfg = stages.cfg
    t0, c0 = time.perf_counter(), time.process_time()
    plan = strategy.plan(i, stages, log)
    run_dir = stages.stage_dir(i)
    run_dir.mkdir(parents=True, exist_ok=True)
    train_cfg = cfg.train.model_copy(update={"eval_at_start": False})
    hook = _hooks(stages.report.hook, plan.hook)
    trainer = Trainer(stages.model, plan.task, plan.train, stages.setups[i].dev, train_cfg,
                      run_dir, device, log, lr_scales=stages.report.lr_scales, hook=hook)
    log(f"stage {i} {stages.names[i]}: {trainer.total_steps} steps")
    trainer.fit()
    strategy.after_stage(i, stages, device, log)
    return time.perf_counter() - t0, time.process_time() - c0


def _check_output(out: Path, overwrite: bool) -> None:
    """An earlier continual run is replaced with --overwrite; anything else as for any run."""
    if (out / MARKER).is_file():
        if not overwrite:
            raise CheckpointError(f"output_dir {out} already holds a continual run; pass "
                                  "--overwrite to replace it, or set output_dir")
        return
    check_replaceable(out, overwrite, "run")


def _hooks(method: Any, strategy: Any) -> Any:
    if method is not None and strategy is not None:
        raise ConfigError(f"method.name: this method's per-step code ({type(method).__name__}) "
                          "and the strategy's penalty cannot run together yet; use lora")
    return strategy if strategy is not None else method


def _metric(stages: Stages, j: int, scores: dict[str, Any]) -> float:
    return float(scores[stages.task(j).default_metric])


def _save_stage(i: int, stages: Stages) -> None:
    """Stage i as a sub-run: the final model with stage i's head, loadable like any run."""
    cfg, s, sub = stages.cfg, stages.setups[i], stages.stage_dir(i)
    sub_cfg = stage_config(cfg, i, sub)
    model = stages.model.models[stages.head(i)]
    sub.mkdir(parents=True, exist_ok=True)  # a stage trained before this run has no log here
    write_text(sub / "config.yaml", dump_config(sub_cfg))
    adapter = methods.METHODS[cfg.method.name].saves_adapter
    if adapter:
        save_adapter(model, cfg.method, head_modules(model), str(s.model_path), sub / ADAPTER_DIR,
                     task=sub_cfg.task)
    else:
        model.save_pretrained(sub / MODEL_DIR)
        s.tokenizer.save_pretrained(sub / MODEL_DIR)
    write_json(sub / "run.json", {"task": sub_cfg.task, "base_model": str(s.model_path),
                                  "model_name": cfg.model.name, "method": cfg.method.name,
                                  "artifact": ADAPTER_DIR if adapter else MODEL_DIR,
                                  "max_length": cfg.model.max_length, **s.info,
                                  "continual_run": str(cfg.output_dir)})


def _record(f: Any, record: dict[str, Any]) -> None:
    f.write(json.dumps(record) + "\n")
    f.flush()


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.4f}"
