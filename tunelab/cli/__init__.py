"""Command line: parse arguments, load the config, call one function. No logic lives here.

parsers.py holds the grammar, handlers.py the function each command calls."""

from __future__ import annotations

import argparse
import os
import sys

from tunelab.cli.handlers import COMMANDS
from tunelab.cli.parsers import build_parser as _parser
from tunelab.errors import TunelabError

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    # Overrides may come after flags (`train cfg.yaml --resume train.lr=1e-4`).
    stray = [a for a in extra if a.startswith("-") or "=" not in a]
    if stray or (extra and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
    if extra:
        args.overrides = list(args.overrides) + extra
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        return _dispatch(args)
    except TunelabError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    COMMANDS[args.command](args)
    return 0
