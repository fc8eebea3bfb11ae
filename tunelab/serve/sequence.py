"""One sequence being generated: its tokens, its sampler's random state, and the text it
has sent so far.

Text goes out as soon as it is final: a token that ends in half a UTF-8 character, or text
that could still become a stop string, is held back until the next tokens decide it. The
joined events are exactly `tokenizer.decode(tokens, skip_special_tokens=True)` cut before
the first stop string, which is what `tunelab generate` prints for the same tokens.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch

from tunelab.serve.protocol import Event, GenRequest, TokenLogprob


@dataclass
class Sequence:
    request: GenRequest
    index: int  # which of the request's n choices
    adapter: str | None  # None: the base model
    generator: torch.Generator
    tokens: list[int] = field(default_factory=list)
    sent: int = 0  # characters of the decoded text already sent
    finish: str | None = None
    pending_ids: list[int] = field(default_factory=list)  # tokens not yet reported
    pending_logprobs: list[TokenLogprob] = field(default_factory=list)

    @classmethod
    def start(cls, request: GenRequest, index: int, adapter: str | None) -> Sequence:
        """Choice `index` of `request`; with a seed, the same request draws the same tokens."""
        g = torch.Generator()
        seed = request.seed if request.seed is not None else int.from_bytes(os.urandom(7), "big")
        g.manual_seed((seed * 1_000_003 + index) % 2**63)  # choices of one request differ
        return cls(request, index, adapter, g)

    @property
    def length(self) -> int:
        """Tokens in the KV cache after this sequence's next forward: prompt + generated."""
        return len(self.request.prompt_ids) + len(self.tokens)

    def add(self, token: int, eos: set[int], tokenizer: Any, logprob: TokenLogprob | None,
            limit: int) -> Event | None:
        """Take the sampled `token`; returns the event to send (None: nothing new yet).
        `limit`: the most tokens this sequence may still hold (context length)."""
        self.pending_ids.append(token)
        if logprob is not None:
            self.pending_logprobs.append(logprob)
        if token in eos:
            self.finish = "stop"
            return self._event(self._text(tokenizer), final=True)
        self.tokens.append(token)
        text = self._text(tokenizer)
        cut = _first_stop(text, self.request.stop, max(0, self.sent - _longest(self.request.stop)))
        if cut is not None:
            self.finish = "stop"
            return self._event(text[:cut], final=True)
        if len(self.tokens) >= self.request.max_tokens or self.length >= limit:
            self.finish = "length"
            return self._event(text, final=True)
        safe = len(text) - _held_back(text, self.request.stop)
        if text.endswith("\ufffd"):  # half a character: wait for the rest
            safe = min(safe, len(text) - 1)
        return self._event(text[:safe], final=False)

    def _text(self, tokenizer: Any) -> str:
        return tokenizer.decode(self.tokens, skip_special_tokens=True)

    def _event(self, text: str, final: bool) -> Event | None:
        new = text[self.sent:] if len(text) > self.sent else ""
        if not new and not final:
            return None
        self.sent = max(self.sent, len(text))
        ev = Event(self.index, new, self.pending_ids, self.pending_logprobs,
                   self.finish if final else None)
        self.pending_ids, self.pending_logprobs = [], []
        return ev


def _longest(stops: list[str]) -> int:
    return max((len(s) for s in stops), default=0)


def _first_stop(text: str, stops: list[str], start: int) -> int | None:
    """Where the first stop string begins in text[start:] (as an index into text), or None."""
    found = [i for i in (text.find(s, start) for s in stops if s) if i >= 0]
    return min(found) if found else None


def _held_back(text: str, stops: list[str]) -> int:
    """How many characters at the end of `text` could begin a stop string."""
    best = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:k]):
                best = k
                break
    return best
