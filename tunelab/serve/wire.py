"""OpenAI response objects, built from the engine's events: chat.completion and its chunks,
text_completion, usage, logprobs (chat and legacy formats), errors, and the encoder routes'
answers. Plain dicts, so what goes on the wire is visible in one place."""

from __future__ import annotations

import base64
import json
import struct
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from tunelab.serve.protocol import Event, TokenLogprob

DONE = "data: [DONE]\n\n"


def error_body(message: str, type: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def sse(obj: dict[str, Any]) -> str:
    """One server-sent event carrying `obj` as JSON."""
    return f"data: {json.dumps(obj, ensure_ascii=False, separators=(',', ':'))}\n\n"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


@dataclass
class Choice:
    """Everything one choice has said so far (the engine sends it in pieces)."""

    index: int
    text: str = ""
    tokens: int = 0
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: str | None = None

    def add(self, event: Event) -> None:
        self.text += event.text
        self.tokens += len(event.token_ids)
        self.logprobs.extend(event.logprobs)
        self.finish_reason = event.finish_reason or self.finish_reason


def _bytes(token: str) -> list[int]:
    return list(token.encode("utf-8"))


def chat_logprobs(items: list[TokenLogprob]) -> dict[str, Any]:
    """{"content": [{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}]}."""
    return {"content": [{"token": t.token, "logprob": t.logprob, "bytes": _bytes(t.token),
                         "top_logprobs": [{"token": s, "logprob": lp, "bytes": _bytes(s)}
                                          for s, lp in t.top]} for t in items],
            "refusal": None}


def legacy_logprobs(items: list[TokenLogprob], offset: int) -> dict[str, Any]:
    """{tokens, token_logprobs, top_logprobs, text_offset}; `offset` is where the first token
    starts in prompt + completion text."""
    offsets = []
    for t in items:
        offsets.append(offset)
        offset += len(t.token)
    return {"tokens": [t.token for t in items], "token_logprobs": [t.logprob for t in items],
            "top_logprobs": [dict(t.top) for t in items], "text_offset": offsets}


@dataclass
class Reply:
    """What every object of one response shares: id, kind, model and creation time."""

    chat: bool
    model: str
    include_usage: bool = False
    id: str = ""
    created: int = 0

    def __post_init__(self) -> None:
        self.id = self.id or f"{'chatcmpl' if self.chat else 'cmpl'}-{uuid.uuid4().hex}"
        self.created = self.created or int(time.time())

    def _head(self, chunk: bool) -> dict[str, Any]:
        kind = "chat.completion" if self.chat else "text_completion"
        kind += ".chunk" if chunk and self.chat else ""
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}

    def whole(self, choices: list[Choice], prompt_tokens: int, logprobs: bool,
              text_offset: int = 0) -> dict[str, Any]:
        """The non-streamed answer: every choice complete, with usage."""
        out = []
        for c in choices:
            if self.chat:
                out.append({"index": c.index, "message": {"role": "assistant", "content": c.text},
                            "logprobs": chat_logprobs(c.logprobs) if logprobs else None,
                            "finish_reason": c.finish_reason})
            else:
                lp = legacy_logprobs(c.logprobs, text_offset) if logprobs else None
                out.append({"index": c.index, "text": c.text, "finish_reason": c.finish_reason,
                            "logprobs": lp})
        return {**self._head(False), "choices": out,
                "usage": usage(prompt_tokens, sum(c.tokens for c in choices))}

    def chunk(self, index: int, text: str | None, finish_reason: str | None = None,
              logprobs: dict[str, Any] | None = None, role: bool = False) -> dict[str, Any]:
        """One streamed piece of choice `index`: a chat delta or a text fragment."""
        if self.chat:
            delta: dict[str, Any] = {"role": "assistant", "content": ""} if role else {}
            if text is not None and not role:
                delta["content"] = text
            choice = {"index": index, "delta": delta, "logprobs": logprobs,
                      "finish_reason": finish_reason}
        else:
            choice = {"index": index, "text": text or "", "logprobs": logprobs,
                      "finish_reason": finish_reason}
        out = {**self._head(True), "choices": [choice]}
        return {**out, "usage": None} if self.include_usage else out

    def usage_chunk(self, prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
        """The last chunk with stream_options.include_usage: no choices, the request's usage."""
        return {**self._head(True), "choices": [], "usage": usage(prompt_tokens, completion_tokens)}


def model_card(model_id: str, created: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """OpenAI's model object; `extra` (an ONNX export's backend) follows its four keys."""
    return {"id": model_id, "object": "model", "created": created, "owned_by": "tunelab",
            **(extra or {})}


def embeddings(model: str, vectors: list[list[float]], prompt_tokens: int,
               encoding_format: str) -> dict[str, Any]:
    """OpenAI's embedding list; base64 is little-endian float32, as the official client decodes."""
    def encode(v: list[float]) -> list[float] | str:
        if encoding_format == "base64":
            return base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode("ascii")
        return v

    return {"object": "list", "model": model,
            "data": [{"object": "embedding", "index": i, "embedding": encode(v)}
                     for i, v in enumerate(vectors)],
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}}


def classifications(model: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """rows: EncoderModel.classify's {label, score, probs} per text."""
    return {"object": "list", "model": model,
            "data": [{"index": i, **row} for i, row in enumerate(rows)]}


def entities(model: str, rows: list[list[dict[str, Any]]]) -> dict[str, Any]:
    """rows: EncoderModel.ner's entity list ({entity, text, start, end, score}) per text."""
    return {"object": "list", "model": model,
            "data": [{"index": i, "entities": ents} for i, ents in enumerate(rows)]}
