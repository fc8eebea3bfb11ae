"""DP-SGD (Abadi et al., 2016) for the one training loop, built on Opacus.

Each step trains on a Poisson sample (every example joins with probability q = batch_size *
grad_accum / N, drawn from (train.seed, step): a resumed run redraws the same batches).
Opacus' hooks give every trainable tensor a per-example gradient (tunelab's adapter layers
through methods/grad_samplers.py); its DPOptimizer clips each example's gradient to
privacy.max_grad_norm and sums them, adds Gaussian noise N(0, (sigma C)^2), and the sum is
divided by the expected batch size. Opacus' accountant (RDP or PRV) says what the steps
spent; its noise calibration picks sigma for a target epsilon. The loop calls this object
at four points: micro_batches, after_backward, finish_step, after_step.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable

import numpy as np
import torch
from opacus.accountants import PRVAccountant, RDPAccountant
from opacus.accountants.utils import get_noise_multiplier
from opacus.grad_sample import GradSampleHooks
from opacus.optimizers import DPOptimizer
from opacus.utils.module_utils import trainable_parameters
from torch import nn

from tunelab.config import TrainConfig
from tunelab.config.privacy import PrivacyConfig
from tunelab.errors import ConfigError
from tunelab.methods.grad_samplers import ADAPTER_LAYERS
from tunelab.train.distributed import Dist

ACCOUNTANTS = {"rdp": RDPAccountant, "prv": PRVAccountant}
# the first hooked layer's input needs no gradient: expected here, not a problem to report
warnings.filterwarnings("ignore", message="Full backward hook is firing when gradients are "
                        "computed with respect to module outputs since no inputs require")
COVERS = ("example-level: adding or removing one training example; covers the training set "
          "through the trained weights and everything derived from them")


class AdapterGradSampleHooks(GradSampleHooks):
    """Opacus' hooks, with tunelab's adapter layers hooked as one unit (their trainable
    tensors live in children the layer never calls as modules)."""

    def iterate_submodules(self, module: nn.Module):
        if type(module) in ADAPTER_LAYERS:
            if any(p.requires_grad for p in module.parameters()):
                yield module
            return
        yield from super().iterate_submodules(module)

    def capture_activations_hook(self, module: nn.Module, forward_input: Any, out: Any) -> None:
        if type(module) not in ADAPTER_LAYERS:
            return super().capture_activations_hook(module, forward_input, out)
        if not (module.training and torch.is_grad_enabled() and self.hooks_enabled):
            return None
        module.__dict__.setdefault("activations", []).append([t.detach() for t in forward_input])
        for _, p in trainable_parameters(module):
            p._forward_counter += 1
        return None


class PrivateTraining:
    """One private run's sampler, clipping, noise and accountant (see the module docstring)."""

    def __init__(self, cfg: PrivacyConfig, train: TrainConfig, n_examples: int):
        if n_examples < 1:
            raise ConfigError("privacy: the training set is empty")
        self.cfg, self.n, self.seed, self.accum = cfg, n_examples, train.seed, train.grad_accum
        self.sample_rate = min(1.0, train.batch_size * train.grad_accum / n_examples)
        self.expected = self.sample_rate * n_examples  # examples per step, on average
        self.delta = cfg.delta_for(n_examples)
        self.sigma = cfg.noise_multiplier if cfg.noise_multiplier is not None else 0.0
        self.accountant = ACCOUNTANTS[cfg.accountant]()
        self.total_steps = self.planned_steps = 0
        self.steps_done = 0
        self.optimizer: DPOptimizer | None = None
        self._handles: list[Any] = []
        self._rows = 0

    # ------------------------------------------------------------------ setup
    def start(self, model: nn.Module, optimizer: torch.optim.Optimizer, total_steps: int,
              dist: Dist, log: Callable[[str], None]) -> int:
        """Calibrate the noise, hook the model, wrap the optimizer; returns the steps the run
        takes (fewer than planned when a noise_multiplier run would pass target_epsilon)."""
        if dist.active:
            raise ConfigError("privacy: DP-SGD under torchrun is not supported yet (each "
                              "rank would clip and noise its own share); run one process")
        cfg, self.planned_steps = self.cfg, total_steps
        if cfg.noise_multiplier is None:
            self.sigma = get_noise_multiplier(target_epsilon=cfg.target_epsilon,
                                              target_delta=self.delta,
                                              sample_rate=self.sample_rate, steps=total_steps,
                                              accountant=cfg.accountant)
        elif cfg.target_epsilon is not None:
            total_steps = self.steps_within(cfg.target_epsilon, total_steps)
            if total_steps == 0:
                raise ConfigError(f"privacy.target_epsilon: one step with noise_multiplier "
                                  f"{self.sigma:g} already spends more than "
                                  f"{cfg.target_epsilon:g}; raise privacy.noise_multiplier")
        self.total_steps = total_steps
        self.hooks = AdapterGradSampleHooks(model, batch_first=True, loss_reduction="sum",
                                            strict=False)
        self._watch_batch_rows(model)
        self.optimizer = DPOptimizer(optimizer, noise_multiplier=self.sigma,
                                     max_grad_norm=cfg.max_grad_norm,
                                     expected_batch_size=self.expected, loss_reduction="sum")
        stop = (f"; target_epsilon {cfg.target_epsilon:g} allows {total_steps} of the "
                f"{self.planned_steps} steps" if total_steps < self.planned_steps else "")
        log(f"privacy: DP-SGD, noise multiplier {self.sigma:.4g}, clip {cfg.max_grad_norm:g} "
            f"per example, Poisson sampling q={self.sample_rate:.4g} of {self.n} examples, "
            f"delta {self.delta:.0e}, {cfg.accountant} accountant{stop} (train.max_grad_norm "
            "is not used: the per-example clip replaces it)")
        return total_steps

    def _watch_batch_rows(self, model: nn.Module) -> None:
        """A trainable embedding fed one row for the whole batch (BERT's and GPT-2's position
        ids, (1, T)) gets that row repeated per example: the same output, and a gradient
        Opacus can split by example."""
        def rows(_m: nn.Module, args: tuple, kwargs: dict) -> None:
            first = kwargs.get("input_ids", kwargs.get("inputs_embeds"))
            first = first if first is not None else (args[0] if args else None)
            self._rows = first.shape[0] if isinstance(first, torch.Tensor) else 0

        def expand(_m: nn.Module, args: tuple) -> tuple | None:
            x = args[0]
            if x.dim() >= 1 and x.shape[0] == 1 and self._rows > 1:
                return (x.expand(self._rows, *x.shape[1:]), *args[1:])
            return None

        backbone = getattr(model, "base_model", None)  # what a task's loss may call directly
        watched = backbone if isinstance(backbone, nn.Module) else model
        self._handles.append(watched.register_forward_pre_hook(rows, with_kwargs=True))
        for m in model.modules():
            if isinstance(m, nn.Embedding) and m.weight.requires_grad:
                self._handles.append(m.register_forward_pre_hook(expand))

    def close(self) -> None:
        """Take the hooks off the model (it is saved and served as a plain model)."""
        self.hooks.remove_hooks()
        for h in self._handles:
            h.remove()
        self._handles = []

    # ------------------------------------------------------------------ one step
    def micro_batches(self, step: int, lengths: list[int] | None = None) -> list[list[int]]:
        """Step `step`'s Poisson sample, split into grad_accum micro-batches (some may be
        empty): a pure function of (train.seed, step). With the examples' lengths the sample
        is sorted by length before the split, so each micro-batch pads little (random rows
        padded to the longest cost SST-2 about 3x); the step's sum of clipped gradients is
        the same however the sample is split."""
        rng = np.random.default_rng([self.seed, step, 0x5EED])
        chosen = np.flatnonzero(rng.random(self.n) < self.sample_rate)
        if lengths is not None:
            chosen = chosen[np.argsort(np.asarray(lengths)[chosen], kind="stable")]
        return [part.tolist() for part in np.array_split(chosen, self.accum)]

    def after_backward(self) -> None:
        """Clip this micro-batch's per-example gradients and add them to the step's sum."""
        assert self.optimizer is not None
        for name, p in self._named_params():
            if p.grad_sample is None:
                if p.grad is not None:  # it has a gradient, but not by example
                    raise ConfigError(f"privacy: {name} got no per-example gradient (a layer "
                                      f"called outside its module?); freeze it or remove privacy")
                rows = self._rows_of_batch()
                p.grad_sample = torch.zeros(rows, *p.shape, device=p.device, dtype=p.dtype)
            elif self._rows and p.grad_sample.shape[0] != self._rows:
                raise ConfigError(
                    f"privacy: {name}: its layer sees the batch regrouped ({p.grad_sample.shape[0]}"
                    f" rows for {self._rows} examples; a causal LM's output layer sees only the "
                    f"trained tokens), so its gradient cannot be split by example; use a method "
                    f"that leaves it frozen (lora, ia3, freeze) or remove privacy")
        self.optimizer.clip_and_accumulate()
        for p in self.optimizer.params:
            p.grad_sample, p.grad = None, None

    def finish_step(self, step: int) -> None:
        """Noise the step's clipped sum into p.grad and divide by the expected batch size."""
        assert self.optimizer is not None
        for p in self.optimizer.params:
            if p.summed_grad is None:  # an empty Poisson sample: the step is noise alone
                p.summed_grad = torch.zeros_like(p)
        gen = torch.Generator(device=self.optimizer.params[0].device)
        gen.manual_seed(int(np.random.SeedSequence([self.seed, step, 0x0015E]).generate_state(1)[0]))
        self.optimizer.generator = gen
        self.optimizer.add_noise()
        for p in self.optimizer.params:
            p.grad /= self.expected
            p.summed_grad = None

    def after_step(self, step: int) -> None:
        """Account for step `step` (from 0); epsilon is asked for when a step is logged."""
        self.taken(step)
        self.accountant.step(noise_multiplier=self.sigma, sample_rate=self.sample_rate)
        self.steps_done = step + 1

    def taken(self, steps: int) -> None:
        """The run has taken `steps` steps: a resumed run's earlier steps were all alike."""
        if self.steps_done != steps:
            self.accountant.history = [(self.sigma, self.sample_rate, steps)] if steps else []
            self.steps_done = steps

    # ------------------------------------------------------------------ accounting
    def epsilon(self) -> float | None:
        """Epsilon spent so far at this delta (the accountant's); None: no guarantee (no noise)."""
        if self.steps_done == 0:
            return 0.0
        if self.sigma == 0:
            return None
        eps = float(self.accountant.get_epsilon(delta=self.delta))
        return eps if math.isfinite(eps) else None

    def epsilon_after(self, steps: int) -> float:
        """What `steps` steps at this noise and sample rate spend."""
        if self.sigma == 0:
            return math.inf
        acc = ACCOUNTANTS[self.cfg.accountant]()
        acc.history = [(self.sigma, self.sample_rate, steps)]
        return float(acc.get_epsilon(delta=self.delta))

    def steps_within(self, budget: float, most: int) -> int:
        """The most steps (<= most) whose epsilon stays within `budget` (epsilon grows with steps)."""
        lo, hi = 0, most
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if self.epsilon_after(mid) <= budget else (lo, mid - 1)
        return lo

    def summary(self, steps: int) -> dict[str, Any]:
        """run.json's and summary.json's record of the guarantee after `steps` steps."""
        self.taken(steps)
        eps = self.epsilon()
        said = f"epsilon={eps:.3g}" if eps is not None else "no finite epsilon (noise 0)"
        return {"epsilon": eps, "delta": self.delta, "noise_multiplier": self.sigma,
                "max_grad_norm": self.cfg.max_grad_norm, "sample_rate": self.sample_rate,
                "expected_batch_size": self.expected, "steps": self.steps_done,
                "planned_steps": self.planned_steps, "accountant": self.cfg.accountant,
                "target_epsilon": self.cfg.target_epsilon, "training_examples": self.n,
                "covers": COVERS,
                "guarantee": f"({said}, delta={self.delta:.0e})-DP, {COVERS}"}

    # ------------------------------------------------------------------ helpers
    def _named_params(self) -> list[tuple[str, nn.Parameter]]:
        if not hasattr(self, "_names"):
            assert self.optimizer is not None
            names = {id(p): n for n, p in self.hooks._module.named_parameters()}
            self._names = [(names.get(id(p), "?"), p) for p in self.optimizer.params]
        return self._names

    def _rows_of_batch(self) -> int:
        for p in self.optimizer.params if self.optimizer else []:
            if p.grad_sample is not None:
                return p.grad_sample.shape[0]
        return self._rows
