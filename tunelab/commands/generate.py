"""Generation from a trained causal LM run (or a base model): one prompt, a file, or a chat."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch

from tunelab.data.readers import json_lines
from tunelab.errors import AdapterError, DataError, ModelError
from tunelab.methods.multi_adapter import set_adapter
from tunelab.models import load_causal_lm, load_tokenizer
from tunelab.runs.layout import RUN_INFO, load_run_config
from tunelab.runs.named_adapters import attach, load_run
from tunelab.runs.resolve import resolve
from tunelab.tasks.causal_lm import generate_text


def load_generator(target: str, adapters: list[str] | None = None,
                   use: str | None = None) -> tuple[Any, Any]:
    """(model, tokenizer) from a run directory, or from a model name/directory alone; with
    `adapters` ([NAME=]PATH) loaded beside and `use` picking one (named_adapters.py)."""
    path = Path(target)
    if (path / RUN_INFO).is_file():
        model, tokenizer, info = load_run(path, adapters, use)
        if info["task"] != "causal_lm":
            raise ModelError(f"{target}: a {info['task']} run cannot generate text; use predict")
        template = load_run_config(path).data.template
        if template:  # the same template the run trained with
            tokenizer.chat_template = Path(template).expanduser().read_text(encoding="utf-8")
        return model, tokenizer
    base = resolve(target)
    model = load_causal_lm(base)
    attach(model, None, adapters or [], use)
    return model.eval(), load_tokenizer(base)


def render(tokenizer, messages: list[dict[str, str]]) -> str:
    if not getattr(tokenizer, "chat_template", None):
        raise ModelError("this tokenizer has no chat template; train with data.template or use a chat model")
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def generate(target: str, prompt: str | None, file: Path | None, out: Path | None,
             system: str | None, max_new_tokens: int, temperature: float,
             adapters: list[str] | None = None, use: str | None = None) -> list[str]:
    model, tokenizer = load_generator(target, adapters, use)
    if prompt is not None:
        items = [{"prompt": prompt}]
    elif file is not None:
        items = _read_prompts(file)
    else:
        raise DataError("generate: give --prompt TEXT or --file in.jsonl")
    answers = []
    for item in items:
        messages = item.get("messages") or [{"role": "user", "content": item["prompt"]}]
        if system and messages[0]["role"] != "system":
            messages = [{"role": "system", "content": system}, *messages]
        answers.append(generate_text(model, tokenizer, render(tokenizer, messages), max_new_tokens,
                                     torch.device("cpu"), temperature))
    if out is not None:
        out.write_text("".join(json.dumps({**item, "response": a}, ensure_ascii=False) + "\n"
                               for item, a in zip(items, answers)), encoding="utf-8")
        print(f"wrote {len(answers)} responses to {out}")
    else:
        for a in answers:
            print(a)
    return answers


def _read_prompts(file: Path) -> list[dict[str, Any]]:
    if not file.is_file():
        raise DataError(f"{file}: file not found")
    items = []
    for line, item in json_lines(file):
        if not ("prompt" in item or "messages" in item):
            raise DataError(f"{file}:{line}: expected an object with 'prompt' or 'messages'")
        items.append(item)
    return items


def chat(target: str, system: str | None, max_new_tokens: int, temperature: float,
         stdin=sys.stdin, adapters: list[str] | None = None, use: str | None = None) -> None:
    """Interactive multi-turn chat with streamed tokens; /reset clears the history, /exit ends,
    /adapter NAME switches adapters (/adapter base: none)."""
    from transformers import TextStreamer

    model, tokenizer = load_generator(target, adapters, use)
    start = [{"role": "system", "content": system}] if system else []
    history = list(start)
    print("chat: /reset clears the conversation, /adapter NAME switches adapters (base: none), "
          "/exit (or Ctrl-D) ends it", flush=True)
    while True:
        print("> ", end="", flush=True)
        line = stdin.readline()
        if not line or line.strip() == "/exit":
            break
        text = line.strip()
        if not text:
            continue
        if text.split(maxsplit=1)[0] == "/adapter":
            name = text.removeprefix("/adapter").strip()
            try:
                set_adapter(model, None if name == "base" else name)
                print(f"(adapter: {name})", flush=True)
            except AdapterError as exc:
                print(f"({exc}; or base)", flush=True)
            continue
        if text == "/reset":
            history = list(start)
            print("(conversation cleared)", flush=True)
            continue
        history.append({"role": "user", "content": text})
        streamer = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
        reply = generate_text(model, tokenizer, render(tokenizer, history), max_new_tokens,
                              torch.device("cpu"), temperature, streamer=streamer)
        history.append({"role": "assistant", "content": reply})
