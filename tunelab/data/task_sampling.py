"""Which task each batch of a multitask run comes from: proportional, temperature, round robin.

An epoch of a multitask run holds as many batches as one pass over every task's data. Each
task gets a fixed quota of those batches (its share under the sampling strategy, apportioned
by largest remainders), and the quotas are laid out in a seeded shuffle (round robin: in
turn). A task's batches come from its own length-bucketed plans, epoch after epoch, so a task
with a quota above its batch count cycles through its data and one below it sees a part.
Everything is a function of (seed, epoch), which keeps --resume exact.
"""

from __future__ import annotations

import math
import random

from tunelab.data.batching import plan_batches


def sampling_weights(examples: dict[str, int], sampling: str, temperature: float
                     ) -> dict[str, float]:
    """The share of batches each task gets: n_i / sum n (proportional), n_i^(1/T) normalised
    (temperature; T=1 is proportional, large T nears uniform), or 1/K (round robin)."""
    if sampling == "round_robin":
        raw = {k: 1.0 for k in examples}
    elif sampling == "temperature":
        raw = {k: n ** (1.0 / temperature) for k, n in examples.items()}
    else:
        raw = {k: float(n) for k, n in examples.items()}
    total = sum(raw.values())
    return {k: v / total for k, v in raw.items()}


def apportion(weights: dict[str, float], total: int) -> dict[str, int]:
    """`total` batches split by `weights` with largest remainders; every task gets at least
    one when there are enough batches."""
    exact = {k: w * total for k, w in weights.items()}
    out = {k: math.floor(v) for k, v in exact.items()}
    for k in sorted(exact, key=lambda k: out[k] - exact[k])[: total - sum(out.values())]:
        out[k] += 1
    for k in [k for k, v in out.items() if v == 0]:
        donor = max(out, key=out.__getitem__)
        if out[donor] > 1:
            out[donor] -= 1
            out[k] = 1
    return out


def task_order(quotas: dict[str, int], sampling: str, seed: int, epoch: int) -> list[str]:
    """The task of every batch of this epoch: quotas shuffled by (seed, epoch), or taken in
    turn for round robin (a task whose quota is spent drops out of the cycle)."""
    if sampling == "round_robin":
        left, out = dict(quotas), []
        while any(left.values()):
            for k in quotas:
                if left[k]:
                    out.append(k)
                    left[k] -= 1
        return out
    order = [k for k, q in quotas.items() for _ in range(q)]
    random.Random(seed * 100_003 + epoch + 7_919).shuffle(order)
    return order


class TaskSchedule:
    """Batches of (task, local indices) for any epoch; pure in (seed, epoch)."""

    def __init__(self, lengths: dict[str, list[int]], batch_size: int, seed: int, bucket: bool,
                 sampling: str, temperature: float):
        self.lengths, self.batch_size, self.seed, self.bucket = lengths, batch_size, seed, bucket
        self.sampling = sampling
        self.batches = {k: math.ceil(len(v) / batch_size) for k, v in lengths.items()}
        if sampling == "proportional":  # exactly one pass over each task per epoch
            self.quotas = dict(self.batches)
        else:
            weights = sampling_weights({k: len(v) for k, v in lengths.items()}, sampling,
                                       temperature)
            self.quotas = apportion(weights, sum(self.batches.values()))
        self._plans: dict[tuple[str, int], list[list[int]]] = {}

    def _task_plan(self, task: str, epoch: int) -> list[list[int]]:
        if (task, epoch) not in self._plans:
            if len(self._plans) > 4 * len(self.lengths):
                self._plans.clear()
            self._plans[task, epoch] = plan_batches(self.lengths[task], self.batch_size,
                                                    self.seed, epoch, self.bucket)
        return self._plans[task, epoch]

    def plan(self, epoch: int) -> list[tuple[str, list[int]]]:
        seen = {k: epoch * q for k, q in self.quotas.items()}  # batches each task gave before
        out = []
        for task in task_order(self.quotas, self.sampling, self.seed, epoch):
            task_epoch, i = divmod(seen[task], self.batches[task])
            seen[task] += 1
            out.append((task, self._task_plan(task, task_epoch)[i]))
        return out
