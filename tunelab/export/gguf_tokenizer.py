"""A byte-level BPE tokenizer as llama.cpp's GGUF metadata, and the check that it reads back.

llama.cpp does not run the Hugging Face tokenizer: it rebuilds one from the token list, the
merges, each token's type and the *name* of the pre-tokenizer (the regex that cuts text before
BPE). A wrong piece gives a model that loads and writes garbage, so each one is taken from the
tokenizer's own tokenizer.json, and a tokenizer llama.cpp has no equivalent for is refused.
Token types follow llama.cpp's converter: special added tokens are CONTROL (matched whole in
the prompt, never split), other added tokens USER_DEFINED, vocabulary rows the tokenizer does
not fill UNUSED, the rest NORMAL (BYTE is for SentencePiece byte fallback, which is not written).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tunelab.errors import ExportError

# The Split regexes of Llama 3's and Qwen2's tokenizer.json, under llama.cpp's names for them.
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
               r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
SPLITS = {LLAMA3_SPLIT: "llama-bpe", QWEN2_SPLIT: "qwen2"}
IGNORES_MERGES = {"llama-bpe"}  # llama.cpp looks whole words up before merging for these

# Round-trip probes: spaces, newlines, accents, emoji, punctuation. No run of digits: the
# transformers GGUF reader splits them GPT-2 style whatever the file says (e.g. "smollm").
PROBES = ["Hello world, how are you?", "  two  spaces\nand a new line\n\n", "Café déjà vu 🙂!",
          "it's a test: (a+b)*c = d; x_y"]

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6  # gguf.TokenType


@dataclass
class Vocab:
    """What the writer puts under tokenizer.ggml.* (and tokenizer.chat_template)."""

    pre: str
    tokens: list[str]
    types: list[int]
    merges: list[str]
    special: dict[str, int]  # bos / eos / unk / pad -> id
    add_bos: bool
    add_eos: bool
    template: str | list[dict[str, str]] | None


def describe(tokenizer: Any, n_vocab: int, template: str | None) -> Vocab:
    """The GGUF description of `tokenizer` for a model with `n_vocab` embedding rows."""
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    pre = pre_tokenizer_name(spec)
    tokens, types = _tokens(spec, n_vocab)
    special = {kind: int(i) for kind in ("bos", "eos", "unk", "pad")
               if (i := getattr(tokenizer, f"{kind}_token_id", None)) is not None}
    add_bos, add_eos = _adds_special(tokenizer, special)
    return Vocab(pre, tokens, types, _merges(spec), special, add_bos, add_eos,
                 _template(template or getattr(tokenizer, "chat_template", None)))


def pre_tokenizer_name(spec: dict[str, Any]) -> str:
    """llama.cpp's name (tokenizer.ggml.pre) for how this tokenizer cuts text before BPE."""
    model = spec.get("model") or {}
    decoder = (spec.get("decoder") or {}).get("type")
    if model.get("type") != "BPE" or model.get("byte_fallback") or decoder != "ByteLevel":
        raise ExportError(f"the tokenizer is a {model.get('type')} model with a {decoder} decoder; "
                         "GGUF export writes byte-level BPE tokenizers (GPT-2 style: SmolLM2, "
                         "Llama 3, Qwen2); SentencePiece ones (Llama 2, Mistral) are not written "
                         "yet: export --to hf and convert with llama.cpp's convert_hf_to_gguf.py")
    if (spec.get("normalizer") or {}).get("type") not in (None, "NFC"):
        raise ExportError(f"the tokenizer normalizes text ({spec['normalizer']['type']}), which "
                         "llama.cpp does not do; it cannot be written as GGUF")
    name = _split_name(spec.get("pre_tokenizer") or {})
    if bool(model.get("ignore_merges")) != (name in IGNORES_MERGES):
        raise ExportError(f"the tokenizer's ignore_merges={model.get('ignore_merges')} does not "
                         f"match llama.cpp's '{name}' pre-tokenizer; it cannot be written as GGUF")
    return name


def _split_name(pre: dict[str, Any]) -> str:
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    kinds = [s.get("type") for s in steps]
    last = steps[-1] if steps else {}
    regex = last.get("use_regex", True)
    if kinds[-1:] == ["ByteLevel"] and not last.get("add_prefix_space"):
        if kinds == ["ByteLevel"] and regex:
            return "gpt-2"
        if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") and regex:
            return "smollm"
        if kinds == ["Split", "ByteLevel"] and not regex and steps[0].get("behavior") == "Isolated":
            name = SPLITS.get((steps[0].get("pattern") or {}).get("Regex"))
            if name:
                return name
    raise ExportError(f"the tokenizer's pre-tokenizer ({json.dumps(pre)[:200]}) has no llama.cpp "
                     "name tunelab knows (gpt-2, smollm, llama-bpe, qwen2); llama.cpp would cut "
                     "text differently from training, so the GGUF is not written")


def _tokens(spec: dict[str, Any], n_vocab: int) -> tuple[list[str], list[int]]:
    """Tokens and types by id, one per embedding row; added tokens are kept as written (raw
    text, which llama.cpp matches before byte-level encoding), the rest byte-level encoded."""
    by_id = {int(i): t for t, i in spec["model"]["vocab"].items()}
    added = {int(a["id"]): a for a in spec.get("added_tokens", [])}
    top = max([*by_id, *added]) + 1
    if top > n_vocab:
        raise ExportError(f"the tokenizer has ids up to {top - 1} but the model only {n_vocab} "
                         "embedding rows; resize the model's embeddings before exporting")
    tokens, types = [], []
    for i in range(n_vocab):
        if i in added:
            tokens.append(added[i]["content"])
            types.append(CONTROL if added[i].get("special") else USER_DEFINED)
        elif i in by_id:
            tokens.append(by_id[i])
            types.append(NORMAL)
        else:  # a padded embedding row (vocab rounded up to a multiple of 64, ...)
            tokens.append(f"[PAD{i}]")
            types.append(UNUSED)
    return tokens, types


def _merges(spec: dict[str, Any]) -> list[str]:
    """Merges as llama.cpp reads them: "left right", split at the first space."""
    merges = []
    for m in spec["model"].get("merges") or []:
        pair = m.split(" ", 1) if isinstance(m, str) else list(m)
        if len(pair) != 2 or any(" " in p for p in pair):
            raise ExportError(f"tokenizer merge {m!r} holds a space, which a byte-level BPE "
                             "tokenizer never does; it cannot be written as GGUF")
        merges.append(" ".join(pair))
    return merges


def _adds_special(tokenizer: Any, special: dict[str, int]) -> tuple[bool, bool]:
    """Whether encoding puts BOS first / EOS last: measured, since llama.cpp's default for a
    missing flag depends on the pre-tokenizer and would otherwise differ from training."""
    with_special = tokenizer("a b").input_ids
    plain = tokenizer("a b", add_special_tokens=False).input_ids
    extra = len(with_special) > len(plain)
    bos = extra and "bos" in special and with_special[0] == special["bos"] != plain[0]
    eos = extra and "eos" in special and with_special[-1] == special["eos"] != plain[-1]
    return bool(bos), bool(eos)


def _template(template: Any) -> str | list[dict[str, str]] | None:
    if isinstance(template, dict):  # named templates (default, tool_use, ...)
        return [{"name": k, "template": v} for k, v in template.items()]
    return template or None


def write(writer: Any, vocab: Vocab) -> None:
    writer.add_tokenizer_model("gpt2")  # llama.cpp's name for byte-level BPE
    writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.types)
    writer.add_token_merges(vocab.merges)
    for kind, token_id in vocab.special.items():
        getattr(writer, f"add_{kind}_token_id")(token_id)
    writer.add_add_bos_token(vocab.add_bos)
    writer.add_add_eos_token(vocab.add_eos)
    if vocab.template:
        writer.add_chat_template(vocab.template)


def check(tokenizer: Any, readback: Any, vocab: Vocab, file_types: list[int]) -> dict[str, Any]:
    """Compare the tokenizer transformers rebuilds from the file with the original: ids of the
    probes (each also wrapped in every special token), special ids, CONTROL types, template."""
    specials = [vocab.tokens[i] for i, t in enumerate(vocab.types) if t == CONTROL]
    probes = PROBES + [f"{s}{PROBES[0]}{s}\n" for s in specials[:8]]
    differ = [p for p in probes
              if tokenizer(p).input_ids != readback(p).input_ids
              or tokenizer(p, add_special_tokens=False).input_ids
              != readback(p, add_special_tokens=False).input_ids]
    wrong_types = [vocab.tokens[i] for i, t in enumerate(vocab.types)
                   if t == CONTROL and file_types[i] != CONTROL]
    ids_kept = all(getattr(readback, f"{k}_token_id", None) == v for k, v in vocab.special.items())
    template = vocab.template if isinstance(vocab.template, str) else None
    template_kept = template is None or readback.chat_template == template
    return {"tokenizer_match": not differ and not wrong_types and ids_kept and template_kept,
            "probes": len(probes), "probes_differing": differ, "control_tokens": len(specials),
            "control_types_wrong": wrong_types, "special_ids_kept": ids_kept,
            "chat_template_kept": template_kept}
