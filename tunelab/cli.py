"""Command line: parse arguments, load the config, call one function. No logic lives here."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from tunelab.errors import TunelabError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tunelab", description="Fine-tune pretrained language models.")
    p.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="fine-tune from a YAML config")
    t.add_argument("config")
    t.add_argument("overrides", nargs="*", help="dotted.key=value, e.g. train.lr=1e-4")
    t.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    t.add_argument("--overwrite", action="store_true", help="replace an earlier run in output_dir")

    c = sub.add_parser("config", help="config tools")
    csub = c.add_subparsers(dest="config_command", required=True)
    show = csub.add_parser("show", help="print the effective config")
    show.add_argument("config")
    show.add_argument("overrides", nargs="*")

    i = sub.add_parser("info", help="matched modules and parameter counts, without training")
    i.add_argument("config")
    i.add_argument("overrides", nargs="*")

    e = sub.add_parser("eval", help="score a trained run: accuracy, macro-F1 and confusion "
                                    "matrix; entity P/R/F1 per type for token classification")
    e.add_argument("run_dir", type=Path)
    e.add_argument("--data", help="a file in the training data's format (default: the dev set)")
    e.add_argument("--split", choices=["dev", "test"], default="dev")
    e.add_argument("--task", help="multitask runs: the task to score (default: every task)")

    pr = sub.add_parser("predict", help="label and probability per text; the entities with "
                                        "their character spans for token classification")
    pr.add_argument("run_dir", type=Path)
    pr.add_argument("texts", nargs="*")
    pr.add_argument("--file", type=Path, help="one text per line")
    pr.add_argument("--task", help="multitask runs: the task to serve")

    d = sub.add_parser("data", help="data tools")
    dsub = d.add_subparsers(dest="data_command", required=True)
    ins = dsub.add_parser("inspect", help="rendered examples with trained tokens marked, and stats")
    ins.add_argument("config")
    ins.add_argument("overrides", nargs="*")
    ins.add_argument("-n", type=int, default=3, help="examples to show")
    ins.add_argument("--no-color", action="store_true", help="mark trained tokens with [[ ]]")

    for name, helptext in (("generate", "generate text from a causal LM run or model"),
                           ("chat", "interactive chat with a causal LM run or model")):
        g = sub.add_parser(name, help=helptext)
        g.add_argument("target", help="a run directory, or a model name / directory")
        g.add_argument("--system", help="a system prompt")
        g.add_argument("--max-new-tokens", type=int, default=256)
        g.add_argument("--temperature", type=float, default=0.0, help="0: greedy")
        if name == "generate":
            g.add_argument("--prompt")
            g.add_argument("--file", type=Path, help="JSONL of {prompt} or {messages}")
            g.add_argument("--out", type=Path, help="JSONL to write (default: print)")

    m = sub.add_parser("merge", help="write base + adapter as one plain transformers checkpoint")
    m.add_argument("run_dir", type=Path)
    m.add_argument("out", type=Path)
    return p


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
    from tunelab import commands
    from tunelab.config import load_config

    if args.command == "config":
        print(commands.show_config(load_config(args.config, args.overrides)), end="")
    elif args.command == "info":
        commands.info(load_config(args.config, args.overrides))
    elif args.command == "train":
        from tunelab.train.run import train

        train(load_config(args.config, args.overrides), resume=args.resume,
              overwrite=args.overwrite)
    elif args.command == "eval":
        commands.evaluate(args.run_dir, args.data, args.split, args.task)
    elif args.command == "predict":
        commands.predict(args.run_dir, args.texts, args.file, args.task)
    elif args.command == "data":
        from tunelab.inspect_data import inspect

        inspect(load_config(args.config, args.overrides), args.n,
                colour=False if args.no_color else None)
    elif args.command == "generate":
        from tunelab.generation import generate

        generate(args.target, args.prompt, args.file, args.out, args.system, args.max_new_tokens,
                 args.temperature)
    elif args.command == "chat":
        from tunelab.generation import chat

        chat(args.target, args.system, args.max_new_tokens, args.temperature)
    elif args.command == "merge":
        commands.merge(args.run_dir, args.out)
    return 0
