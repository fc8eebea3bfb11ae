"""The OpenAI request bodies the server accepts, validated before anything reaches the engine.

Unknown fields are ignored, as OpenAI does; a field OpenAI defines that tunelab cannot honour
(tools, penalties, logit_bias, echo, ...) is refused with a 400 naming it, never silently
dropped. Bodies are parsed with `model_validate_json` in strict mode, so `"0.5"` is not a
temperature and malformed JSON is one validation error like any other.
"""

from __future__ import annotations

import re
from typing import Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from tunelab.serve.protocol import ServeError


class ParamError(ValueError):
    """A check across fields; `param` is the field the OpenAI error object names."""

    def __init__(self, param: str, message: str):
        super().__init__(message)
        self.param = param


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _null_is_absent(cls, data: Any) -> Any:
        """`"n": null` means the default, as OpenAI reads it."""
        return {k: v for k, v in data.items() if v is not None} if isinstance(data, dict) else data


def _refuse_if_set(value: Any, info: ValidationInfo,
                   neutral: tuple = (None, False, 0, "", [], {})) -> Any:
    """A parameter tunelab cannot honour passes only at a value that asks for nothing."""
    if any(value == n and type(value) is type(n) for n in neutral) or value is None:
        return value
    raise ValueError(f"{info.field_name} is not supported by tunelab serve; leave it out")


class StreamOptions(_Body):
    include_usage: bool = False


class Sampling(_Body):
    """What chat and text completions share."""

    model: str = Field(min_length=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    n: int = Field(1, ge=1, le=16)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=-(2**63), lt=2**63)  # OpenAI's seeds are int64
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None  # an end-user id for the caller's own records; nothing to honour
    # OpenAI parameters tunelab cannot honour: refused unless left at their neutral value
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    service_tier: Any = None
    store: bool | None = None

    @field_validator("frequency_penalty", "presence_penalty", "logit_bias", "service_tier", "store")
    @classmethod
    def _unsupported(cls, value: Any, info: ValidationInfo) -> Any:
        return _refuse_if_set(value, info, (0.0, 0, {}, False, "auto", "default"))

    @field_validator("stop")
    @classmethod
    def _stop_strings(cls, value: str | list[str] | None) -> str | list[str] | None:
        strings = [value] if isinstance(value, str) else value or []
        if len(strings) > 4:
            raise ValueError(f"at most 4 stop strings (got {len(strings)})")
        if any(not s for s in strings):
            raise ValueError("stop strings must not be empty")
        return value

    @model_validator(mode="after")
    def _stream_options_need_stream(self) -> Sampling:
        if self.stream_options is not None and not self.stream:
            raise ParamError("stream_options", "stream_options is only allowed with stream: true")
        return self

    def stop_list(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class Message(_Body):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[dict[str, Any]]
    name: str | None = None
    tool_calls: Any = None
    function_call: Any = None

    @field_validator("content")
    @classmethod
    def _text_parts(cls, value: str | list[dict[str, Any]]) -> str:
        """Text parts joined by newlines; images, audio and files are refused."""
        if isinstance(value, str):
            return value
        kinds = [part.get("type") for part in value]
        if any(k != "text" or not isinstance(p.get("text"), str) for k, p in zip(kinds, value)):
            raise ValueError(f"only text content parts ({{\"type\": \"text\", \"text\": ...}}) "
                             f"are supported (got types {kinds})")
        return "\n".join(part["text"] for part in value)

    @field_validator("tool_calls", "function_call")
    @classmethod
    def _no_tools(cls, value: Any, info: ValidationInfo) -> Any:
        return _refuse_if_set(value, info)

    def as_template_dict(self) -> dict[str, str]:
        """The message as the chat template sees it."""
        out = {"role": self.role, "content": str(self.content)}
        if self.name is not None:
            out["name"] = self.name
        return out


class ChatRequest(Sampling):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    tools: Any = None
    tool_choice: Any = None
    functions: Any = None
    function_call: Any = None
    parallel_tool_calls: Any = None
    response_format: Any = None
    modalities: Any = None
    audio: Any = None
    prediction: Any = None
    reasoning_effort: Any = None
    web_search_options: Any = None

    @field_validator("tools", "tool_choice", "functions", "function_call", "parallel_tool_calls",
                     "audio", "prediction", "reasoning_effort", "web_search_options")
    @classmethod
    def _unsupported_chat(cls, value: Any, info: ValidationInfo) -> Any:
        return _refuse_if_set(value, info, (None, [], "none", True))

    @field_validator("response_format")
    @classmethod
    def _text_only(cls, value: Any) -> Any:
        if value is not None and value != {"type": "text"}:
            raise ValueError("only {\"type\": \"text\"} is supported (no JSON mode or schemas)")
        return value

    @field_validator("modalities")
    @classmethod
    def _text_modality(cls, value: Any) -> Any:
        if value is not None and value != ["text"]:
            raise ValueError("only [\"text\"] is supported")
        return value

    @model_validator(mode="after")
    def _one_limit(self) -> ChatRequest:
        if self.max_tokens is not None and self.max_completion_tokens is not None \
                and self.max_tokens != self.max_completion_tokens:
            raise ParamError("max_completion_tokens",
                             "max_tokens and max_completion_tokens differ; give one of them")
        if self.top_logprobs is not None and not self.logprobs:
            raise ParamError("top_logprobs", "top_logprobs needs logprobs: true")
        return self

    def token_limit(self) -> int | None:
        given = self.max_completion_tokens
        return given if given is not None else self.max_tokens

    def logprobs_k(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None


class CompletionRequest(Sampling):
    prompt: str | list[str] | list[int] | list[list[int]]
    logprobs: int | None = Field(None, ge=0, le=20)
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = Field(None, ge=1)

    @field_validator("echo", "suffix")
    @classmethod
    def _unsupported_completion(cls, value: Any, info: ValidationInfo) -> Any:
        return _refuse_if_set(value, info)

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, value: Any) -> Any:
        if isinstance(value, list) and value and isinstance(value[0], (str, list)):
            if len(value) != 1:
                raise ValueError(f"send one prompt per request (got {len(value)}); "
                                 "use n for several completions of one prompt")
            return value[0]
        if isinstance(value, list) and not value:
            raise ValueError("the prompt is empty")
        return value

    @model_validator(mode="after")
    def _best_of_is_n(self) -> CompletionRequest:
        if self.best_of is not None and self.best_of != self.n:
            raise ParamError("best_of", "best_of (ranking several samples) is not supported; "
                             "leave it out")
        return self


class EncoderRequest(_Body):
    """/v1/embeddings, /v1/classify and /v1/ner: one text or a batch of texts."""

    model: str = Field(min_length=1)
    input: str | list[str]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None

    @field_validator("input")
    @classmethod
    def _texts(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and not value:
            raise ValueError("give at least one text")
        return value

    @field_validator("dimensions")
    @classmethod
    def _no_dimensions(cls, value: Any, info: ValidationInfo) -> Any:
        return _refuse_if_set(value, info)

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


class AdapterRequest(_Body):
    """POST /v1/adapters: load the PEFT LoRA adapter (or run) at `path` as model `name`."""

    name: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$")
    path: str = Field(min_length=1)
    base: str | None = None


Body = TypeVar("Body", bound=BaseModel)


def parse(model: type[Body], raw: bytes) -> Body:
    """The request body as `model`, or a 400 naming the first parameter at fault."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        message, param = validation_message(exc)
        raise ServeError(message, param=param) from None


_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict"}


def _dotted(loc: tuple) -> str | None:
    """("messages", 0, "content", "str") -> "messages[0].content" (union member tags dropped)."""
    names = [f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc
             if isinstance(p, int) or (re.fullmatch(r"[a-z_][a-z0-9_]*", p)
                                       and p not in _TYPE_TAGS)]
    return "".join(names).lstrip(".") or None


def validation_message(exc: ValidationError) -> tuple[str, str | None]:
    """(message, param) for the first error of `exc`: the OpenAI error object names one
    parameter, as `messages[0].role`."""
    err = exc.errors()[0]
    if err["type"] == "json_invalid":
        return f"the body is not valid JSON ({err['msg'].removeprefix('Invalid JSON: ')})", None
    cause = (err.get("ctx") or {}).get("error")
    param = getattr(cause, "param", None) or _dotted(err["loc"])
    msg = str(cause) if cause is not None else err["msg"]
    if err["type"] == "model_type" and not err["loc"]:
        return "the body must be a JSON object", None
    if err["type"] == "missing":
        return f"{param} is required", param
    scalar = not isinstance(err["input"], (dict, list))
    got = f" (got {err['input']!r})" if cause is None and scalar else ""
    return f"{param}: {msg}{got}" if param and not msg.startswith(param) else msg + got, param
