"""The sections every run page has: overview, final metrics, curves and evaluations, config."""

from __future__ import annotations

from typing import Any

from tunelab.report.document import Code, Figure, Para, Section, Table
from tunelab.report.plots import run_curves
from tunelab.train.plots import DEV_SCORES
from tunelab.report.rundata import RunFiles

SKIP = {"step", "split", "tokens", "per_type"}  # record keys that are not scores


def scores(record: dict[str, Any] | None) -> dict[str, float]:
    """The numeric scores of an evaluation record (loss first, then DEV_SCORES order, then
    anything else, e.g. bleu and chrf)."""
    if not record:
        return {}
    found = {k: v for k, v in record.items()
             if k not in SKIP and isinstance(v, (int, float)) and not isinstance(v, bool)}
    order = ["loss", *DEV_SCORES]
    return dict(sorted(found.items(), key=lambda kv: (order.index(kv[0]) if kv[0] in order
                                                      else len(order), kv[0])))


def final_dev(run: RunFiles) -> dict[str, Any] | None:
    """The dev scores of the saved weights: summary.json's, else the last logged evaluation."""
    if run.summary and run.summary.get("final_dev"):
        return run.summary["final_dev"]
    dev = run.dev_records()
    return dev[-1] if dev else None


def best_record(run: RunFiles) -> dict[str, Any] | None:
    best = (run.summary or {}).get("best")
    if not best:
        return None
    return next((r for r in run.dev_records() if r["step"] == best["step"]), best)


def overview(run: RunFiles) -> Section:
    s, cfg = run.summary or {}, run.config
    rows: list[list[Any]] = [["task", run.task],
                             ["model", str(run.info.get("model_name", run.info["base_model"]))],
                             ["method", run.info["method"]],
                             ["saved", f"{run.info['artifact']}/"]]
    if s:
        rows += [["steps", f"{s['steps']} / {s['total_steps']}"
                  + (" (stopped early)" if s.get("stopped_early") else "")],
                 ["training time (s)", f"{s['train_seconds']:.1f}"],
                 ["real tokens / s", f"{s['tokens_per_s']:.0f}"],
                 ["precision", s["precision"]],
                 ["trainable parameters", f"{s['trainable']:,} / {s['total']:,} "
                                          f"({100 * s['trainable'] / max(s['total'], 1):.2f}%)"],
                 ["selection metric", s["metric"]],
                 ["weights saved", "best" if s.get("restored_best") else "last"],
                 *([["privacy", s["privacy"]["guarantee"]]] if s.get("privacy") else [])]
    train = cfg.get("train") or {}
    rows += [[f"train.{k}", str(train[k])] for k in ("batch_size", "lr", "schedule") if k in train]
    blocks: list[Any] = [Table("overview", ["", run.name], rows)]
    if not s:
        blocks.insert(0, Para("This run has no summary.json: it is unfinished or was "
                              "interrupted; figures below come from metrics.jsonl."))
    return Section("Overview", blocks)


def final_metrics(run: RunFiles) -> Section:
    s = run.summary or {}
    dev = run.dev_records()
    if not s:  # unfinished: what metrics.jsonl logged
        first = dev[0] if dev and dev[0]["step"] == 0 else None
        columns = {"dev before training": scores(first)}
        if dev and dev[-1] is not first:
            columns[f"dev, last evaluation (step {dev[-1]['step']})"] = scores(dev[-1])
        rows = [[n, *(c.get(n) for c in columns.values())]
                for n in dict.fromkeys(k for c in columns.values() for k in c)]
        return Section("Final metrics", [Table("final-metrics", ["metric", *columns], rows)])
    columns = {"dev before training": scores(s.get("initial_dev")),
               "dev best" + (f" (step {s['best']['step']})" if s.get("best") else ""):
                   scores(best_record(run)),
               "dev after training": scores(final_dev(run)),
               "test before training": scores(s.get("test_before")),
               "test after training": scores(s.get("test"))}
    columns = {k: v for k, v in columns.items() if v}
    names = list(dict.fromkeys(k for v in columns.values() for k in v))
    rows = [[name, *(col.get(name) for col in columns.values())] for name in names]
    blocks: list[Any] = [Table("final-metrics", ["metric", *columns], rows)]
    if s.get("dev_examples"):
        blocks.insert(0, Para(f"Dev set: {s['dev_examples']} examples. After training: the "
                              f"{'best' if s.get('restored_best') else 'last'} weights, as saved."))
    return Section("Final metrics", blocks)


def curves(run: RunFiles) -> Section:
    blocks: list[Any] = []
    png = run_curves(run)
    if png:
        blocks.append(Figure("curves.png", png, f"{run.name}: loss, dev scores and learning rate"))
    dev = run.dev_records()
    if dev:
        names = list(dict.fromkeys(k for r in dev for k in scores(r)))
        blocks.append(Table("dev-evaluations", ["step", *names],
                            [[r["step"], *(r.get(n) for n in names)] for r in dev],
                            caption="every dev evaluation in metrics.jsonl"))
    if not blocks:
        blocks.append(Para("metrics.jsonl holds no records yet."))
    return Section("Curves", blocks)


def config(run: RunFiles) -> Section:
    text = (run.dir / "config.yaml").read_text(encoding="utf-8")
    return Section("Config", [Para("config.yaml, the effective config of the run (every key, "
                                   "defaults included):"), Code(text)])
