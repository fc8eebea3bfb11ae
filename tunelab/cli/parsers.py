"""The command line's grammar: every subcommand and its options (argparse). No logic here."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tunelab", description="Fine-tune pretrained language models.")
    p.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = p.add_subparsers(dest="command", required=True)
    for add in (_training, _config_and_data, _using_runs, _adapters, _studies, _serving,
                _web_ui, _compress):
        add(sub)
    return p


def _training(sub: Any) -> None:
    """train and meta: a run from a config."""
    t = sub.add_parser("train", help="fine-tune from a YAML config")
    t.add_argument("config")
    t.add_argument("overrides", nargs="*", help="dotted.key=value, e.g. train.lr=1e-4")
    t.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    t.add_argument("--overwrite", action="store_true", help="replace an earlier run in output_dir")
    t.add_argument("--continue-from", type=Path, metavar="RUN",
                   help="start from RUN's weights and train the config's data as a new stage of "
                        "RUN's task; RUN's dev set is scored before and after (forgetting)")
    t.add_argument("--strategy", choices=["naive", "replay", "ewc", "lwf"], default="naive",
                   help="with --continue-from: how to keep RUN's task from being forgotten")

    co = sub.add_parser("continual", help="train stages in order with a strategy against "
                        "forgetting; writes the accuracy matrix, BWT and FWT")
    co.add_argument("config")
    co.add_argument("overrides", nargs="*", help="dotted.key=value, e.g. strategy.name=ewc")
    co.add_argument("--overwrite", action="store_true", help="replace an earlier run in output_dir")

    me = sub.add_parser("meta", help="meta-learn an adapter initialisation for few-shot runs "
                        "(Reptile or first-order MAML over source tasks)")
    me.add_argument("config")
    me.add_argument("overrides", nargs="*", help="dotted.key=value, e.g. meta.episodes=100")
    me.add_argument("--overwrite", action="store_true", help="replace an earlier run in output_dir")

    fe = sub.add_parser("federate", help="federated fine-tuning with Flower: clients train one "
                        "adapter on their own data; only adapter and head tensors travel")
    fe.add_argument("config")
    fe.add_argument("overrides", nargs="*", help="dotted.key=value, e.g. federated.rounds=20")
    fe.add_argument("--overwrite", action="store_true", help="replace an earlier run in output_dir")
    fe.add_argument("--superlink", metavar="HOST:PORT",
                    help="submit to a running Flower SuperLink (deployment engine) instead of "
                         "running every client in this process")


def _config_and_data(sub: Any) -> None:
    """config show, info and data inspect / augment: look before training."""
    c = sub.add_parser("config", help="config tools")
    csub = c.add_subparsers(dest="config_command", required=True)
    show = csub.add_parser("show", help="print the effective config")
    show.add_argument("config")
    show.add_argument("overrides", nargs="*")

    i = sub.add_parser("info", help="matched modules and parameter counts, without training")
    i.add_argument("config")
    i.add_argument("overrides", nargs="*")

    d = sub.add_parser("data", help="data tools")
    dsub = d.add_subparsers(dest="data_command", required=True)
    ins = dsub.add_parser("inspect", help="rendered examples with trained tokens marked, and stats")
    ins.add_argument("config")
    ins.add_argument("overrides", nargs="*")
    ins.add_argument("-n", type=int, default=3, help="examples to show")
    ins.add_argument("--no-color", action="store_true", help="mark trained tokens with [[ ]]")

    aug = dsub.add_parser("augment", help="write the training set with its augmented copies "
                                          "(data.augment) to a JSONL file")
    aug.add_argument("config")
    aug.add_argument("overrides", nargs="*")
    aug.add_argument("--out", type=Path, required=True, help="the JSONL file to write")
    aug.add_argument("--epoch", type=int, default=0, help="whose copies (they change per epoch)")


def _using_runs(sub: Any) -> None:
    """eval, predict, generate, chat and report: a trained run at work."""
    e = sub.add_parser("eval", help="score a trained run: accuracy, macro-F1 and confusion "
                                    "matrix; entity P/R/F1 per type for token classification")
    e.add_argument("run_dir", type=Path)
    e.add_argument("--data", help="a file in the training data's format (default: the dev set)")
    e.add_argument("--split", choices=["dev", "test"], default="dev")
    _adapter_options(e)
    e.add_argument("--task", help="multitask runs: the task to score (default: every task)")

    pr = sub.add_parser("predict", help="label and probability per text; the entities with "
                                        "their character spans for token classification")
    pr.add_argument("run_dir", type=Path)
    pr.add_argument("texts", nargs="*")
    pr.add_argument("--file", type=Path, help="one text per line")
    _adapter_options(pr)
    pr.add_argument("--task", help="multitask runs: the task to serve")

    x = sub.add_parser("explain", help="token attributions (integrated gradients, gradient x "
                                       "input, attention rollout) for a run's predictions; "
                                       "--faithfulness measures them against random")
    x.add_argument("run_dir", type=Path)
    x.add_argument("texts", nargs="*")
    x.add_argument("--file", type=Path, help="one text per line")
    x.add_argument("--label", help="classification: the label to explain (default: the "
                                   "predicted one)")
    x.add_argument("--method", choices=["ig", "grad_x_input", "rollout"], default="ig")
    x.add_argument("--steps", type=int, default=50, help="integrated gradients' path steps")
    x.add_argument("--json", type=Path, dest="json_out", help="write the explanations as JSON")
    x.add_argument("--html", type=Path, dest="html_out", help="write a self-contained HTML page")
    x.add_argument("--data", help="classification: a file read like the training data (or a "
                                  "catalog name) whose texts are explained, or scored with "
                                  "--faithfulness (default there: the dev set)")
    x.add_argument("--faithfulness", action="store_true", help="comprehensiveness, sufficiency "
                   "and deletion AOPC against a random ranking, on --data")
    x.add_argument("--limit", type=int, default=200, help="rows of --data to use")
    x.add_argument("--max-new-tokens", type=int, default=8, help="causal LM: tokens to "
                                                                  "generate and explain")
    x.add_argument("--no-color", action="store_true", help="scores in brackets, no colours")

    for name, helptext in (("generate", "generate text from a causal LM run or model"),
                           ("chat", "interactive chat with a causal LM run or model")):
        g = sub.add_parser(name, help=helptext)
        g.add_argument("target", help="a run directory, or a model name / directory")
        g.add_argument("--system", help="a system prompt")
        g.add_argument("--max-new-tokens", type=int, default=256)
        g.add_argument("--temperature", type=float, default=0.0, help="0: greedy")
        _adapter_options(g)
        if name == "generate":
            g.add_argument("--prompt")
            g.add_argument("--file", type=Path, help="JSONL of {prompt} or {messages}")
            g.add_argument("--out", type=Path, help="JSONL to write (default: print)")

    r = sub.add_parser("report", help="a self-contained HTML page (and Markdown) for a run, or "
                                      "one comparing several runs side by side")
    r.add_argument("run_dirs", nargs="+", type=Path)
    r.add_argument("--out", type=Path, help="folder to write to (default: RUN_DIR/report for "
                                            "one run, ./compare-report for several)")
    r.add_argument("--no-data", action="store_true", help="use the run's files alone: no "
                   "reloading the model, no data statistics or dev predictions")
    r.add_argument("--samples", type=int, default=10, help="example rows per sample table")


def _adapters(sub: Any) -> None:
    """merge and export: adapters into models, adapters into other formats."""
    m = sub.add_parser("merge", help="fold a run's adapter into its base (merge RUN_DIR OUT), or "
                                     "combine several LoRA adapters (merge A B ... --out OUT)")
    m.add_argument("sources", nargs="+", type=Path,
                   help="run directories or PEFT LoRA adapter directories (RUN_DIR OUT without --out)")
    m.add_argument("--out", type=Path, help="where the combined adapter (or model) goes")
    m.add_argument("--weights", type=float, nargs="+", help="one per adapter (default: 1/n each)")
    m.add_argument("--combine", default="linear", help="linear, cat, svd, ties, dare_linear, "
                   "dare_ties, magnitude_prune, or ties_svd / dare_linear_svd / dare_ties_svd / "
                   "magnitude_prune_svd")
    m.add_argument("--density", type=float, help="ties / dare / magnitude_prune: share kept")
    m.add_argument("--rank", type=int, help="svd merges: the result's rank (default: the largest)")
    m.add_argument("--majority-sign", choices=["total", "frequency"], default="total")
    m.add_argument("--seed", type=int, default=0, help="DARE's random masks")
    m.add_argument("--head", help="the adapter (directory name) whose task head to keep")
    m.add_argument("--into-base", action="store_true", help="write a merged full model instead")
    m.add_argument("--base", help="the base model, when the adapters name it differently")

    x = sub.add_parser("export", help="write a run in another format: lora (an AdaLoRA run as "
                                      "a plain LoRA adapter), hf (merged checkpoint), onnx "
                                      "(encoder runs, for ONNX Runtime), gguf (causal LMs, for "
                                      "llama.cpp)")
    x.add_argument("run_dir", type=Path)
    x.add_argument("--to", choices=["lora", "hf", "onnx", "gguf"], required=True)
    x.add_argument("out", type=Path)
    x.add_argument("--quantize", choices=["int8"], help="onnx: also write an int8 model "
                   "(dynamic quantization) and serve it")
    x.add_argument("--dtype", choices=["f32", "f16", "q8_0"],
                   help="gguf: the weight type (default: f16)")


def _studies(sub: Any) -> None:
    """cv and tune: many runs of one config."""
    cv = sub.add_parser("cv", help="K-fold cross-validation of a config: per-fold scores, "
                                   "mean and standard deviation")
    cv.add_argument("config")
    cv.add_argument("overrides", nargs="*")
    cv.add_argument("--folds", type=int, default=5)
    cv.add_argument("--keep", choices=["adapters", "none", "all"], default="adapters",
                    help="what each OUT/fold-k keeps besides its scores and logs: the adapter "
                         "(or model), nothing, or also checkpoints")
    cv.add_argument("--overwrite", action="store_true", help="replace an earlier output_dir")

    tu = sub.add_parser("tune", help="hyperparameter search (Optuna) over the config's search: "
                                     "section; resumes its study")
    tu.add_argument("config")
    tu.add_argument("overrides", nargs="*")
    tu.add_argument("--trials", type=int, required=True,
                    help="finished trials the study should hold (a resumed study runs the rest)")
    tu.add_argument("--cv", type=int, metavar="K", help="score each trial by K-fold cross-validation")
    tu.add_argument("--keep", choices=["adapters", "none", "all"], default="none",
                    help="what each OUT/trial-N keeps besides its scores and logs")
    tu.add_argument("--no-prune", action="store_true", help="let every trial run to the end")
    tu.add_argument("--overwrite", action="store_true", help="start a new study in output_dir")


def _serving(sub: Any) -> None:
    """serve: the models behind an OpenAI-compatible HTTP API."""
    s = sub.add_parser("serve", help="an OpenAI-compatible HTTP server (chat, completions, "
                                     "embeddings, classify, ner) for runs, adapters and models")
    s.add_argument("targets", nargs="+", metavar="TARGET", help="a run directory, a PEFT adapter "
                   "directory or a model name; adapters of one base share it")
    s.add_argument("--adapter", action="append", default=[], metavar="NAME=PATH",
                   help="serve another LoRA adapter (run or adapter directory) as model NAME; "
                        "repeatable")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default: this machine only)")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--api-key", help="require 'Authorization: Bearer KEY' (default: "
                                     "$TUNELAB_API_KEY; none: open)")
    s.add_argument("--admin-key", help="the key for POST/DELETE /v1/adapters (default: "
                                       "$TUNELAB_ADMIN_KEY; none: adapters are fixed)")
    s.add_argument("--max-batch", type=int, default=32, help="sequences decoded together")
    s.add_argument("--max-queue", type=int, default=256, help="sequences waiting; more: 429")
    s.add_argument("--max-concurrent", type=int, default=64, help="requests at once; more: 429")
    s.add_argument("--batch-window-ms", type=float, default=5.0,
                   help="how long an idle server waits for more requests to batch")
    s.add_argument("--max-body-bytes", type=int, default=1 << 20, help="larger bodies: 413")


def _web_ui(sub: Any) -> None:
    """ui: the web app over a runs directory (docs/ui.md)."""
    u = sub.add_parser("ui", help="a web app to start, watch, compare and try runs (training "
                                  "runs as separate `tunelab train` processes)")
    u.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: "
                   "this machine only; another needs --auth)")
    u.add_argument("--port", type=int, default=7860)
    u.add_argument("--runs-dir", type=Path, default=Path("runs"),
                   help="where runs are listed and new runs are written (default: runs)")
    u.add_argument("--auth", help="user:password (HTTP Basic) or a token (Bearer); also "
                   "TUNELAB_UI_AUTH")
    u.add_argument("--max-upload-mb", type=float, default=50.0,
                   help="largest data file the page may upload (default 50)")


def _compress(sub: Any) -> None:
    """prune: a smaller model from a trained run."""
    pr = sub.add_parser("prune", help="remove a run's least important attention heads, FFN "
                                      "neurons and layers (measured on its training data), "
                                      "then fine-tune briefly to recover")
    pr.add_argument("run_dir", type=Path)
    pr.add_argument("out", type=Path, help="the pruned model directory to write")
    pr.add_argument("--heads", type=float, help="share of each layer's attention heads to "
                    "remove (Llama-style attention whose head size is head_dim: Llama, Qwen2, "
                    "Mistral; not BERT)")
    pr.add_argument("--ffn", type=float, help="share of each layer's FFN neurons to remove")
    pr.add_argument("--layers", type=int, help="how many layers to drop")
    pr.add_argument("--examples", type=int, default=256,
                    help="training examples the importance is measured on")
    pr.add_argument("--recover-steps", type=int, default=100,
                    help="steps of the recovery fine-tune into OUT/recovered (0: none)")


def _adapter_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--add-adapter", action="append", default=[], metavar="[NAME=]PATH",
                   help="load another LoRA adapter (run or adapter directory); repeatable")
    p.add_argument("--adapter", metavar="NAME", help="the adapter to use (base: none; default: "
                                                     "the run's own, named after its directory)")

