"""`tunelab data inspect` for masked_lm runs: the first step's masks, as training will see them."""

from __future__ import annotations

from tunelab.commands.highlight import highlight
from tunelab.config import MaskedLMRun
from tunelab.data.masking import IGNORE, encode_texts
from tunelab.data.render import histogram
from tunelab.data.unlabeled import split_texts
from tunelab.models import load_tokenizer
from tunelab.recipes.mlm import masker_for
from tunelab.runs.resolve import resolve
from tunelab.tasks.masked_lm import step_key


def inspect_masks(cfg: MaskedLMRun, n: int, colour: bool) -> None:
    """Each shown example marks its predicted tokens as original->input ([MASK], a random token,
    or itself), drawn exactly as at step 0 of training."""
    texts, held, source = split_texts(cfg.data)
    tokenizer = load_tokenizer(resolve(cfg.model.name))
    data, split = encode_texts(tokenizer, texts, cfg.model.max_length)
    masker = masker_for(cfg, tokenizer)
    print(f"{len(texts)} training texts -> {len(data)} windows ({split} texts span several); "
          f"held-out: {len(held)} texts ({source}); predicted tokens are shown "
          f"{'green' if colour else 'inside [[ ]]'} as original->input\n")
    for k in range(min(n, len(data))):
        inputs, labels = masker.draw(data, k, step_key(cfg.train.seed, 0))
        parts = []
        for shown, gold in zip(inputs, labels):
            if gold == IGNORE:
                parts.append(tokenizer.convert_ids_to_tokens(shown))
                continue
            mark = f"{tokenizer.convert_ids_to_tokens(gold)}->{tokenizer.convert_ids_to_tokens(shown)}"
            parts.append(highlight(mark, colour, f"[[{mark}]]"))
        print(f"--- example {k + 1} ({data.records[k].where}, {len(inputs)} tokens, "
              f"{sum(g != IGNORE for g in labels)} predicted)")
        print(" ".join(parts))
    print(f"\n--- statistics (training split): {sum(data.maskable)} maskable tokens, "
          f"{cfg.data.mask_rate:.0%} predicted per step on average")
    print("length histogram (tokens):")
    for line in histogram(data.lengths()):
        print("  " + line)
