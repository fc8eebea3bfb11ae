"""Search spaces for `tunelab tune`: the top-level `search:` section of a config.

    search:
      train.lr: {log_uniform: [1.0e-5, 1.0e-2]}   # float, sampled on a log scale
      train.warmup_ratio: {uniform: [0, 0.2]}     # float
      train.batch_size: {int: [8, 64]}            # integer, bounds included (log_int: log scale)
      method.r: {choice: [4, 8, 16]}              # any YAML values, lists included

Each key is a dotted path of the run config. The whole space is checked before any trial
runs: the distribution names and bounds, and the config with every key set to each bound
(and to a value inside a range, which catches a float range on an integer key) or each
choice, so a typo in a key fails with its did-you-mean and an out-of-range bound with the
config's own limit.
"""

from __future__ import annotations

import copy
import difflib
import math
from dataclasses import dataclass
from typing import Any

from tunelab.config import validate
from tunelab.config.tree import apply_override
from tunelab.errors import ConfigError

RANGES = ("uniform", "log_uniform", "int", "log_int")
DISTRIBUTIONS = (*RANGES, "choice")
NOT_SEARCHABLE = ("task", "output_dir")
INSIDE = 0.382  # where inside a range the interior probe sits (rarely a whole number)
_SCALARS = (str, int, float, bool, type(None))


@dataclass(frozen=True)
class Param:
    key: str  # dotted config path; also the Optuna parameter name
    kind: str  # one of DISTRIBUTIONS
    args: tuple[Any, ...]  # (low, high) for ranges, the options for choice

    def suggest(self, trial: Any) -> Any:
        """The value an Optuna trial draws for this key."""
        if self.kind == "choice":
            if all(isinstance(c, _SCALARS) for c in self.args):
                return trial.suggest_categorical(self.key, list(self.args))
            # Optuna stores scalars only: draw the option's index
            return self.args[trial.suggest_categorical(self.key, list(range(len(self.args))))]
        low, high = self.args
        log = self.kind.startswith("log_")
        if self.kind.endswith("int"):
            return trial.suggest_int(self.key, low, high, log=log)
        return trial.suggest_float(self.key, low, high, log=log)

    def value(self, stored: Any) -> Any:
        """The config value of an Optuna parameter as stored (an index for list choices)."""
        if self.kind == "choice" and not all(isinstance(c, _SCALARS) for c in self.args):
            return self.args[stored]
        return stored

    def probes(self) -> list[tuple[str, Any]]:
        """(what, value) pairs to validate the config with before any trial."""
        if self.kind == "choice":
            return [(f"choice {c!r}", c) for c in self.args]
        low, high = self.args
        if self.kind.startswith("log_"):
            inside = math.exp(math.log(low) + INSIDE * (math.log(high) - math.log(low)))
        else:
            inside = low + INSIDE * (high - low)
        if self.kind.endswith("int"):
            inside = round(inside)
        return [("its lower bound", low), ("its upper bound", high),
                (f"a value inside the range, {inside:g}", inside)]


def with_values(tree: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of a config tree with dotted keys set."""
    out = copy.deepcopy(tree)
    for key, value in values.items():
        apply_override(out, key.split("."), value)
    return out


def parse_space(raw: Any, tree: dict[str, Any], source: str) -> list[Param]:
    """The validated search space of config `tree` (as read, overrides applied)."""
    where = f"{source}: search"
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{where}: expected a mapping of dotted config keys to "
                          "distributions, e.g. train.lr: {log_uniform: [1.0e-5, 1.0e-2]}")
    params = [_param(str(key), spec, where) for key, spec in raw.items()]
    for p in params:
        for what, value in p.probes():
            try:
                validate(with_values(tree, {p.key: value}), source)
            except ConfigError as exc:
                hint = (f"; use {{int: [{p.args[0]}, {p.args[1]}]}} for an integer key"
                        if p.kind in ("uniform", "log_uniform") and what.startswith("a value")
                        and "integer" in str(exc) else "")
                raise ConfigError(f"{where}.{p.key} {{{p.kind}: {list(p.args)}}}: the config with "
                                  f"{p.key} at {what} is invalid: "
                                  f"{str(exc).removeprefix(source + ': ')}{hint}") from None
    return params


def _param(key: str, spec: Any, where: str) -> Param:
    at = f"{where}.{key}"
    parts = key.split(".")
    if any(not p for p in parts) or parts[0] in NOT_SEARCHABLE:
        raise ConfigError(f"{at}: not a searchable dotted config key (e.g. train.lr, method.r; "
                          f"{' and '.join(NOT_SEARCHABLE)} are fixed)")
    if not isinstance(spec, dict) or len(spec) != 1:
        raise ConfigError(f"{at}: expected one distribution, e.g. {{log_uniform: [1.0e-5, "
                          f"1.0e-2]}}, {{int: [8, 64]}} or {{choice: [4, 8, 16]}} (got {spec!r})")
    (kind, args), = spec.items()
    if kind not in DISTRIBUTIONS:
        guess = difflib.get_close_matches(str(kind), DISTRIBUTIONS, n=1, cutoff=0.5)
        hint = f" (did you mean '{guess[0]}'?)" if guess else ""
        raise ConfigError(f"{at}: unknown distribution '{kind}'{hint}; choose from: "
                          f"{', '.join(DISTRIBUTIONS)}")
    if kind == "choice":
        if not isinstance(args, list) or not args:
            raise ConfigError(f"{at}.choice: expected a non-empty list of options (got {args!r})")
        if any(args.count(a) > 1 for a in args):
            raise ConfigError(f"{at}.choice: options repeat ({args!r}); list each once")
        return Param(key, kind, tuple(args))
    if not isinstance(args, list) or len(args) != 2:
        raise ConfigError(f"{at}.{kind}: expected [low, high] (got {args!r})")
    low, high = (_number(a, f"{at}.{kind}", kind.endswith("int")) for a in args)
    if not low < high:
        raise ConfigError(f"{at}.{kind}: low {low!r} must be below high {high!r}")
    if kind.startswith("log_") and low <= 0:
        raise ConfigError(f"{at}.{kind}: a log scale needs low > 0 (got {low!r}); use "
                          f"{'int' if kind == 'log_int' else 'uniform'} for a range from 0")
    return Param(key, kind, (low, high))


def _number(value: Any, at: str, integer: bool) -> int | float:
    """A bound as a number: YAML reads 1e-5 (no dot) as a string, so strings are parsed."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ConfigError(f"{at}: bound {value!r} is not a number") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{at}: bound {value!r} is not a finite number")
    if integer:
        if value != int(value):
            raise ConfigError(f"{at}: bound {value!r} is not a whole number; use uniform for a "
                              "float range")
        return int(value)
    return float(value)
