"""Naive sequential fine-tuning: each stage trains as if it were the only one."""

from __future__ import annotations

from tunelab.continual.strategies.base import Strategy


class Naive(Strategy):
    """The base Strategy changes nothing; named so the registry lists it."""
