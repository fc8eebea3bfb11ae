"""What the HTTP layer and the generation engine say to each other.

The app (app.py) turns an OpenAI request into a `GenRequest` (token ids already rendered
and counted), submits it to the engine and relays the `Event`s it yields; the engine knows
nothing of HTTP, and the app nothing of batching or KV caches.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class ServeError(Exception):
    """A request the server refuses: `status` is the HTTP status, `code` and `param` fill the
    OpenAI error object ({"error": {"message", "type", "param", "code"}})."""

    status = 400
    type = "invalid_request_error"

    def __init__(self, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message, self.param, self.code = message, param, code

    def with_status(self, status: int) -> ServeError:
        """This error with another HTTP status (409 for a conflict, 500 for a failed step)."""
        self.status = status
        if status >= 500:
            self.type = "server_error"
        return self


class UnknownModel(ServeError):
    status = 404
    type = "not_found_error"


class Overloaded(ServeError):
    """Too many requests running or queued: retry later (429)."""

    status = 429
    type = "rate_limit_error"


@dataclass
class GenRequest:
    """One completion request: `n` sequences continuing `prompt_ids` with model `model`
    (the base model's id or an adapter's name)."""

    model: str
    prompt_ids: list[int]
    max_tokens: int = 16
    temperature: float = 1.0  # 0: greedy
    top_p: float = 1.0
    seed: int | None = None  # same seed, same request, same tokens
    stop: list[str] = field(default_factory=list)  # text ends before the first one found
    n: int = 1
    logprobs: int | None = None  # None: off; k >= 0: each token's logprob and its top k


@dataclass
class TokenLogprob:
    token: str
    logprob: float
    top: list[tuple[str, float]] = field(default_factory=list)  # (token, logprob), best first


@dataclass
class Event:
    """New output of choice `index`: `text` is the text added since its last event (held
    back while it could be the start of a stop string or an unfinished UTF-8 character);
    `finish_reason` ("stop", "length") is set on a choice's last event."""

    index: int
    text: str
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: str | None = None
