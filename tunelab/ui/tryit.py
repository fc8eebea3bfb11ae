"""The "Try it" tab: a finished run answers text. Encoder runs classify (labels with
probabilities) or tag (entities with character spans), the same code as `tunelab predict`;
causal LM runs chat, streamed token by token, switching between the adapters of runs on the
same base. Loaded models are kept (two at most), one request at a time per model."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from tunelab.errors import DataError, ModelError, TunelabError
from tunelab.runs.layout import ADAPTER_DIR, read_run_info
from tunelab.ui.runs import Runs

KEEP = 2
BASE = "base"


class Models:
    def __init__(self, runs: Runs, generator: Callable[..., tuple[Any, Any]] | None):
        self.runs, self.generator = runs, generator
        self.loaded: OrderedDict[str, tuple[Any, Any, dict[str, Any]]] = OrderedDict()
        self.lock = threading.Lock()  # one model in use at a time: CPU inference is serial

    def _finished(self, name: str) -> dict[str, Any]:
        status = self.runs.status(name)
        if status != "finished":
            raise ModelError(f"run {name!r} is {status}; try it once it has finished")
        return read_run_info(self.runs.dir(name))

    def _get(self, name: str, use: str, load: Callable[[], tuple[Any, Any]]
             ) -> tuple[Any, Any, dict]:
        """Run `name`'s model loaded for `use` (encoder, chat), kept for the next request."""
        key = f"{name}#{use}"
        if key not in self.loaded:
            model, tokenizer = load()
            self.loaded[key] = (model, tokenizer, read_run_info(self.runs.dir(name)))
            while len(self.loaded) > KEEP:
                self.loaded.popitem(last=False)
        self.loaded.move_to_end(key)
        return self.loaded[key]

    def predict(self, name: str, text: str, explain: bool,
                explainer: Callable[[Path, str], list[dict[str, Any]]] | None) -> dict[str, Any]:
        """Labels with probabilities (classification) or entities (token classification)."""
        from tunelab.runs.trained import load_trained
        from tunelab.tasks.inference import classify, extract_entities

        info = self._finished(name)
        if info["task"] not in ("classification", "token_classification"):
            raise ModelError(f"run {name!r} is a {info['task']} run; classify and tag take "
                             "classification and token_classification runs (chat: causal_lm)")
        if not text.strip():
            raise DataError("give some text to classify or tag")
        with self.lock:
            model, tokenizer, info = self._get(
                name, "encoder", lambda: load_trained(self.runs.dir(name))[:2])
            if info["task"] == "classification":
                label, p, probs = classify(model, tokenizer, info, [text])[0]
                out: dict[str, Any] = {
                    "task": "classification", "label": label, "probability": p,
                    "probabilities": sorted(({"label": k, "probability": v}
                                             for k, v in probs.items()),
                                            key=lambda d: -d["probability"])}
            else:
                found = extract_entities(model, tokenizer, info, [text])
                out = {"task": "token_classification", "text": text, "entities": [
                    {"type": e.type, "text": e.text, "start": e.start, "end": e.end,
                     "score": s} for e, s in zip(found.entities[0], found.scores[0])]}
        if explain:
            if explainer is None:
                raise TunelabError("explanations are not available in this app")
            out["explanations"] = explainer(self.runs.dir(name), text)
        return out

    def adapters(self, name: str) -> list[str]:
        """The run's own adapter, those of other finished causal LM runs on its base, and
        "base" (no adapter); a full fine-tuning run has none to switch."""
        info = self._finished(name)
        if info["task"] != "causal_lm" or info["artifact"] != ADAPTER_DIR:
            return []
        same = [n for n in self.runs.names() if n != name and self._same_base(n, info)]
        return [name, *same, BASE]

    def _same_base(self, other: str, info: dict[str, Any]) -> bool:
        try:
            theirs = read_run_info(self.runs.dir(other))
        except TunelabError:
            return False
        return (self.runs.status(other) == "finished" and theirs["task"] == "causal_lm"
                and theirs["artifact"] == ADAPTER_DIR
                and theirs["base_model"] == info["base_model"])

    def chat(self, name: str, messages: list[dict[str, str]], adapter: str | None,
             max_new_tokens: int) -> Iterator[str]:
        """The assistant's reply to `messages`, piece by piece as it is generated."""
        from transformers import TextIteratorStreamer

        from tunelab.methods.multi_adapter import set_adapter
        from tunelab.tasks.causal_lm import generate_text

        info = self._finished(name)
        if info["task"] != "causal_lm":
            raise ModelError(f"run {name!r} is a {info['task']} run; chat takes causal_lm runs")
        if self.generator is None:
            raise TunelabError("chat is not available in this app")
        if not messages or not all(isinstance(m, dict) and {"role", "content"} <= set(m)
                                   for m in messages):
            raise DataError("chat: give messages as [{role, content}, ...]")
        names = self.adapters(name)
        if adapter is not None and adapter not in names:
            raise ModelError(f"adapter {adapter!r}: choose one of {', '.join(names) or 'none'}")
        extra = [f"{n}={self.runs.dir(n)}" for n in names[1:-1]]
        self.lock.acquire()
        try:
            model, tokenizer, _ = self._get(name, "chat", lambda: self.generator(
                str(self.runs.dir(name)), extra, name if names else None))
            if names:
                set_adapter(model, None if (adapter or name) == BASE else (adapter or name))
            if not getattr(tokenizer, "chat_template", None):
                raise ModelError("this run's tokenizer has no chat template; train with "
                                 "data.template")
            prompt = tokenizer.apply_chat_template(messages, tokenize=False,
                                                   add_generation_prompt=True)
        except BaseException:
            self.lock.release()
            raise
        streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True,
                                        timeout=300)

        def run() -> None:
            try:
                generate_text(model, tokenizer, prompt, max_new_tokens, torch.device("cpu"),
                              streamer=streamer)
            except Exception:  # the page sees the reply end; the log has the cause
                streamer.end()
                raise
            finally:
                self.lock.release()

        threading.Thread(target=run, daemon=True).start()
        return iter(streamer)
