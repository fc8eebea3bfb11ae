"""Do loaded adapters slow base-model requests? Two tunelab serve engines in one process,
one with 4 LoRA adapters loaded and one without, take the same base-only load (64 requests,
32 clients, 32 greedy tokens) in alternating order, so drift on the machine hits both alike.

    python bench/serve_adapter_cost.py [--pairs 4] [--adapters DIR]

Without --adapters it builds the 4 adapters the way bench/serve_load.py does. Prints output
tokens/s per run, mean +- SD and the ratio; BENCHMARKS.md quotes it under "Serving".
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_load import build_adapters  # noqa: E402

from tunelab.models import load_causal_lm, load_tokenizer  # noqa: E402
from tunelab.models.resolve import resolve  # noqa: E402
from tunelab.serve.engine import Engine  # noqa: E402
from tunelab.serve.protocol import GenRequest  # noqa: E402


async def load(engine: Engine, prompts: list[list[int]], clients: int, tokens: int) -> float:
    """Output tokens/s of all `prompts` against the base, at most `clients` at once."""
    gate, out = asyncio.Semaphore(clients), 0

    async def one(ids: list[int]) -> None:
        nonlocal out
        async with gate:
            async for event in engine.submit(GenRequest("base", ids, max_tokens=tokens,
                                                        temperature=0.0)):
                out += len(event.token_ids)

    start = time.perf_counter()
    await asyncio.gather(*(one(p) for p in prompts))
    return out / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=4)
    p.add_argument("--adapters", type=Path, help="a folder of adapter folders a0..a3")
    args = p.parse_args()
    base = resolve("smollm2")
    tok = load_tokenizer(base)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.adapters or Path(tmp)
        adapters = {f"a{i}": folder / f"a{i}" for i in range(4)} if args.adapters \
            else build_adapters(base, 4, 0, folder)
        engines = {"none loaded": Engine(load_causal_lm(base), tok, "base"),
                   "4 loaded": Engine(load_causal_lm(base), tok, "base")}
        for name, path in adapters.items():
            engines["4 loaded"].add_adapter(name, path)
    prompts = [tok(tok.apply_chat_template([{"role": "user", "content": f"Write a sentence about "
                                             f"the number {i}."}], tokenize=False,
                                           add_generation_prompt=True),
                   add_special_tokens=False)["input_ids"] for i in range(64)]
    runs: dict[str, list[float]] = {name: [] for name in engines}
    for engine in engines.values():
        engine.start()
    for k in range(args.pairs):  # none, 4, 4, none, ...: no order bias
        for name in (list(engines) if k % 2 == 0 else list(engines)[::-1]):
            runs[name].append(asyncio.run(load(engines[name], prompts, 32, 32)))
            print(f"{name}: {runs[name][-1]:.1f} out tok/s", flush=True)
    for engine in engines.values():
        engine.shutdown()
    for name, values in runs.items():
        print(f"| base-only load, adapters {name} | {statistics.mean(values):.1f} +- "
              f"{statistics.stdev(values):.1f} | {', '.join(f'{v:.1f}' for v in values)} |")
    ratio = statistics.mean(runs["4 loaded"]) / statistics.mean(runs["none loaded"])
    print(f"4 loaded / none loaded: {ratio:.3f}x")


if __name__ == "__main__":
    main()
