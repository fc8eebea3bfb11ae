"""A written GGUF read back with transformers' GGUF loader and compared with the model it came from.

That loader is an independent reader of llama.cpp's layout: it undoes the Q/K interleave with
its own code, builds the config from the llama.* keys and the tokenizer from the token list,
merges and token types. Agreement with it is evidence the file is what llama.cpp expects. What
it does not show: llama.cpp's kernels (for q8_0 they also round activations to 8 bits, so
llama.cpp's logits move a little more than these) and llama.cpp's own pre-tokenizer regexes.

Tolerances: f32 must reproduce the model (the same weights, so only float summation order
may differ: 1e-4 absolute on the logits, identical greedy tokens; measured: exactly 0). f16
and q8_0 are reported as max |logit diff| relative to the largest |logit|, with a bound that
is what rounding allows. f16 keeps 11 significant bits (<= 0.05% per weight); measured 0.05%
(tiny Llama) and 0.11% (SmolLM2-135M), bound 0.5%. q8_0 rounds each weight to a step of
1/127 of its 32-weight block's largest magnitude, an rms error of ~0.5% of a Gaussian block's
rms per matrix product, which compounds over the layers; measured 1.0% (2 layers) and 2.6-3.5%
(SmolLM2's 30 layers; the max over ~10^6 logits is a tail value), bound 8%.
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from tunelab.export import gguf_tokenizer

F32_ABS = 1e-4
REL_BOUND = {"f32": 1e-5, "f16": 5e-3, "q8_0": 8e-2}  # max |logit diff| / max |logit|
PROMPTS = ["The capital of France is", "Once upon a time, there was a little"]
CHAT_PROMPT = "What is a language model?"
NEW_TOKENS = 12


def check(path: Path, model: Any, tokenizer: Any, vocab: gguf_tokenizer.Vocab, dtype: str,
          prompts: list[str] | None = None) -> dict[str, Any]:
    """Numbers that say whether `path` holds `model` and `tokenizer` (see the module doc)."""
    readback, readback_tokenizer = read_back(path)
    token_types, tensor_types = _file_types(path)
    tokens = gguf_tokenizer.check(tokenizer, readback_tokenizer, vocab, token_types)
    result = compare(model, readback, tokenizer, _prompt_ids(tokenizer, vocab, prompts))
    within = result["rel_logit_diff"] <= REL_BOUND[dtype]
    if dtype == "f32":
        within = result["max_logit_diff"] <= F32_ABS and result["greedy_match"]
    return {**result, "rel_bound": REL_BOUND[dtype], "ok": within, **tokens,
            "tensor_types": tensor_types}


def read_back(path: Path) -> tuple[Any, Any]:
    """(model, tokenizer) as transformers builds them from the file alone: loaded through a
    link in an empty folder, so no config or tokenizer file beside the GGUF is mixed in (the
    link's name is unusual since transformers first looks for a file of that name in the cwd)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    link = f"tunelab-check-{os.getpid()}-{path.name}"
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / link).symlink_to(path.resolve())
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=link)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=link,
                                                     dtype=torch.float32)
    return model.eval(), tokenizer


def _file_types(path: Path) -> tuple[list[int], dict[str, int]]:
    """(token type per id, tensor count per GGML type) as stored in the file."""
    from gguf import GGUFReader

    reader = GGUFReader(path)
    types = [int(t) for t in reader.fields["tokenizer.ggml.token_type"].contents()]
    return types, dict(Counter(t.tensor_type.name for t in reader.tensors))


def _prompt_ids(tokenizer: Any, vocab: gguf_tokenizer.Vocab,
                prompts: list[str] | None) -> list[list[int]]:
    texts = list(prompts or PROMPTS)
    template = vocab.template if isinstance(vocab.template, str) else None
    if template and prompts is None:
        texts.append(tokenizer.apply_chat_template(
            [{"role": "user", "content": CHAT_PROMPT}], chat_template=template, tokenize=False,
            add_generation_prompt=True))
    return [tokenizer(t).input_ids for t in texts]


def greedy(model: Any, ids: Any, new_tokens: int) -> Any:
    """`ids` continued by the most likely token, `new_tokens` times (no cache: short prompts)."""
    import torch

    for _ in range(new_tokens):
        step = model(ids, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, step], dim=1)
    return ids


def compare(model: Any, readback: Any, tokenizer: Any, prompt_ids: list[list[int]],
            new_tokens: int = NEW_TOKENS) -> dict[str, Any]:
    """Greedy continuations of both models, and both models' logits along the original's."""
    import torch

    diff = scale = 0.0
    same = agree = positions = 0
    samples = []
    with torch.no_grad():
        for ids in prompt_ids:
            prompt = torch.tensor([ids])
            want, got = greedy(model, prompt, new_tokens), greedy(readback, prompt, new_tokens)
            same += int(torch.equal(want, got))
            a = model(want, use_cache=False).logits
            b = readback(want, use_cache=False).logits
            diff = max(diff, (a - b).abs().max().item())
            scale = max(scale, a.abs().max().item())
            agree += int((a.argmax(-1) == b.argmax(-1)).sum())
            positions += a.shape[1]
            samples.append({"prompt": tokenizer.decode(ids),
                            "pytorch": tokenizer.decode(want[0, len(ids):].tolist()),
                            "gguf": tokenizer.decode(got[0, len(ids):].tolist())})
    return {"max_logit_diff": diff, "rel_logit_diff": diff / max(scale, 1e-12),
            "greedy_match": same == len(prompt_ids), "greedy_same": f"{same}/{len(prompt_ids)}",
            "argmax_agreement": agree / max(positions, 1), "samples": samples}


def tokenizer_problem(result: dict[str, Any]) -> str:
    problems = []
    if result["probes_differing"]:
        problems.append(f"different ids for {result['probes_differing'][:3]}")
    if result["control_types_wrong"]:
        problems.append(f"special tokens not CONTROL: {result['control_types_wrong'][:5]}")
    if not result["special_ids_kept"]:
        problems.append("bos/eos/unk/pad ids changed")
    if not result["chat_template_kept"]:
        problems.append("chat template changed")
    return "; ".join(problems) or "none"


def summary(result: dict[str, Any]) -> str:
    """The few lines `tunelab export --to gguf` prints."""
    r = result
    bound = (f"f32 needs <= {F32_ABS:g} and identical greedy tokens" if r["dtype"] == "f32"
             else f"expected <= {r['rel_bound']:.1%}")
    model = (f"  read back with transformers: max |logit diff| {r['max_logit_diff']:.2e} "
             f"({r['rel_logit_diff']:.3%} of the largest logit; {bound}), greedy "
             f"{r['greedy_same']} prompts identical, argmax agreement {r['argmax_agreement']:.1%}"
             + ("" if r["ok"] else "  <- OUTSIDE THE BOUND"))
    tokens = (f"  tokenizer: identical ids on {r['probes']} strings, {r['control_tokens']} "
              "special tokens typed CONTROL, bos/eos/pad ids and chat template kept"
              if r["tokenizer_match"] else f"  tokenizer: DIFFERENT ({tokenizer_problem(r)})")
    wrote = (f"wrote {r['file']} ({r['dtype']}, {r['bytes'] / 1e6:.1f} MB, {r['arch']}, "
             f"pre-tokenizer {r['pre_tokenizer']})")
    return f"{wrote}\n{model}\n{tokens}"
