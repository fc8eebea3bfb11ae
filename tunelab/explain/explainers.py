"""Explanations per task: the predicted (or a chosen) label of a classification run, each
entity an NER run finds, each token a causal LM generates. Predictions come from the same
inference code as `tunelab predict`, so what is explained is what predict prints."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tunelab.errors import DataError
from tunelab.explain.attribute import (
    Target,
    attribute,
    class_target,
    forward_fn,
    next_token_target,
    tags_target,
)
from tunelab.explain.encode import Encoded, encode_prompt, encode_split, encode_text
from tunelab.explain.words import Explanation, to_words
from tunelab.tasks.inference import classify, extract_entities


def default_baseline(tokenizer) -> int:
    """[PAD], else UNK, else EOS: the token the IG baseline is made of."""
    for tid in (tokenizer.pad_token_id, tokenizer.unk_token_id, tokenizer.eos_token_id):
        if tid is not None:
            return int(tid)
    return 0


def explain_one(model: nn.Module, enc: Encoded, target: Target, method: str, steps: int,
                baseline_id: int, extra: dict[str, Any] | None = None) -> Explanation:
    """Attribute `target` on `enc` and sum the scores back to words."""
    attr = attribute(model, enc, target, method, steps, baseline_id)
    with torch.no_grad():
        inputs = enc.tensors()
        args = [inputs["attention_mask"]] + ([inputs["token_type_ids"]]
                                             if "token_type_ids" in inputs else [])
        prob = float(forward_fn(model, target)(inputs["input_ids"], *args)[0])
    error = None if attr.delta is None else abs(attr.delta)
    return Explanation(enc.text, target.name, prob, method, to_words(enc, attr.tokens),
                       list(zip(enc.tokens, attr.tokens)), error,
                       {**(extra or {}), **({"output_gap": attr.gap} if attr.gap is not None
                                            else {})})


def label_index(info: dict[str, Any], label: str) -> int:
    labels = [str(x) for x in info["labels"]]
    if label not in labels:
        raise DataError(f"--label {label!r}: not a label of this run ({', '.join(labels)})")
    return labels.index(label)


def explain_label(model: nn.Module, tokenizer, info: dict[str, Any], text: str,
                  method: str = "ig", steps: int = 50, label: str | None = None,
                  baseline_id: int | None = None) -> Explanation:
    """Why a classification run gives `text` its predicted label (or `label`)."""
    predicted, prob, _ = classify(model, tokenizer, info, [text])[0]
    chosen = predicted if label is None else label
    k = label_index(info, chosen)
    enc = encode_text(tokenizer, info, text)
    base = default_baseline(tokenizer) if baseline_id is None else baseline_id
    return explain_one(model, enc, class_target(k, f"label {chosen}"), method, steps, base,
                       {"predicted": predicted, "predicted_probability": prob})


def explain_entities(model: nn.Module, tokenizer, info: dict[str, Any], text: str,
                     method: str = "ig", steps: int = 50) -> list[Explanation]:
    """One explanation per entity `tunelab predict` finds in `text`: the mean probability of
    its words' predicted tags, each read at the word's first sub-token."""
    found = extract_entities(model, tokenizer, info, [text]).entities[0]
    enc = encode_split(tokenizer, info, text)
    first: dict[int, int] = {}
    for pos, w in enumerate(enc.word_of):
        if w is not None:
            first.setdefault(w, pos)
    with torch.no_grad():
        tags = model(**enc.tensors()).logits[0].argmax(-1).tolist()  # (T,)
    out = []
    for ent in found:
        positions = [first[w] for w in range(*ent.words) if w in first]
        target = tags_target(positions, [tags[p] for p in positions],
                             f"{ent.type} {ent.text!r}")
        out.append(explain_one(model, enc, target, method, steps, default_baseline(tokenizer),
                               {"entity": {"type": ent.type, "start": ent.start,
                                           "end": ent.end}}))
    return out


@torch.no_grad()
def _greedy(model: nn.Module, ids: list[int], max_new_tokens: int, eos: int | None) -> list[int]:
    out = list(ids)
    for _ in range(max_new_tokens):
        nxt = int(model(input_ids=torch.tensor([out])).logits[0, -1].argmax())
        if nxt == eos:
            break
        out.append(nxt)
    return out[len(ids):]


def explain_generation(model: nn.Module, tokenizer, text: str, method: str = "ig",
                       steps: int = 50, max_new_tokens: int = 8) -> list[Explanation]:
    """One explanation per greedily generated token: which prompt words (and which earlier
    generated tokens) made the model pick it. Generated tokens count as words of their own."""
    prompt = encode_prompt(tokenizer, text)
    new = _greedy(model, prompt.input_ids, max_new_tokens, tokenizer.eos_token_id)
    if not new:
        raise DataError(f"{text!r}: the model ends the text at once; nothing was generated")
    out = []
    for t, token in enumerate(new):
        enc = _extended(tokenizer, prompt, new[:t])
        piece = tokenizer.decode([token])
        target = next_token_target(len(enc.input_ids) - 1, token, f"token {piece!r}")
        out.append(explain_one(model, enc, target, method, steps, default_baseline(tokenizer),
                               {"step": t, "token": piece}))
    return out


def _extended(tokenizer, prompt: Encoded, generated: list[int]) -> Encoded:
    """The prompt followed by already generated tokens, each its own word in the text."""
    text, spans, word_of = prompt.text, list(prompt.spans), list(prompt.word_of)
    words = list(prompt.words)
    for token in generated:
        piece = tokenizer.decode([token])
        start = len(text)
        text += piece
        spans.append((start, len(text)))
        word_of.append(len(words))
        words.append((piece, start, len(text)))
    ids = prompt.input_ids + generated
    return Encoded(text, ids, None, tokenizer.convert_ids_to_tokens(ids), spans, word_of, words)
