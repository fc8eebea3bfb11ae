"""distill: load the teacher run, check it fits the student's task, and wrap the task so its
loss mixes the teacher's softened outputs with the labels (tunelab/tasks/distill.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from tunelab.data.batching import plan_batches
from tunelab.errors import AdapterError, ConfigError
from tunelab.methods.peft_format import merge
from tunelab.recipes.base import Setup
from tunelab.runs.layout import read_run_info
from tunelab.runs.trained import is_run_dir, load_trained
from tunelab.tasks.distill import DistillTask, TeacherOutputs


def with_teacher(cfg: Any, s: Setup, device: torch.device, log: Callable[[str], None]) -> None:
    """Replace s.task by the distilling task (in place)."""
    d = cfg.distill
    path = Path(d.teacher).expanduser()
    if not is_run_dir(path):
        raise ConfigError(f"distill.teacher: {path} is not a tunelab run directory (no run.json); "
                          f"train the teacher first and name its output_dir")
    info = read_run_info(path)
    if info["task"] != cfg.task:
        raise ConfigError(f"distill.teacher: {path} is a {info['task']} run; a {cfg.task} "
                          f"student needs a {cfg.task} teacher")
    labels, theirs = s.info["labels"], info["labels"]
    if sorted(labels) != sorted(theirs):
        raise ConfigError(f"distill.teacher: {path} predicts {theirs}, the student's data "
                          f"has {labels}; distil from a teacher trained on the same labels")
    if d.alpha == 0.0:  # the labels-only baseline of a distillation study
        log(f"distill: alpha 0, so the labels alone train the student; teacher {path} unused")
        return
    teacher, tokenizer, _ = load_trained(path)
    try:
        merge(teacher)  # one matrix per layer: the teacher's forward costs what a plain one does
    except AdapterError:
        pass  # a method that cannot merge (prompt tuning) runs as it is
    order = torch.tensor([theirs.index(label) for label in labels])
    same_tokens = tokenizer.get_vocab() == s.tokenizer.get_vocab()
    if d.teacher_logits == "on_the_fly" or cfg.task == "token_classification":
        if not same_tokens:
            raise ConfigError(
                f"distill.teacher: {path} uses another tokenizer than {cfg.model.name}; "
                + ("token classification matches teacher and student sub-token by sub-token, "
                   "so they must share one" if cfg.task == "token_classification" else
                   "on_the_fly feeds the student's batches to the teacher; set "
                   "distill.teacher_logits: cache"))
    if d.teacher_logits == "on_the_fly":
        outputs = TeacherOutputs(s.task.logits, teacher, None, order)
        log(f"distill: teacher {path} ({info['method']}) scores each batch; temperature "
            f"{d.temperature}, alpha {d.alpha}")
    else:
        same = same_tokens and info["max_length"] == cfg.model.max_length
        task = s.task if same else type(s.task).from_run_info(tokenizer, info)
        data = s.train if same else task.encode(tokenizer, s.examples)
        cache = teacher_logits(task, teacher, data, cfg.train.eval_batch_size, device)
        outputs = TeacherOutputs(s.task.logits, None, [row[..., order] for row in cache], order)
        log(f"distill: teacher {path} ({info['method']}) scored {len(cache)} training examples "
            f"once; temperature {d.temperature}, alpha {d.alpha}")
        del teacher
    s.task = DistillTask(s.task, outputs, d.temperature, d.alpha)
    s.info["distill"] = {"teacher": str(path.resolve()), "temperature": d.temperature,
                         "alpha": d.alpha, "teacher_logits": d.teacher_logits}


@torch.no_grad()
def teacher_logits(task: Any, teacher: torch.nn.Module, data: Any, batch_size: int,
                   device: torch.device) -> list[torch.Tensor]:
    """The teacher's logits for every example of `data`: (C,) each, or (T_i, C) per sentence."""
    teacher.to(device).eval()
    out: list[torch.Tensor] = [torch.empty(0)] * len(data)
    lengths = data.lengths()
    batches = plan_batches(lengths, batch_size, seed=0, epoch=0, bucket=True)
    for index in tqdm(batches, desc="teacher", unit="batch", mininterval=1.0, leave=False):
        batch = {k: v.to(device) for k, v in task.collate(data, index).items()}
        logits = task.logits(teacher, batch).cpu()  # (B, C) or (B, T, C)
        for row, i in enumerate(index):
            out[i] = logits[row] if logits.dim() == 2 else logits[row, :lengths[i]].clone()
    return out
