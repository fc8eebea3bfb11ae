"""`tunelab explain`: token attributions for a trained run's predictions (classification:
the predicted or a chosen label; NER: each entity found; causal LM: each generated token),
printed on the text, and optionally written as JSON and a self-contained HTML page. With
--faithfulness, how well the explanations hold up when the words they rank first are erased,
against a random ranking, over a data file (the run's dev set by default)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from tunelab.config import validate
from tunelab.data.splits import eval_items, load_splits, read_like_training
from tunelab.errors import ConfigError, DataError
from tunelab.explain import render
from tunelab.explain.attribute import METHODS
from tunelab.explain.explainers import (
    default_baseline,
    explain_entities,
    explain_generation,
    explain_label,
)
from tunelab.explain.faithfulness import RANDOM, faithfulness_table
from tunelab.explain.words import Explanation
from tunelab.io import write_text
from tunelab.runs.trained import load_trained

TASKS = ("classification", "token_classification", "causal_lm")


def explain(run_dir: Path, texts: list[str], file: Path | None = None, label: str | None = None,
            method: str = "ig", steps: int = 50, json_out: Path | None = None,
            html_out: Path | None = None, data: str | None = None, faithfulness: bool = False,
            limit: int = 200, max_new_tokens: int = 8, colour: bool | None = None,
            log=print) -> dict[str, Any]:
    """Explain texts (and/or measure faithfulness); returns what --json writes."""
    if method not in METHODS:
        raise ConfigError(f"--method {method!r}: choose one of {', '.join(METHODS)}")
    if limit < 1:
        raise ConfigError(f"--limit {limit}: give the number of data rows to score (1 or more)")
    colour = sys.stdout.isatty() if colour is None else colour
    model, tokenizer, info = load_trained(run_dir)
    if info["task"] not in TASKS:
        raise DataError(f"explain: {run_dir} is a {info['task']} run; explanations cover "
                        f"{', '.join(TASKS)} runs")
    texts = texts + _file_texts(file) + ([] if data is None or faithfulness
                                         else _data_texts(run_dir, info, data, limit))
    meta: dict[str, Any] = {"run": str(run_dir), "task": info["task"], "method": method,
                            "steps": steps, "baseline": "non-special sub-tokens replaced by "
                            f"id {default_baseline(tokenizer)} (pad/unk/eos)"}
    if faithfulness:
        meta["faithfulness"] = _faithfulness(model, tokenizer, info, run_dir, data, method,
                                             steps, limit, log)
    elif not texts:
        raise DataError("explain: give texts as arguments, --file with one text per line, or "
                        "--data FILE (with --faithfulness to score the explanations)")
    explanations = [e for text in texts for e in _explain(model, tokenizer, info, text, method,
                                                          steps, label, max_new_tokens)]
    for e in explanations:
        log(render.summary(e))
        log("  " + render.terminal(e, colour))
    if json_out is not None:
        write_text(json_out, render.to_json(explanations, meta))
        log(f"wrote {json_out}")
    if html_out is not None:
        render.write_html(html_out, explanations, f"Explanations: {run_dir}",
                          f"{method}, {steps} steps; {meta['baseline']}")
        log(f"wrote {html_out}")
    return {**meta, "explanations": [e.to_json() for e in explanations]}


def explain_for_report(run_dir: Path, texts: list[str], steps: int = 50) -> list[dict[str, Any]]:
    """The `Explainer` `tunelab report` takes: IG on each text's predicted label, as JSON."""
    model, tokenizer, info = load_trained(run_dir)
    return [explain_label(model, tokenizer, info, t, "ig", steps).to_json() for t in texts]


def _explain(model, tokenizer, info: dict[str, Any], text: str, method: str, steps: int,
             label: str | None, max_new_tokens: int) -> list[Explanation]:
    if info["task"] == "classification":
        return [explain_label(model, tokenizer, info, text, method, steps, label)]
    if label is not None:
        raise ConfigError(f"--label {label}: only classification runs have a label to choose; "
                          f"this is a {info['task']} run")
    if info["task"] == "token_classification":
        return explain_entities(model, tokenizer, info, text, method, steps)
    return explain_generation(model, tokenizer, text, method, steps, max_new_tokens)


def _file_texts(file: Path | None) -> list[str]:
    if file is None:
        return []
    if not file.is_file():
        raise DataError(f"{file}: file not found")
    return [t for t in file.read_text(encoding="utf-8").splitlines() if t.strip()]


def _data_texts(run_dir: Path, info: dict[str, Any], data: str | None, limit: int) -> list[str]:
    """The first `limit` texts of `data` read like the run's training data (a text pair as
    "first<TAB>second"), or of the run's dev set when `data` is None."""
    if info["task"] != "classification":
        raise DataError(f"--data: reading a data file is for classification runs; {run_dir} is "
                        f"a {info['task']} run (give texts or --file)")
    path = run_dir / "config.yaml"
    cfg = validate(yaml.safe_load(path.read_text(encoding="utf-8")), str(path))
    examples, _ = eval_items(cfg, data, "dev", load_splits, read_like_training)
    return [e.text if e.text_pair is None else f"{e.text}\t{e.text_pair}"
            for e in examples[:limit]]


def _faithfulness(model, tokenizer, info: dict[str, Any], run_dir: Path, data: str | None,
                  method: str, steps: int, limit: int, log) -> dict[str, dict[str, float]]:
    texts = _data_texts(run_dir, info, data, limit)
    table = faithfulness_table(model, tokenizer, info, texts, [method], steps,
                               default_baseline(tokenizer))
    log(f"faithfulness on {len(texts)} texts of {data or 'the dev set'} (predicted label; "
        "comprehensiveness and deletion AOPC: higher is better, sufficiency: lower)")
    log(f"{'method':<14}{'compr.':>9}{'suff.':>9}{'del. AOPC':>11}{'s/expl.':>9}")
    for name in (method, RANDOM):
        row = table[name]
        secs = f"{row['seconds']:>9.3f}" if "seconds" in row else f"{'–':>9}"
        log(f"{name:<14}{row['comprehensiveness']:>9.4f}{row['sufficiency']:>9.4f}"
            f"{row['deletion_aopc']:>11.4f}{secs}")
    if "completeness_error" in table[method]:
        log(f"IG completeness error |sum(attr) - (F(x) - F(baseline))|: mean "
            f"{table[method]['completeness_error']:.2e}, max "
            f"{table[method]['completeness_error_max']:.2e} ({steps} steps)")
    return table
