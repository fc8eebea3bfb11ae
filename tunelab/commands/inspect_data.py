"""`tunelab data inspect`: show exactly which tokens train, and the data's statistics."""

from __future__ import annotations

import sys
from collections import Counter
from itertools import groupby

from tunelab.commands import images as image_commands
from tunelab.commands.highlight import highlight
from tunelab.commands.inspect_masks import inspect_masks
from tunelab.commands.inspect_tags import inspect_tags
from tunelab.config import (
    CausalLMRun,
    ClassificationRun,
    ImageClassificationRun,
    MaskedLMRun,
    MultiTaskRun,
    RunConfig,
    TokenClassificationRun,
)
from tunelab.data import load_splits
from tunelab.data.render import IGNORE, histogram
from tunelab.models import load_tokenizer
from tunelab.recipes.causal_lm import renderer_for, split_records
from tunelab.recipes.multitask import part_config
from tunelab.runs.resolve import resolve


def mark_trained(tokenizer, ids: list[int], labels: list[int], colour: bool) -> str:
    """The decoded example with supervised spans in green (terminal) or [[brackets]]."""
    out = []
    for trained, group in groupby(zip(ids, labels), key=lambda p: p[1] != IGNORE):
        text = tokenizer.decode([i for i, _ in group], skip_special_tokens=False)
        if trained:
            text = highlight(text, colour, f"[[{text}]]")
        out.append(text)
    return "".join(out)


def inspect(cfg: RunConfig, n: int = 3, colour: bool | None = None) -> None:
    colour = sys.stdout.isatty() if colour is None else colour
    if isinstance(cfg, MultiTaskRun):  # each task as the single-task run it is set up as

        for name in cfg.tasks:
            print(f"=== task {name}")
            inspect(part_config(cfg, name, cfg.output_dir), n, colour)
        return None
    if isinstance(cfg, ClassificationRun):
        return _classification(cfg)
    if isinstance(cfg, ImageClassificationRun):
        return image_commands.inspect(cfg, n)
    if isinstance(cfg, TokenClassificationRun):
        return inspect_tags(cfg, n, colour)
    if isinstance(cfg, MaskedLMRun):
        return inspect_masks(cfg, n, colour)
    assert isinstance(cfg, CausalLMRun)
    records, held = split_records(cfg)
    tokenizer = load_tokenizer(resolve(cfg.model.name))
    renderer = renderer_for(cfg, tokenizer)
    data, stats = renderer.encode(records)
    how = "green" if colour else "inside [[ ]]"
    print(f"{len(records)} training records, {len(held)} held out; loss on {cfg.data.loss_on} "
          f"tokens; trained tokens are shown {how}\n")
    for k in range(min(n, len(data))):
        print(f"--- example {k + 1} ({data.records[k].where}, {len(data.input_ids[k])} tokens, "
              f"{data.trained[k]} trained)")
        print(mark_trained(tokenizer, data.input_ids[k], data.labels[k], colour))
    print("\n--- statistics (training split)")
    for line in stats.lines():
        print(line)
    print("length histogram (tokens):")
    for line in histogram(stats.lengths):
        print("  " + line)


def _classification(cfg: ClassificationRun) -> None:
    splits = load_splits(cfg.data)
    tokenizer = load_tokenizer(resolve(cfg.model.name))
    for name, part in (("train", splits.train), ("dev", splits.dev)):
        counts = Counter(e.label for e in part)
        print(f"{name}: {len(part)} examples; " + ", ".join(f"{k}: {counts[k]}" for k in splits.labels))
    lengths = [len(ids) for ids in tokenizer([e.text for e in splits.train], text_pair=None)["input_ids"]]
    truncated = sum(1 for n in lengths if n > cfg.model.max_length)
    print(f"train tokens: {sum(lengths)}; truncated at {cfg.model.max_length}: {truncated}")
    print("length histogram (tokens):")
    for line in histogram(lengths):
        print("  " + line)
