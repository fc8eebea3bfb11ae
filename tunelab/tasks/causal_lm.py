"""Causal LM fine-tuning (instruction / chat SFT, continued pretraining): batching, loss, scoring.

The loss is summed cross-entropy over supervised tokens only, and the vocabulary projection
runs only at positions whose next token trains: prompt tokens never pay for the (large)
output layer.
"""

from __future__ import annotations

import json
import math
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from tunelab.data.batching import plan_batches
from tunelab.data.render import IGNORE, LMEncoded, Renderer
from tunelab.data.sft import Conversation
from tunelab.kernels.chunked_ce import chunked_linear_cross_entropy
from tunelab.kernels.varlen_attention import (
    block_mask,
    cu_seq_lens,
    runs_varlen,
    use_varlen_attention,
    varlen_blocker,
    varlen_inputs,
)
from tunelab.tasks.base import Task


def pad_batch(data: LMEncoded, index: list[int], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded (B, T) input_ids, attention_mask and labels."""
    width = max(len(data.input_ids[i]) for i in index)
    ids = torch.full((len(index), width), pad_id, dtype=torch.long)
    labels = torch.full((len(index), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(index), width), dtype=torch.long)
    for row, i in enumerate(index):
        n = len(data.input_ids[i])
        ids[row, :n] = torch.tensor(data.input_ids[i])
        labels[row, :n] = torch.tensor(data.labels[i])
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def pack_batch(data: LMEncoded, index: list[int]) -> dict[str, torch.Tensor]:
    """All examples in one row (1, T): position ids restart per example, and cu_seq_lens
    (N + 1,) marks where each example starts, so attention stays inside each example
    (per example, tunelab.kernels.varlen_attention; or a dense mask built from it). Labels at
    example starts are IGNORE, so no example is trained to predict its first token from the
    one before."""
    ids, labels, pos = [], [], []
    for i in index:
        n = len(data.input_ids[i])
        ids += data.input_ids[i]
        labels += [IGNORE] + data.labels[i][1:]
        pos += range(n)
    return {"input_ids": torch.tensor([ids]), "labels": torch.tensor([labels]),
            "position_ids": torch.tensor([pos]),
            "cu_seq_lens": cu_seq_lens([len(data.input_ids[i]) for i in index])}


def packed_inputs(model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The attention keywords of a packed batch: the example boundaries where `model` reads
    them (tunelab.kernels.varlen_attention), else the dense block-diagonal causal mask."""
    rows, width = batch["input_ids"].shape
    if runs_varlen(model):
        return varlen_inputs(batch["cu_seq_lens"], rows, width)
    return {"attention_mask": additive_mask(block_mask(batch["cu_seq_lens"], rows, width, True),
                                            model)}


def additive_mask(allowed: torch.Tensor, model: nn.Module) -> torch.Tensor:
    """A boolean (1, 1, T, T) mask as the additive float mask attention kernels take, in the
    dtype the attention runs in (the autocast dtype when autocast is on)."""
    kind = allowed.device.type
    dtype = torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) \
        else next(model.parameters()).dtype
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(
        ~allowed, torch.finfo(dtype).min)


@torch.no_grad()
def token_loss(task: Any, model: nn.Module, data: Any, collate: Callable[[list[int]], dict],
               batch_size: int, device: torch.device, autocast: torch.autocast | None
               ) -> dict[str, float]:
    """Held-out loss per trained token (task.loss_sum / task.units) and its perplexity."""
    was_training = model.training
    model.eval()
    total, n = 0.0, 0
    for index in plan_batches(data.lengths(), batch_size, seed=0, epoch=0, bucket=True):
        batch = {k: v.to(device) for k, v in collate(index).items()}
        with autocast or nullcontext():
            total += task.loss_sum(model, batch).item()
        n += task.units(data, index)
    model.train(was_training)
    loss = total / max(n, 1)
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "tokens": n}


class CausalLMTask(Task):
    name = "causal_lm"
    default_metric = "loss"

    def __init__(self, tokenizer, renderer: Renderer, packing: bool, samples: int = 0,
                 sample_tokens: int = 64, loss_chunk: int | None = None):
        self.tok, self.renderer, self.packing = tokenizer, renderer, packing
        self.loss_chunk = loss_chunk  # tokens per output-layer chunk; None: all at once
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.samples, self.sample_tokens = samples, sample_tokens

    def collate(self, data: LMEncoded, index: list[int]) -> dict[str, torch.Tensor]:
        return pack_batch(data, index) if self.packing else pad_batch(data, index, self.pad_id)

    def choose_batches(self, model: nn.Module, cfg: Any, log: Callable[[str], None]) -> None:
        """Packed rows: attention per example where the model allows it, else (logged, with
        the reason) a dense T x T block mask per batch."""
        if not self.packing:
            return
        why = varlen_blocker(model)
        if why is None:
            impl = use_varlen_attention(model)
            log(f"attention: packed rows attend per example ({impl}: each example's own "
                "slice of the row, no T x T mask)")
        else:
            log(f"attention: packed rows use a dense T x T block mask (fallback: {why})")

    @staticmethod
    def units(data: LMEncoded, index: list[int]) -> float:
        """The supervised tokens these examples hold on average: a step's loss sum is divided
        by it, so every supervised token weighs the same across the epoch however batches are
        bucketed by length (see TokenClassificationTask.units); over a whole split it is the
        exact token count, so held-out loss is the per-token mean."""
        return len(index) * data.mean_trained

    def loss_sum(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        inputs = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "position_ids")}
        if "cu_seq_lens" in batch:  # packed
            inputs.update(packed_inputs(model, batch))
        hidden = model.base_model(**inputs).last_hidden_state  # (B, T, H)
        targets = batch["labels"][:, 1:]  # (B, T-1): token t+1 is predicted at t
        keep = targets != IGNORE
        head = model.get_output_embeddings()
        if self.loss_chunk:
            return chunked_linear_cross_entropy(hidden[:, :-1][keep], head, targets[keep],
                                                self.loss_chunk)
        logits = head(hidden[:, :-1][keep])  # (N, V), N supervised
        return F.cross_entropy(logits.float(), targets[keep], reduction="sum")

    def evaluate(self, model: nn.Module, data: LMEncoded, batch_size: int, device: torch.device,
                 autocast: torch.autocast | None = None) -> dict[str, float]:
        return token_loss(self, model, data, lambda index: pad_batch(data, index, self.pad_id),
                          batch_size, device, autocast)

    @torch.no_grad()
    def write_samples(self, model: nn.Module, data: LMEncoded, step: int, run_dir: Path,
                      device: torch.device, write: bool = True) -> Path | None:
        """Greedy generations for the first few held-out prompts, saved per evaluation
        (write=False: generate only, as FSDP ranks other than 0 must)."""
        if not self.samples:
            return None
        was_training = model.training
        model.eval()
        out = run_dir / "samples" / f"step-{step:07d}.jsonl"
        rows = []
        for record in data.records[: self.samples]:
            prompt = self.renderer.prompt_text(record)
            raw = not isinstance(record, Conversation)  # raw prompts were tokenised with BOS etc.
            rows.append({"prompt": prompt, "response": generate_text(
                model, self.tok, prompt, self.sample_tokens, device, special_tokens=raw)})
        if write:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                           encoding="utf-8")
        model.train(was_training)
        return out


def generate_text(model: nn.Module, tokenizer, prompt: str, max_new_tokens: int,
                  device: torch.device, temperature: float = 0.0, streamer=None,
                  special_tokens: bool = False) -> str:
    """Continue `prompt` (a rendered chat prompt, or raw text with special_tokens=True);
    greedy unless temperature > 0."""
    enc = tokenizer(prompt, return_tensors="pt", add_special_tokens=special_tokens).to(device)
    sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
    ids = model.generate(**enc, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id
                         or tokenizer.eos_token_id, streamer=streamer, **sampling)
    return tokenizer.decode(ids[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
