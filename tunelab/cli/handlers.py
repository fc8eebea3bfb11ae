"""One function per command: import its module when it runs (`tunelab --help` loads no
torch) and call it with the parsed arguments. No logic lives here."""

from __future__ import annotations

import argparse
from typing import Any, Callable


def _config(args: argparse.Namespace) -> Any:
    from tunelab.config import load_config

    return load_config(args.config, args.overrides)


def _show(args: argparse.Namespace) -> None:
    from tunelab.commands.info import show_config

    print(show_config(_config(args)), end="")


def _info(args: argparse.Namespace) -> None:
    from tunelab.commands.info import config_source, info
    from tunelab.config import load_config

    info(load_config(config_source(args.config), args.overrides))  # a run directory too


def _train(args: argparse.Namespace) -> None:
    if args.continue_from is not None:
        from tunelab.commands.continual import continue_from

        continue_from(_config(args), args.continue_from, args.strategy,
                      overwrite=args.overwrite, resume=args.resume)
        return
    from tunelab.recipes.run import train

    train(_config(args), resume=args.resume, overwrite=args.overwrite)


def _meta(args: argparse.Namespace) -> None:
    from tunelab.meta.config import load_meta_config
    from tunelab.meta.run import meta

    meta(load_meta_config(args.config, args.overrides), overwrite=args.overwrite)


def _eval(args: argparse.Namespace) -> None:
    from tunelab.commands.evaluate import evaluate

    evaluate(args.run_dir, args.data, args.split, args.add_adapter, args.adapter, args.task)


def _predict(args: argparse.Namespace) -> None:
    from tunelab.commands.predict import predict

    predict(args.run_dir, args.texts, args.file, args.add_adapter, args.adapter, args.task)


def _data(args: argparse.Namespace) -> None:
    if args.data_command == "augment":
        from tunelab.commands.augment import materialise

        materialise(_config(args), args.out, args.epoch)
        return
    from tunelab.commands.inspect_data import inspect

    inspect(_config(args), args.n, colour=False if args.no_color else None)


def _generate(args: argparse.Namespace) -> None:
    from tunelab.commands.generate import generate

    generate(args.target, args.prompt, args.file, args.out, args.system, args.max_new_tokens,
             args.temperature, args.add_adapter, args.adapter)


def _chat(args: argparse.Namespace) -> None:
    from tunelab.commands.generate import chat

    chat(args.target, args.system, args.max_new_tokens, args.temperature,
         adapters=args.add_adapter, use=args.adapter)


def _report(args: argparse.Namespace) -> None:
    from tunelab.commands.explain import explain_for_report
    from tunelab.report import report

    report(args.run_dirs, args.out, not args.no_data, args.samples,
           explainer=explain_for_report)


def _explain(args: argparse.Namespace) -> None:
    from tunelab.commands.explain import explain

    explain(args.run_dir, args.texts, args.file, args.label, args.method, args.steps,
            args.json_out, args.html_out, args.data, args.faithfulness, args.limit,
            args.max_new_tokens, colour=False if args.no_color else None)


def _merge(args: argparse.Namespace) -> None:
    if args.out is None:  # merge RUN_DIR OUT: one run folded into its base
        from tunelab.commands.merge_run import merge_one

        given = [o for o in ("weights", "density", "rank", "head", "base")
                 if getattr(args, o) is not None]
        merge_one(args.sources, given + (["combine"] if args.combine != "linear" else [])
                  + (["into_base"] if args.into_base else []))
        return
    from tunelab.commands.merge import merge_adapters
    from tunelab.methods.merging import CombineSpec

    spec = CombineSpec(args.combine, args.density, args.rank, args.majority_sign, args.seed)
    merge_adapters(args.sources, args.out, args.weights, spec, args.into_base, args.head,
                   args.base)


def _cv(args: argparse.Namespace) -> None:
    from tunelab.eval.cv import cross_validate

    cross_validate(_config(args), args.folds, args.keep, args.overwrite)


def _tune(args: argparse.Namespace) -> None:
    from tunelab.eval.tune import tune

    tune(args.config, args.overrides, args.trials, args.cv, args.keep, args.overwrite,
         prune=not args.no_prune)


def _serve(args: argparse.Namespace) -> None:
    from tunelab.commands.serve import serve

    serve(args.targets, args.adapter, args.host, args.port, args.api_key, args.admin_key,
          max_batch=args.max_batch, max_queue=args.max_queue, max_concurrent=args.max_concurrent,
          batch_window_ms=args.batch_window_ms, max_body_bytes=args.max_body_bytes)


def _export(args: argparse.Namespace) -> None:
    from tunelab.commands.export import export_run

    export_run(args.run_dir, args.to, args.out, args.quantize, args.dtype)


def _prune(args: argparse.Namespace) -> None:
    from tunelab.commands.prune import prune

    prune(args.run_dir, args.out, args.heads, args.ffn, args.layers, args.examples,
          args.recover_steps)


def _federate(args: argparse.Namespace) -> None:
    from tunelab.commands.federate import federate

    federate(args.config, args.overrides, overwrite=args.overwrite, superlink=args.superlink)


def _continual(args: argparse.Namespace) -> None:
    from tunelab.commands.continual import continual

    continual(args.config, args.overrides, overwrite=args.overwrite)


def _ui(args: argparse.Namespace) -> None:
    from tunelab.commands.ui import ui

    ui(args.host, args.port, args.runs_dir, args.auth, args.max_upload_mb)


COMMANDS: dict[str, Callable[[argparse.Namespace], None]] = {
    "config": _show, "info": _info, "train": _train, "meta": _meta, "eval": _eval,
    "predict": _predict, "data": _data, "generate": _generate, "chat": _chat,
    "report": _report, "merge": _merge, "cv": _cv, "tune": _tune, "export": _export,
    "serve": _serve, "prune": _prune, "explain": _explain,
    "federate": _federate, "continual": _continual,
    "ui": _ui}

