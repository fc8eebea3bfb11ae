"""Knowledge distillation as a task: the student's task, with a teacher's softened outputs
mixed into the loss (distill: in the config; the teacher is built in recipes/distill.py).

Everything but the loss (batches, units, evaluation, prediction) is the wrapped task's, so a
distilled run is scored, saved and reloaded exactly like any other run of its task."""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from tunelab.data.subwords import IGNORE
from tunelab.kernels.first_token import packing_blocker
from tunelab.kernels.last_token import reads_last_token


def kd_sum(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Summed KL(teacher || student) over rows of (N, C) logits, both softened by the
    temperature and scaled by its square (Hinton et al. 2015: the soft gradients then keep
    their size as T changes)."""
    t = temperature
    return F.kl_div(F.log_softmax(student / t, -1), F.log_softmax(teacher / t, -1),
                    log_target=True, reduction="sum") * (t * t)


class TeacherOutputs:
    """The teacher's logits for a batch: looked up from a cache (one tensor per training
    example, columns already in the student's label order) or computed on the batch itself."""

    def __init__(self, logits: Callable[[nn.Module, dict[str, torch.Tensor]], torch.Tensor],
                 teacher: nn.Module | None, cache: list[torch.Tensor] | None,
                 order: torch.Tensor):
        self.logits, self.teacher, self.cache = logits, teacher, cache
        self.order = order  # student label j is the teacher's label order[j]

    def __call__(self, batch: dict[str, torch.Tensor], like: torch.Tensor) -> torch.Tensor:
        """Teacher logits shaped like the student's `like`: (B, C) or (B, T, C)."""
        if self.cache is None:
            assert self.teacher is not None
            if next(self.teacher.parameters()).device != like.device:
                self.teacher.to(like.device)
            with torch.no_grad():
                return self.logits(self.teacher, batch)[..., self.order.to(like.device)]
        rows = [self.cache[i] for i in batch["example_ids"].tolist()]
        out = torch.zeros_like(like)
        for b, row in enumerate(rows):  # (C,) per example, or (T_i, C) right-aligned at 0
            if row.dim() == 1:
                out[b] = row
            else:
                out[b, :row.shape[0]] = row[:like.shape[1]]
        return out


class DistillTask:
    """`inner`'s task with loss (1 - alpha) * CE(labels) + alpha * T^2 * KL(teacher || student),
    summed over examples (or trained sub-tokens), so units and accumulation stay the inner
    task's."""

    def __init__(self, inner: Any, teacher: TeacherOutputs, temperature: float, alpha: float):
        self.inner, self.teacher = inner, teacher
        self.temperature, self.alpha = temperature, alpha

    def __getattr__(self, name: str) -> Any:  # every other part of the task is the inner one's
        return getattr(self.inner, name)

    def collate(self, data: Any, index: list[int]) -> dict[str, torch.Tensor]:
        batch = self.inner.collate(data, index)
        batch.setdefault("example_ids", torch.tensor(index))  # packed batches give their order
        return batch

    def choose_batches(self, model: nn.Module, cfg: Any, log: Callable[[str], None]) -> None:
        """The inner task's choice, except that a teacher reading packed rows must be able to."""
        self.inner.choose_batches(model, cfg, log)
        if getattr(self.inner, "packing", False) and self.teacher.teacher is not None:
            why = packing_blocker(self.teacher.teacher, False)
            if not why and reads_last_token(self.teacher.teacher) != reads_last_token(model):
                why = "one of teacher and student is a decoder (reads the last token), the other not"
            if why:
                self.inner.packing = False
                log(f"batches: padded after all: the teacher reads each batch and {why}")

    def loss_sum(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        student = self.inner.logits(model, batch)  # (B, C) or (B, T, C)
        teacher = self.teacher(batch, student)
        labels = batch["labels"]
        if student.dim() == 3:  # token classification: the trained sub-tokens only
            keep = labels != IGNORE
            student, teacher, labels = student[keep], teacher[keep], labels[keep]
        loss = F.cross_entropy(student, labels, reduction="sum")
        if self.alpha == 0.0:
            return loss
        soft = kd_sum(student, teacher, self.temperature)
        return (1.0 - self.alpha) * loss + self.alpha * soft
