"""A/B: packed SFT steps with a dense T x T block mask vs per-example (varlen) attention.

The sft_vs_trl workload (SmolLM2-135M-Instruct, LoRA r16 on all linear layers, Alpaca,
batch 4 packed into one row) on the same packed batches, both attention paths in one
process, alternating per batch (which goes first alternates too), so a shared CPU slows both
alike. A step is forward, backward and the optimizer step. Prints real tokens/s of each.

    python bench/packed_attention_ab.py [--steps 8] [--examples 100] [--max-length 256]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sft_vs_trl import BATCH, LR, run_config  # noqa: E402


def main() -> None:
    import torch

    from tunelab import methods
    from tunelab.kernels.varlen_attention import NAME
    from tunelab.recipes.causal_lm import causal_lm

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--examples", type=int, default=100)
    p.add_argument("--eval", type=int, default=40)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--batch", type=int, default=BATCH)
    args = p.parse_args()
    cfg = run_config(args, Path("/tmp/tunelab-packed-ab"), packing=True)
    s = causal_lm(cfg, print)
    methods.apply(s.model, cfg.method)
    s.task.choose_batches(s.model, cfg, print)
    model = s.model.train()
    opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=LR)
    plans = s.task.plan_batches(s.train.lengths(), args.batch, 0, 0, bucket=False)
    seconds = {"dense": 0.0, "varlen": 0.0}
    cpu = dict(seconds)  # CPU time of this process: robust to other jobs on a shared machine
    tokens = 0
    for step, index in enumerate(plans[: args.steps + 1]):
        batch = s.task.collate(s.train, index)
        order = ["dense", "varlen"] if step % 2 else ["varlen", "dense"]
        for path in order:
            model.set_attn_implementation("sdpa" if path == "dense" else NAME)
            t0, c0 = time.perf_counter(), time.process_time()
            opt.zero_grad()
            s.task.loss_sum(model, batch).div(s.task.units(s.train, index)).backward()
            opt.step()
            if step:  # the first batch warms both paths up
                seconds[path] += time.perf_counter() - t0
                cpu[path] += time.process_time() - c0
        if step:
            tokens += batch["input_ids"].numel()
            print(f"step {step}: T={batch['input_ids'].shape[1]}, "
                  f"{len(batch['cu_seq_lens']) - 1} examples", flush=True)
    for path, sec in seconds.items():
        print(f"{path}: {tokens} tokens in {sec:.1f} s = {tokens / sec:.1f} real tokens/s "
              f"(CPU time {cpu[path]:.1f} s = {tokens / cpu[path]:.1f} tokens per CPU-second)")
    print(f"varlen / dense: {seconds['dense'] / seconds['varlen']:.2f}x wall, "
          f"{cpu['dense'] / cpu['varlen']:.2f}x CPU time ({torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
