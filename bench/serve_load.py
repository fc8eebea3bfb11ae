"""Benchmark: `tunelab serve` with 4 LoRA adapters vs `transformers serve --continuous-batching`.

Why: an adapter is only useful once an application can call it, and the server a user already
has (transformers serve) serves one base model and no adapters. With the official `openai`
client over loopback this measures tunelab serve with requests spread over 4 adapters of
SmolLM2-135M-Instruct, against its own base-only load and transformers serve on the base:
requests/s, output tokens/s, p50/p95 latency and time to first token, failures, peak RSS; and,
one request each, whether `n`, `stop` and bad `temperature` / `max_tokens` are honoured or
refused. Each server runs in its own process, one after another, and is always stopped.

    python bench/serve_load.py [--requests 64] [--concurrency 1 8 32] [--max-tokens 32]
        [--adapters 4] [--seed 0 | --seeds 0 1 2] [--no-write] [--skip-reference]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import openai

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, device_name, machine, update_benchmarks  # noqa: E402

VENV_BIN = Path(sys.executable).parent
ALPACA = REPO.parent / "shared" / "data" / "alpaca_demo" / "alpaca_en_demo.json"
BUILT_IN = ["Give three tips for staying healthy.", "What is the capital of France?",
            "Write a haiku about autumn.", "Why is the sky blue?"]
SCALE = 0.03  # std of A and B: outputs differ from the base (and each other) yet stay fluent
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class Server:
    name: str
    proc: subprocess.Popen
    url: str


def prompts(n: int, seed: int) -> list[str]:
    """`n` short instructions (Alpaca demo, en, without an input field), seeded."""
    pool = BUILT_IN
    if ALPACA.is_file():
        rows = json.loads(ALPACA.read_text(encoding="utf-8"))
        pool = [r["instruction"] for r in rows if not r.get("input") and len(r["instruction"]) < 200]
    return random.Random(seed).choices(pool, k=n) if n > len(pool) else random.Random(seed).sample(pool, n)


def build_adapters(base: Path, count: int, seed: int, root: Path) -> dict[str, Path]:
    """`count` PEFT LoRA adapters (r16, alpha 32, all linear layers), A and B seeded small
    random values so every adapter's outputs differ from the base's and from each other."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base), LoraConfig(
        r=16, lora_alpha=32, lora_dropout=0.0, target_modules=TARGETS, task_type="CAUSAL_LM",
        base_model_name_or_path=str(base)))
    out = {}
    for i in range(count):
        gen = torch.Generator().manual_seed(seed * 1000 + i)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_" in name:
                    p.copy_(torch.randn(p.shape, generator=gen) * SCALE)
        out[f"a{i}"] = root / f"a{i}"
        model.save_pretrained(out[f"a{i}"])
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(name: str, cmd: list[str], port: int, work: Path, timeout: float = 900) -> Server:
    log = work / f"{name.split()[0]}.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    with log.open("w") as f:
        try:
            proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True)
        except OSError as e:  # no such command
            raise RuntimeError(f"{name}: {e}") from e
    server, t0 = Server(name, proc, f"http://127.0.0.1:{port}"), time.monotonic()
    try:
        while time.monotonic() - t0 < timeout and proc.poll() is None:
            try:
                with urllib.request.urlopen(server.url + "/health", timeout=2) as r:
                    if r.status == 200:
                        return server
            except OSError:
                time.sleep(1)
    except BaseException:
        stop(server)
        raise
    stop(server)
    raise RuntimeError(f"{name}: no answer on /health (exit code {proc.returncode}):\n"
                       f"{log.read_text()[-3000:]}")


def stop(server: Server) -> None:
    """SIGTERM the server's process group (it started a session of its own), then SIGKILL."""
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(server.proc.pid, sig)
            server.proc.wait(wait)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def peak_rss_mb(pid: int, reset: bool = False) -> float:
    """Sum of VmHWM (peak resident set) over the server and its children (transformers serve
    decodes in a child process); `reset`: restart the peaks (Linux: 5 > clear_refs) first."""
    try:
        import psutil

        pids = [pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))]
    except Exception:  # noqa: BLE001 (no psutil, or the process is gone: /proc of pid alone)
        pids = [pid]
    total = 0
    for p in pids:
        try:
            if reset:
                Path(f"/proc/{p}/clear_refs").write_text("5")
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        total += next((int(line.split()[1]) for line in status.splitlines()
                       if line.startswith("VmHWM:")), 0)
    return total / 1024


async def one(client: openai.AsyncOpenAI, model: str, prompt: str, max_tokens: int) -> dict:
    t0 = time.perf_counter()
    ttft, tokens, chunks = None, None, 0
    try:
        stream = await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": prompt}], max_tokens=max_tokens,
            temperature=0, stream=True, stream_options={"include_usage": True})
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                chunks += 1
                ttft = ttft if ttft is not None else time.perf_counter() - t0
            if chunk.usage is not None:
                tokens = chunk.usage.completion_tokens
    except Exception as e:  # noqa: BLE001 (any failure is a failed request; a few are shown)
        return {"error": f"{type(e).__name__}: {e}"[:200]}
    return {"latency": time.perf_counter() - t0, "ttft": ttft if ttft is not None else float("nan"),
            "tokens": tokens if tokens is not None else chunks, "usage": tokens is not None}


async def load(url: str, models: list[str], texts: list[str], concurrency: int,
               max_tokens: int) -> tuple[float, list[dict]]:
    gate = asyncio.Semaphore(concurrency)
    async with openai.AsyncOpenAI(base_url=url + "/v1", api_key="bench", max_retries=0,
                                  timeout=1800) as client:
        async def bounded(i: int, text: str) -> dict:
            async with gate:
                return await one(client, models[i % len(models)], text, max_tokens)
        t0 = time.perf_counter()
        results = await asyncio.gather(*(bounded(i, t) for i, t in enumerate(texts)))
        return time.perf_counter() - t0, results


def measure(server: Server, label: str, models: list[str], texts: list[str], concurrency: int,
            max_tokens: int) -> dict[str, float]:
    peak_rss_mb(server.proc.pid, reset=True)
    wall, results = asyncio.run(load(server.url, models, texts, concurrency, max_tokens))
    ok = [r for r in results if "error" not in r]
    for r in [r for r in results if "error" in r][:3]:
        print(f"  failed: {r['error']}", flush=True)
    if any(not r["usage"] for r in ok):
        print(f"  {server.name}: no usage in the stream; counted content chunks", flush=True)
    pct = (lambda key, q: statistics.quantiles([r[key] for r in ok], n=100, method="inclusive")[q - 1]
           if len(ok) > 1 else (ok[0][key] if ok else float("nan")))
    row = {"req/s": len(ok) / wall, "out tok/s": sum(r["tokens"] for r in ok) / wall,
           "p50 latency": pct("latency", 50), "p95 latency": pct("latency", 95),
           "p50 TTFT": pct("ttft", 50), "p95 TTFT": pct("ttft", 95),
           "failed": len(results) - len(ok), "peak RSS (MB)": peak_rss_mb(server.proc.pid)}
    print(f"  {server.name} | {label} | {concurrency} | " + ", ".join(
        f"{k} {v:.2f}" for k, v in row.items()), flush=True)
    return row


def honouring(url: str, model: str) -> dict[str, str]:
    """One request each: n=2, stop, temperature=-1, max_tokens=-5."""
    client = openai.OpenAI(base_url=url + "/v1", api_key="bench", max_retries=0, timeout=600)
    msgs = [{"role": "user", "content": "List the days of the week."}]

    def ask(check: Callable[[object], str], **kw: object) -> str:
        try:
            return check(client.chat.completions.create(model=model, messages=msgs, **kw))
        except openai.APIStatusError as e:
            return f"refused ({e.status_code})"
        except Exception as e:  # noqa: BLE001 (recorded in the table)
            return f"error: {type(e).__name__}"[:60]

    words = ask(lambda r: r.choices[0].message.content or "", max_tokens=16, temperature=0).split()
    stop_at = words[len(words) // 2] if len(words) > 2 else "the"
    return {
        "n=2": ask(lambda r: f"{len(r.choices)} choice{'s' * (len(r.choices) != 1)}", n=2,
                   max_tokens=8, temperature=0),
        f"stop={stop_at!r}": ask(lambda r: "ignored" if stop_at in (r.choices[0].message.content or "")
                                 else "honoured", stop=[stop_at], max_tokens=16, temperature=0),
        "temperature=-1": ask(lambda r: "accepted (200)", temperature=-1, max_tokens=4),
        "max_tokens=-5": ask(lambda r: "accepted (200)", max_tokens=-5),
    }


def run_seed(args: argparse.Namespace, seed: int, base: Path, work: Path) -> tuple[dict, dict, str]:
    """One seed: every load on tunelab serve, then on transformers serve; rows keyed
    (server, load, clients), the parameter checks per server, and a note if the reference
    server would not start."""
    texts, rows, params, note = prompts(args.requests, seed), {}, {}, ""
    adapters = build_adapters(base, args.adapters, seed, work / f"adapters-{seed}")
    port = free_port()
    cmd = [str(VENV_BIN / "tunelab"), "serve", str(base), *(f"--adapter={k}={v}" for k, v in adapters.items()),
           "--host", "127.0.0.1", "--port", str(port)]
    loads = {f"{args.adapters} adapters": list(adapters), "base only": [str(base)]}
    top = [max(args.concurrency)]
    bare = [str(VENV_BIN / "tunelab"), "serve", str(base), "--host", "127.0.0.1", "--port"]
    # the same base load on a server without adapters: are base requests slowed by them?
    servers = [("tunelab", cmd, port, loads, args.concurrency),
               ("tunelab", [*bare, str(free_port())], None, {BARE: [str(base)]}, top)]
    if not args.skip_reference:  # it serves the directory it is given, under its path as model id
        port = free_port()
        servers.append(("transformers", [str(VENV_BIN / "transformers"), "serve", "--continuous-batching",
                                         "--host", "127.0.0.1", "--port", str(port), str(base)],
                        port, {"base only": [str(base)]}, args.concurrency))
    for name, cmd, port, model_sets, clients in servers:
        port = port or int(cmd[-1])
        print(f"seed {seed}: starting {name}: {' '.join(cmd)}", flush=True)
        try:
            server = start(name, cmd, port, work)
        except RuntimeError as e:
            if name == "tunelab":
                raise
            note = f"transformers serve did not run here: {' '.join(str(e).split())[:300]}"
            print(note, flush=True)
            continue
        try:
            warm = list(dict.fromkeys(m for ms in model_sets.values() for m in ms))  # each id once
            asyncio.run(load(server.url, warm, texts[:1] * len(warm), 1, args.max_tokens))
            for c in clients:
                for label, models in model_sets.items():
                    rows[(name, label, c)] = measure(server, label, models, texts, c, args.max_tokens)
            if BARE not in model_sets:
                params[name] = honouring(server.url, str(base))
        finally:
            stop(server)
    return rows, params, note


BARE = "base only, no adapters loaded"


def fmt(values: list[float], digits: int = 2) -> str:
    mean = statistics.fmean(values)
    return f"{mean:.{digits}f}" + (f" ± {statistics.stdev(values):.{digits}f}" if len(values) > 1 else "")


def table(args: argparse.Namespace, seeds: list[int], runs: list[tuple[dict, dict, str]]) -> str:
    import transformers

    top, n = max(args.concurrency), args.adapters
    keys = [k for k in runs[0][0] if all(k in r[0] for r in runs)]

    def get(key: tuple, metric: str, digits: int = 2) -> str:
        return fmt([r[0][key][metric] for r in runs], digits)

    def ratio(a: tuple, b: tuple, metric: str) -> str:
        return fmt([r[0][a][metric] / r[0][b][metric] for r in runs])

    seed_opt = f"--seeds {' '.join(map(str, seeds))}" if len(seeds) > 1 else f"--seed {seeds[0]}"
    cmd = (f"python bench/serve_load.py --requests {args.requests} --concurrency "
           f"{' '.join(map(str, args.concurrency))} --max-tokens {args.max_tokens} --adapters {n} "
           f"{seed_opt}" + (" --skip-reference" if args.skip_reference else ""))
    spread = f"Mean ± standard deviation over seeds {seeds}." if len(seeds) > 1 else \
        f"One seed ({seeds[0]}); --seeds repeats it all per seed."
    notes = "".join(f" {note}" for note in dict.fromkeys(r[2] for r in runs) if note)
    measured = (f"Measured {date.today()} on {machine()}; transformers {transformers.__version__}, "
                f"openai {openai.__version__}. Command: `{cmd}`.")
    how = (f"SmolLM2-135M-Instruct (fp32) with {n} LoRA adapters (r16, alpha 32, all linear "
           f"layers, seeded random A and B). {args.requests} streamed chat requests per load "
           f"(seeded Alpaca demo instructions, temperature 0, max_tokens {args.max_tokens}, "
           "include_usage) from the official openai AsyncOpenAI client over loopback, at most "
           f"`clients` in flight; '{n} adapters': round-robin over the adapter ids. Each model id "
           "gets one unmeasured warm-up request first. TTFT: until the first content chunk; out "
           "tok/s: completion tokens (usage) / wall time; peak RSS: VmHWM of the server process "
           f"and its children, reset before each load. {spread}{notes}")
    head = ("| server | load | clients | req/s | out tok/s | p50 / p95 latency (s) | "
            "p50 / p95 TTFT (s) | failed | peak RSS (MB) |")
    lines = [f"## Serving: tunelab serve vs transformers serve ({device_name()})", "", measured, "",
             how, "", head, "|---|---|---|---|---|---|---|---|---|"]
    lines += [(f"| {k[0]} serve | {k[1]} | {k[2]} | {get(k, 'req/s')} | {get(k, 'out tok/s', 1)} | "
               f"{get(k, 'p50 latency')} / {get(k, 'p95 latency')} | {get(k, 'p50 TTFT')} / "
               f"{get(k, 'p95 TTFT')} | {sum(r[0][k]['failed'] for r in runs):.0f} | "
               f"{get(k, 'peak RSS (MB)', 0)} |") for k in keys]
    mixed, solo, ref = [(server, load, top) for server, load in (
        ("tunelab", f"{n} adapters"), ("tunelab", "base only"), ("transformers", "base only"))]
    lines += ["", (f"At {top} client{'s' * (top != 1)}: tunelab's {n}-adapter load / its base-only load, output "
                   f"tokens/s: {ratio(mixed, solo, 'out tok/s')}x (goal: at least 0.65).")]
    bare = ("tunelab", BARE, top)
    if bare in keys:
        lines[-1] += (f" Base-only requests with {n} adapters loaded / with none loaded: output "
                      f"tokens/s {ratio(solo, bare, 'out tok/s')}x (goal: about 1).")
    if ref in keys:
        lines[-1] += (f" tunelab {n} adapters / transformers serve base only: output tokens/s "
                      f"{ratio(mixed, ref, 'out tok/s')}x (goal: at least 1), p95 latency "
                      f"{ratio(mixed, ref, 'p95 latency')}x (goal: at most 1).")
    params = runs[0][1]
    checks = list(params["tunelab"])
    lines += ["", "Parameters, one request each (first seed): honoured or refused, never ignored.",
              "", f"| server | {' | '.join(checks)} |", "|---|" + "---|" * len(checks)]
    lines += [f"| {name} serve | {' | '.join(p.values())} |" for name, p in params.items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=64)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--adapters", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", type=int, nargs="+", help="repeat everything per seed (mean, spread)")
    p.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    p.add_argument("--skip-reference", action="store_true", help="tunelab serve only")
    args = p.parse_args()
    if args.adapters < 1 or args.requests < 1 or min(args.concurrency) < 1:
        p.error("--adapters, --requests and --concurrency take numbers of at least 1")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the finally blocks stop servers
    from tunelab.models.resolve import resolve

    base, seeds = resolve("smollm2"), args.seeds or [args.seed]
    with tempfile.TemporaryDirectory(prefix="tunelab-bench-serve-") as tmp:
        runs = [run_seed(args, seed, base, Path(tmp)) for seed in seeds]
    section = table(args, seeds, runs)
    print(section)
    if not args.no_write:
        update_benchmarks(section)


if __name__ == "__main__":
    main()
