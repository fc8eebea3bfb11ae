"""The work routes: chat and text completions (whole or streamed as server-sent events) and
the encoder routes (embeddings, classify, ner). Each turns an OpenAI body into an engine or
encoder call and the answer back into OpenAI objects (wire.py); nothing here batches."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, AsyncIterator

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from tunelab.errors import TunelabError
from tunelab.serve import wire
from tunelab.serve.protocol import Event, GenRequest, ServeError, UnknownModel
from tunelab.serve.schemas import ChatRequest, CompletionRequest, EncoderRequest, parse

if TYPE_CHECKING:
    from tunelab.serve.engine import Engine, Stream
    from tunelab.serve.metrics import Metrics
    from tunelab.serve.targets import Served

log = logging.getLogger("tunelab.serve")
router = APIRouter()

ROUTE_OF_TASK = {"classification": "/v1/classify", "token_classification": "/v1/ner",
                 "embedding": "/v1/embeddings"}
GENERATE_ROUTES = "/v1/chat/completions or /v1/completions"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def unknown_model(served: Served, model: str) -> UnknownModel:
    known = ", ".join([*served.engines, *served.encoders])
    return UnknownModel(f"model {model!r} is not served here (GET /v1/models lists: {known})",
                        param="model", code="model_not_found")


def engine_for(served: Served, model: str) -> Engine:
    if model in served.engines:
        return served.engines[model]
    if model in served.encoders:
        encoder = served.encoders[model]
        route = ROUTE_OF_TASK.get(encoder.task, "the encoder routes")
        raise ServeError(f"{model!r} is {encoder.kind()}, it does not generate text; use POST "
                         f"{route}", param="model", code="wrong_route")
    raise unknown_model(served, model)


def chat_prompt(engine: Engine, body: ChatRequest) -> list[int]:
    """The messages through the model's chat template, tokenized as `tunelab generate` does."""
    tokenizer = engine.tokenizer
    if not getattr(tokenizer, "chat_template", None):
        raise ServeError(f"model {body.model!r} has no chat template; send a raw prompt to POST "
                         "/v1/completions, or train with data.template", param="messages",
                         code="no_chat_template")
    try:
        text = tokenizer.apply_chat_template([m.as_template_dict() for m in body.messages],
                                             tokenize=False, add_generation_prompt=True)
    except Exception as exc:  # the template refuses (roles out of order, a raise_exception call)
        raise ServeError(f"the chat template of {body.model!r} refused these messages: {exc}",
                         param="messages") from None
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def completion_prompt(engine: Engine, prompt: str | list[int]) -> tuple[list[int], str]:
    """(token ids, text) of a raw prompt: text gets the tokenizer's own special tokens, as
    generate_text(special_tokens=True) does; token ids are taken as they are."""
    tokenizer = engine.tokenizer
    if isinstance(prompt, str):
        return tokenizer(prompt, add_special_tokens=True)["input_ids"], prompt
    vocab = len(tokenizer)
    if bad := [t for t in prompt if not 0 <= t < vocab]:
        raise ServeError(f"prompt token ids must be in [0, {vocab}) (got {bad[:5]})",
                         param="prompt")
    return list(prompt), tokenizer.decode(prompt)


@router.post("/v1/chat/completions")
async def chat_completions(request: Request) -> Response:
    body = parse(ChatRequest, await request.body())
    engine = engine_for(request.app.state.served, body.model)
    ids = chat_prompt(engine, body)
    # OpenAI's default: up to the end of the context
    limit = body.token_limit() or max(1, engine.context_length - len(ids))
    gen = GenRequest(body.model, ids, limit, body.temperature, body.top_p, body.seed,
                     body.stop_list(), body.n, body.logprobs_k())
    return await answer(request, engine, gen, wire.Reply(True, body.model, body.include_usage()),
                        body.stream)


@router.post("/v1/completions")
async def completions(request: Request) -> Response:
    body = parse(CompletionRequest, await request.body())
    engine = engine_for(request.app.state.served, body.model)
    ids, text = completion_prompt(engine, body.prompt)  # type: ignore[arg-type]  # one prompt
    if not ids:
        raise ServeError("the prompt is empty (no tokens); send some text", param="prompt")
    limit = body.max_tokens or 16  # OpenAI's default for text completions
    gen = GenRequest(body.model, ids, limit, body.temperature, body.top_p, body.seed,
                     body.stop_list(), body.n, body.logprobs)
    try:
        return await answer(request, engine, gen,
                            wire.Reply(False, body.model, body.include_usage()), body.stream,
                            len(text))
    except ServeError as exc:  # the engine names chat's field for a prompt that does not fit
        exc.param = "prompt" if exc.param == "messages" else exc.param
        raise


async def answer(request: Request, engine: Engine, gen: GenRequest, reply: wire.Reply,
                 stream: bool, text_offset: int = 0) -> Response:
    """Submit `gen` (refusals raise here, before any byte is sent) and relay its events."""
    started = time.perf_counter()
    handle = engine.submit(gen)
    track = Tracker(request.app.state.metrics, gen.model, started, handle.prompt_tokens)
    if stream:
        return EventStream(stream_events(request, handle, gen, reply, track, text_offset),
                           media_type="text/event-stream", headers=SSE_HEADERS)
    choices = [wire.Choice(i) for i in range(gen.n)]
    try:
        async for event in handle:
            track.event(event.token_ids)
            choices[event.index].add(event)
            if await request.is_disconnected():
                return Response(status_code=499)  # nobody will read it; the slots are freed below
    finally:
        handle.cancel()
        track.done()
    logprobs = gen.logprobs is not None
    return JSONResponse(reply.whole(choices, handle.prompt_tokens, logprobs, text_offset))


class EventStream(StreamingResponse):
    """Server-sent events that always close their generator, so its `finally` cancels the
    engine request at once when the client leaves (Starlette stops iterating without
    closing, which would leave the slot taken until garbage collection)."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.body_iterator.aclose()  # type: ignore[union-attr]


class Tracker:
    """Time to first token and token counts of one request, into the app's metrics."""

    def __init__(self, metrics: Metrics, model: str, started: float, prompt_tokens: int) -> None:
        self.metrics, self.model, self.started = metrics, model, started
        self.prompt_tokens, self.completion_tokens = prompt_tokens, 0

    def event(self, token_ids: list[int]) -> None:
        if token_ids and not self.completion_tokens:
            self.metrics.ttft.labels(self.model).observe(time.perf_counter() - self.started)
        self.completion_tokens += len(token_ids)

    def done(self) -> None:
        self.metrics.tokens(self.model, self.prompt_tokens, self.completion_tokens)


async def stream_events(request: Request, handle: Stream, gen: GenRequest, reply: wire.Reply,
                        track: Tracker, text_offset: int) -> AsyncIterator[str]:
    """Server-sent events: a role chunk per chat choice, deltas, a finish chunk per choice,
    the usage chunk if asked, then [DONE]. A client that leaves cancels the request."""
    offsets = [text_offset] * gen.n
    try:
        if reply.chat:
            for i in range(gen.n):
                yield wire.sse(reply.chunk(i, "", role=True))
        async for event in handle:
            track.event(event.token_ids)
            for chunk in event_chunks(reply, event, gen.logprobs is not None, offsets):
                yield wire.sse(chunk)
            if await request.is_disconnected():
                return
        if reply.include_usage:
            yield wire.sse(reply.usage_chunk(handle.prompt_tokens, track.completion_tokens))
        yield wire.DONE
    except Exception as exc:  # headers are gone: the error travels as an event, as OpenAI's does
        log.exception("generation failed mid-stream for model %s", gen.model)
        status = exc if isinstance(exc, ServeError) else None
        yield wire.sse(wire.error_body(status.message if status else "internal server error; the "
                                       "server log has the traceback",
                                       status.type if status else "server_error"))
    finally:
        handle.cancel()
        track.done()


def event_chunks(reply: wire.Reply, event: Event, logprobs: bool,
                 offsets: list[int]) -> list[dict[str, Any]]:
    """The chunks of one engine event: chat sends text then a separate finish chunk;
    text completions carry both in one, with legacy logprobs offset into the text."""
    i, chunks = event.index, []
    if reply.chat:
        if event.text or event.logprobs:
            lp = wire.chat_logprobs(event.logprobs) if logprobs else None
            chunks.append(reply.chunk(i, event.text, logprobs=lp))
        if event.finish_reason:
            chunks.append(reply.chunk(i, None, event.finish_reason))
        return chunks
    lp = wire.legacy_logprobs(event.logprobs, offsets[i]) if logprobs else None
    offsets[i] += sum(len(t.token) for t in event.logprobs)
    if event.text or event.logprobs or event.finish_reason:
        chunks.append(reply.chunk(i, event.text, event.finish_reason, lp))
    return chunks


def encoder_for(served: Served, model: str, task: str | None) -> Any:
    """The encoder `model`, if it answers `task` (None: embeddings, which every encoder gives)."""
    if model in served.encoders:
        encoder = served.encoders[model]
        if task is not None and encoder.task != task:
            raise ServeError(f"{model!r} is {encoder.kind()}; use POST "
                             f"{ROUTE_OF_TASK[encoder.task]}", param="model", code="wrong_route")
        if task is None and not encoder.embeds:  # an ONNX export's graph gives logits only
            raise ServeError(f"{model!r} is {encoder.kind()}; its graph outputs only logits, "
                             f"so it cannot embed; use POST {ROUTE_OF_TASK[encoder.task]}, or "
                             "serve the run directory for /v1/embeddings", param="model",
                             code="wrong_route")
        return encoder
    if model in served.engines:
        raise ServeError(f"{model!r} is a generative model; use POST {GENERATE_ROUTES}",
                         param="model", code="wrong_route")
    raise unknown_model(served, model)


async def run_encoder(request: Request, task: str | None,
                      method: str) -> tuple[EncoderRequest, Any]:
    """Validate, find the encoder, and run one batched call in a worker thread (one at a time:
    torch already uses every core)."""
    body = parse(EncoderRequest, await request.body())
    encoder = encoder_for(request.app.state.served, body.model, task)
    if task is not None and "encoding_format" in body.model_fields_set:
        raise ServeError("encoding_format applies to /v1/embeddings only; leave it out",
                         param="encoding_format")
    try:
        result = await anyio.to_thread.run_sync(getattr(encoder, method), body.texts(),
                                                limiter=request.app.state.encoder_limiter)
    except TunelabError as exc:  # an empty text, a text pair without its tab, ...
        raise ServeError(str(exc), param="input") from None
    return body, result


@router.post("/v1/embeddings")
async def embeddings(request: Request) -> dict[str, Any]:
    body, (vectors, tokens) = await run_encoder(request, None, "embed")
    request.app.state.metrics.tokens(body.model, tokens, 0)
    return wire.embeddings(body.model, vectors, tokens, body.encoding_format)


@router.post("/v1/classify")
async def classify(request: Request) -> dict[str, Any]:
    body, rows = await run_encoder(request, "classification", "classify")
    return wire.classifications(body.model, rows)


@router.post("/v1/ner")
async def ner(request: Request) -> dict[str, Any]:
    body, rows = await run_encoder(request, "token_classification", "ner")
    return wire.entities(body.model, rows)
