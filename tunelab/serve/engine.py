"""Continuous batching of one causal-LM base and its LoRA adapters.

One scheduler thread owns the model. Between decoding steps it admits waiting requests
(prefilled together, then joined to the running batch), drops sequences that finished or
whose client went away, and applies adapter loads and unloads. Every step is one forward
over all running sequences, whatever adapter each uses (methods/row_lora.py). Requests
that arrive while the batch is empty wait `batch_window_ms` for company.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import torch
from transformers import DynamicCache

from tunelab.errors import AdapterError
from tunelab.methods.row_lora import add_row_adapter, enable_rows, remove_row_adapter
from tunelab.serve.batch_cache import BatchCache
from tunelab.serve.protocol import (
    Event,
    GenRequest,
    Overloaded,
    ServeError,
    UnknownModel,
)
from tunelab.serve.sampling import next_tokens
from tunelab.serve.sequence import Sequence

log = logging.getLogger("tunelab.serve")
_END = object()


class Stream:
    """The events of one request, handed from the scheduler thread to the event loop."""

    def __init__(self, request: GenRequest, adapter: str | None) -> None:
        self.request, self.adapter = request, adapter
        self.prompt_tokens = len(request.prompt_ids)
        self.cancelled = False
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[Any] = asyncio.Queue()

    def push(self, item: Any) -> None:  # scheduler thread
        self._loop.call_soon_threadsafe(self._queue.put_nowait, item)

    def cancel(self) -> None:
        """The client went away: its sequences leave the batch at the next step."""
        self.cancelled = True

    async def __aiter__(self) -> AsyncIterator[Event]:
        while True:
            item = await self._queue.get()
            if item is _END:
                return
            if isinstance(item, Exception):
                raise item
            yield item


class Engine:
    def __init__(self, model: Any, tokenizer: Any, base_id: str, *, max_batch: int = 32,
                 max_queue: int = 256, batch_window_ms: float = 5.0) -> None:
        self.model, self.tokenizer, self.base_id = model.eval(), tokenizer, base_id
        self.rows = enable_rows(model)
        self.max_batch, self.max_queue, self.window = max_batch, max_queue, batch_window_ms / 1e3
        cfg = model.config
        self.context_length = int(getattr(cfg, "max_position_embeddings", None)
                                  or getattr(cfg, "n_positions", 2048))
        self.eos = _eos_ids(model, tokenizer)
        # the prefill needs the last position's logits only, where the model allows it
        params = inspect.signature(model.forward).parameters
        self._last_only = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
        # transformers 5.x names the KV cache argument `cache` (`past_key_values` before)
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None \
            else min(self.eos, default=0)
        self._waiting: deque[Stream] = deque()
        self._active: list[Sequence] = []
        self._streams: dict[int, Stream] = {}  # id(sequence) -> its request's stream
        self._open: dict[int, int] = {}  # id(stream) -> choices not finished
        self._batch = BatchCache()
        self._wake = threading.Condition()
        self._model_lock = threading.Lock()  # a step, or an adapter load, at a time
        self._thread: threading.Thread | None = None
        self._stopped = False

    # ------------------------------------------------------------------ the API
    def model_ids(self) -> list[str]:
        return [self.base_id, *self.rows.names]

    def queue_depth(self) -> int:
        return len(self._waiting)

    def running(self) -> int:
        return len(self._active)

    def add_adapter(self, name: str, path: Path) -> None:
        if name in self.model_ids():
            raise ServeError(f"a model named {name!r} is already served; pick another name",
                             param="name", code="name_taken").with_status(409)
        with self._model_lock:
            add_row_adapter(self.model, name, path)

    def remove_adapter(self, name: str) -> None:
        if name == self.base_id:
            raise ServeError(f"{name!r} is the base model; only adapters can be removed",
                             param="name")
        if name not in self.rows.names:
            raise UnknownModel(f"no adapter named {name!r} is served", param="name",
                               code="model_not_found")
        with self._model_lock:
            with self._wake:
                busy = sum(s.adapter == name for s in self._active) + \
                    sum(st.adapter == name for st in self._waiting)
            if busy:
                raise ServeError(f"adapter {name!r} has {busy} sequence(s) in progress; remove "
                                 "it when they finish", param="name",
                                 code="adapter_busy").with_status(409)
            remove_row_adapter(self.model, name)

    def submit(self, req: GenRequest) -> Stream:
        """Queue `req` (call from the event loop). Refuses an unknown model, a request that
        does not fit the context, and more sequences than the queue holds."""
        if req.model not in self.model_ids():
            raise UnknownModel(f"the model {req.model!r} does not exist; served: "
                               f"{', '.join(self.model_ids())}", param="model",
                               code="model_not_found")
        if not req.prompt_ids:
            raise ServeError("the prompt is empty", param="prompt")
        need = len(req.prompt_ids) + req.max_tokens
        if need > self.context_length:
            raise ServeError(f"This model's maximum context length is {self.context_length} "
                             f"tokens. However, you requested {need} tokens "
                             f"({len(req.prompt_ids)} in the prompt, {req.max_tokens} in the "
                             "completion). Please reduce the prompt or max_tokens.",
                             param="messages", code="context_length_exceeded")
        stream = Stream(req, None if req.model == self.base_id else req.model)
        with self._wake:  # the scheduler thread pops from the queue: count and add under lock
            queued = sum(st.request.n for st in self._waiting)
            if queued + req.n > self.max_queue:
                raise Overloaded(f"{queued} sequences are waiting (the limit is "
                                 f"{self.max_queue}); retry later", code="queue_full")
            self._waiting.append(stream)
            self._wake.notify()
        return stream

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="tunelab-engine", daemon=True)
        self._thread.start()

    def shutdown(self) -> None:
        with self._wake:
            self._stopped = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout=30)

    # ------------------------------------------------------------------ the scheduler
    def _run(self) -> None:
        while True:
            with self._wake:
                while not (self._waiting or self._active or self._stopped):
                    self._wake.wait()
                if self._stopped:
                    return
            if not self._active and self.window > 0:
                time.sleep(self.window)  # an idle server: let a burst gather into one batch
            new: list[Stream] = []
            try:
                with self._model_lock, torch.inference_mode():
                    self._drop_cancelled()
                    new = self._admit()
                    if new:
                        self._prefill(new)
                    elif self._active:
                        self._decode()
            except Exception as exc:  # a bug must not kill the server: fail those requests
                log.exception("generation step failed")
                self._fail_all(exc, new)

    def _admit(self) -> list[Stream]:
        taken: list[Stream] = []
        room = self.max_batch - len(self._active)
        with self._wake:
            while self._waiting and (self._waiting[0].request.n <= room or
                                     (not taken and not self._active)):
                stream = self._waiting.popleft()
                if stream.cancelled:
                    stream.push(_END)
                    continue
                taken.append(stream)
                room -= stream.request.n
        return taken

    def _prefill(self, streams: list[Stream]) -> None:
        """One forward over the new prompts (left-padded), then their first tokens."""
        width = max(len(st.request.prompt_ids) for st in streams)
        ids = torch.full((len(streams), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(streams), width), dtype=torch.long)
        for i, st in enumerate(streams):
            p = st.request.prompt_ids
            ids[i, width - len(p):], mask[i, width - len(p):] = torch.tensor(p), 1
        self.rows.choose([st.adapter for st in streams])
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=_positions(mask),
                         use_cache=True, **{self._cache_arg: DynamicCache()}, **self._last_only)
        fresh = BatchCache()
        fresh.cache, fresh.mask = getattr(out, self._cache_arg), mask
        copies = [i for i, st in enumerate(streams) for _ in range(st.request.n)]
        if copies != list(range(len(streams))):
            fresh.keep(copies)  # n choices share the prompt's cache
        seqs = [Sequence.start(st.request, j, st.adapter)
                for st in streams for j in range(st.request.n)]
        for seq, i in zip(seqs, copies):
            self._streams[id(seq)] = streams[i]
            self._open[id(streams[i])] = streams[i].request.n
        self._batch.join(fresh)
        self._active += seqs
        self._take(out.logits[copies, -1], seqs, first=len(self._active) - len(seqs))

    def _decode(self) -> None:
        """One token for every running sequence."""
        ids = torch.tensor([[s.tokens[-1]] for s in self._active])
        positions = self._batch.mask.sum(1, keepdim=True)  # (B, 1): tokens each row holds
        mask = self._batch.grow()
        self.rows.choose([s.adapter for s in self._active])
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                         use_cache=True, **{self._cache_arg: self._batch.cache})
        self._take(out.logits[:, -1], self._active, first=0)

    def _take(self, logits: torch.Tensor, seqs: list[Sequence], first: int) -> None:
        """Sample seqs' next tokens (logits row i: seqs[i], batch row first + i), send their
        events, and drop finished sequences from the batch."""
        for seq, (token, lp) in zip(seqs, next_tokens(logits, seqs, self.tokenizer)):
            event = seq.add(token, self.eos, self.tokenizer, lp, self.context_length)
            stream = self._streams[id(seq)]
            if event is not None:
                stream.push(event)
            if seq.finish is not None:
                self._close(seq, stream)
        self._keep([i for i, s in enumerate(self._active) if s.finish is None])

    def _close(self, seq: Sequence, stream: Stream) -> None:
        del self._streams[id(seq)]
        self._open[id(stream)] -= 1
        if self._open[id(stream)] == 0:
            del self._open[id(stream)]
            stream.push(_END)

    def _keep(self, rows: list[int]) -> None:
        if len(rows) != len(self._active):
            self._active = [self._active[i] for i in rows]
            self._batch.keep(rows)

    def _drop_cancelled(self) -> None:
        gone = [s for s in self._active if self._streams[id(s)].cancelled]
        for seq in gone:
            seq.finish = "cancelled"
            self._close(seq, self._streams[id(seq)])
        if gone:
            self._keep([i for i, s in enumerate(self._active) if s.finish is None])

    def _fail_all(self, exc: Exception, admitted: list[Stream]) -> None:
        error = ServeError(f"generation failed: {type(exc).__name__}: {exc}",
                           code="engine_error").with_status(500)
        for stream in {id(st): st for st in [*self._streams.values(), *admitted]}.values():
            stream.push(error)
            stream.push(_END)
        self._active, self._streams, self._open, self._batch = [], {}, {}, BatchCache()


def _positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids of a left-padded batch, as transformers' generate computes them."""
    return (mask.cumsum(1) - 1).clamp(min=0)


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    """The tokens that end generation: the generation config's, as `generate` uses, else the
    tokenizer's end-of-sequence token."""
    found = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if found is None:
        found = tokenizer.eos_token_id
    if found is None:
        return set()
    return {int(t) for t in (found if isinstance(found, (list, tuple)) else [found])}


__all__ = ["AdapterError", "Engine", "Stream"]
