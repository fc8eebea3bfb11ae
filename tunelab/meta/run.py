"""`tunelab meta CONFIG`: meta-learn an adapter initialisation and save it as a PEFT adapter
that a later few-shot run starts from (`model.init_adapter: RUN_DIR/adapter`)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import yaml

from tunelab import methods
from tunelab.io import write_text
from tunelab.meta.config import MetaRun
from tunelab.meta.episodes import build_pools
from tunelab.meta.learn import meta_train
from tunelab.methods.peft_format import save_adapter
from tunelab.models import load_classifier, load_tokenizer
from tunelab.recipes.run import seed_everything
from tunelab.runs.layout import ADAPTER_DIR, check_replaceable, write_json
from tunelab.runs.resolve import resolve_config


def meta(cfg: MetaRun, overwrite: bool = False, log: Callable[[str], None] = print) -> dict[str, Any]:
    t0 = time.perf_counter()
    s = cfg.meta
    out = Path(cfg.output_dir)
    check_replaceable(out, overwrite, "run")
    seed_everything(s.seed)
    model_path = resolve_config(cfg.model)
    tokenizer = load_tokenizer(model_path)
    pools = build_pools(s.sources, tokenizer, cfg.model.max_length, s.n_way,
                        s.k_shot + s.query_shot)  # data first: errors before weights load
    for pool in pools:
        log(f"source {pool.name}: labels {', '.join(sorted(pool.by_label))}")
    model = load_classifier(model_path, [f"class {i}" for i in range(s.n_way)], cfg.model.dropout,
                            pad_token_id=tokenizer.pad_token_id, pooling=cfg.model.pooling)
    report = methods.apply(model, cfg.method)
    for line in report.lines():
        log(line)
    log(f"{s.algorithm}: {s.episodes} episodes of {s.n_way}-way {s.k_shot}-shot, "
        f"{s.inner_steps} inner steps at lr {s.inner_lr}, outer lr {s.outer}; the head is "
        "reset to zero every episode and is not meta-learned")
    history = meta_train(model, report.head, pools, s, tokenizer.pad_token_id, log)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    write_json(out / "meta.json", {"algorithm": s.algorithm})  # marks a tunelab output
    write_text(out / "config.yaml", yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    adapter = save_adapter(model, cfg.method, report.head, str(model_path), out / ADAPTER_DIR)
    with open(out / "episodes.jsonl", "w", encoding="utf-8") as f:
        for h in history:
            f.write(json.dumps(h) + "\n")
    window = max(1, min(len(history) // 5, 50))
    first = sum(h["query_loss"] for h in history[:window]) / window
    last = sum(h["query_loss"] for h in history[-window:]) / window
    summary = {"algorithm": s.algorithm, "episodes": s.episodes, "adapter": str(adapter),
               "query_loss_first": first, "query_loss_last": last, "window": window,
               "seconds": time.perf_counter() - t0}
    write_json(out / "summary.json", summary)
    log(f"query loss after adapting: {first:.4f} (first {window} episodes) -> {last:.4f} "
        f"(last {window})")
    log(f"adapter: {adapter}; start a few-shot run from it with model.init_adapter: {adapter}")
    return summary
