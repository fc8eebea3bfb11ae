"""How faithful `tunelab explain`'s attributions are on the `make demo` SST-2 model
(MiniLM + LoRA), and what one explanation costs on this CPU.

    python bench/explain.py [--run runs/sst2-lora] [--n 200] [--steps 50] [--no-write]

On the first --n SST-2 dev sentences (../shared/data/sst2/dev.tsv, in file order), each
method (integrated gradients with --steps Gauss-Legendre steps and a [PAD] baseline, gradient
x input, attention rollout) explains the predicted label's probability; a seeded random word
ranking is the baseline. Per method: ERASER comprehensiveness (higher is better) and
sufficiency (lower is better), AOPC over the 1/5/10/20/50% bins; the deletion AOPC (words
erased in ranked order at 0, 10, ..., 100%; higher is better); comprehensiveness as a
multiple of random's; seconds per explanation (attribution + word sums for one sentence,
mean and p90, after a warm-up; the erasure passes are not timed); IG's completeness error.
Issue 21's goals: IG comprehensiveness >= 2x random, and one explanation under 1 s.
Writes its section into BENCHMARKS.md unless --no-write.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, machine, update_benchmarks

TITLE = "## Explanations: faithfulness of IG, gradient x input and attention rollout (CPU)"
METHODS = ["ig", "grad_x_input", "rollout"]


def dev_sentences(n: int) -> list[str]:
    from tunelab.data import data_dir

    path = data_dir() / "sst2" / "dev.tsv"
    if not path.is_file():
        print(f"{path}: SST-2 dev not found (set TUNELAB_DATA_DIR to ../shared/data)",
              file=sys.stderr)
        sys.exit(2)
    rows = path.read_text(encoding="utf-8").splitlines()[1:]
    return [r.split("\t")[0] for r in rows if r.strip()][:n]


def one_thread_seconds(model, tokenizer, info, texts: list[str], steps: int) -> dict[str, float]:
    """Mean seconds per explanation at 1 torch thread: with other jobs on the machine, a
    2-thread pool waits on a descheduled peer and can run several times slower."""
    import statistics

    import torch

    from tunelab.explain.attribute import attribute, class_target
    from tunelab.explain.encode import encode_text
    from tunelab.explain.words import word_scores

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = {}
    for method in METHODS:
        times = []
        for text in texts:
            enc = encode_text(tokenizer, info, text)
            t0 = time.perf_counter()
            word_scores(enc, attribute(model, enc, class_target(0, "x"), method, steps,
                                       tokenizer.pad_token_id).tokens)
            times.append(time.perf_counter() - t0)
        out[method] = statistics.mean(times)
    torch.set_num_threads(threads)
    return out


def table_lines(table: dict[str, dict[str, float]]) -> list[str]:
    rand = table["random"]["comprehensiveness"]
    lines = [("| method | comprehensiveness ↑ | sufficiency ↓ | deletion AOPC ↑ | "
              "compr. / random | s per explanation (mean / p90) |"),
             "|---|---|---|---|---|---|"]
    for name in [*METHODS, "random"]:
        r = table[name]
        secs = (f"{r['seconds']:.3f} / {r['seconds_p90']:.3f}" if "seconds" in r else "–")
        ratio = f"{r['comprehensiveness'] / rand:.1f}x" if rand > 0 else "–"
        lines.append(f"| {name} | {r['comprehensiveness']:.4f} | {r['sufficiency']:.4f} | "
                     f"{r['deletion_aopc']:.4f} | {ratio} | {secs} |")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, default=Path("runs/sst2-lora"))
    p.add_argument("--n", type=int, default=200, help="dev sentences")
    p.add_argument("--steps", type=int, default=50, help="integrated gradients' steps")
    p.add_argument("--no-write", action="store_true", help="print only, leave BENCHMARKS.md")
    args = p.parse_args()
    run = args.run if args.run.is_absolute() or args.run.exists() else REPO / args.run
    if not (run / "run.json").is_file():
        print(f"{args.run}: no trained run there. Make the demo run first: `make demo` (writes "
              "runs/sst2-lora), or pass --run DIR of a classification run.", file=sys.stderr)
        sys.exit(2)

    from tunelab.explain.explainers import default_baseline, explain_label
    from tunelab.explain.faithfulness import faithfulness_table
    from tunelab.runs.trained import load_trained

    started = time.perf_counter()
    command = "python bench/explain.py " + " ".join(sys.argv[1:])
    model, tokenizer, info = load_trained(run)
    texts = dev_sentences(args.n)
    for method in METHODS:  # warm-up: captum's first call, kernel selection
        explain_label(model, tokenizer, info, texts[0], method, args.steps)
    table = faithfulness_table(model, tokenizer, info, texts, METHODS, args.steps,
                               default_baseline(tokenizer))
    single = one_thread_seconds(model, tokenizer, info, texts[:20], args.steps)
    elapsed = time.perf_counter() - started
    ig, rand = table["ig"], table["random"]
    if rand["comprehensiveness"] > 0:
        ratio = ig["comprehensiveness"] / rand["comprehensiveness"]
        compr = f"{'met' if ratio >= 2 else 'NOT met'} ({ratio:.1f}x)"
    else:  # a few sentences can leave random's mean at or below 0: no ratio to take
        compr = (f"{'met' if ig['comprehensiveness'] > 0 else 'NOT met'} (random's is "
                 f"{rand['comprehensiveness']:.4f} <= 0, IG's {ig['comprehensiveness']:.4f})")
    goals = (f"Goals (issue 21): IG comprehensiveness >= 2x random: {compr}; one explanation "
             "under 1 s: "
             f"{'met' if ig['seconds'] < 1 else 'NOT met'} (IG mean {ig['seconds']:.3f} s, p90 "
             f"{ig['seconds_p90']:.3f} s, {args.steps} steps). IG completeness error "
             f"|sum(attributions) - (p(x) - p(baseline))|: mean {ig['completeness_error']:.2e}, "
             f"max {ig['completeness_error_max']:.2e}. At 1 thread (first {min(20, len(texts))} "
             "sentences, a check on contention): " + ", ".join(
                 f"{m} {s:.3f} s" for m, s in single.items()) + " per explanation.")
    section = "\n".join([
        TITLE, "",
        f"`{command.strip()}` ({datetime.date.today().isoformat()}, {elapsed / 60:.1f} min wall)",
        "",
        (f"Machine: {machine()}. Model: {run.name} (MiniLM + LoRA on SST-2), the first "
         f"{len(texts)} dev sentences, each method explaining the predicted label's probability; "
         "random: a seeded random word ranking. ERASER bins 1/5/10/20/50%; deletion AOPC over "
         "0-100% of words erased in 10% steps (erased words' sub-tokens dropped, [CLS]/[SEP] "
         "kept). Timings move a lot when other jobs share the CPU; compare rows of one run."),
        "", *table_lines(table), "", goals, ""])
    print(section)
    if not args.no_write:
        update_benchmarks(section)
        print(f"wrote the section into {REPO / 'BENCHMARKS.md'}")


if __name__ == "__main__":
    main()
