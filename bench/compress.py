"""What compression costs and buys on this CPU: the `make demo` SST-2 model (MiniLM + LoRA) as
PyTorch fp32 (adapter merged), tunelab's ONNX fp32 and ONNX int8 exports, and the naive
int8 a user gets today with a short script (torch.onnx.export of the merged model, then
ONNX Runtime quantize_dynamic on every weight with its default settings), all in one run.

    python bench/compress.py [--run runs/sst2-lora] [--repeats 3] [--latency-n 200] [--no-write]

For each model: SST-2 dev accuracy over every dev example (the run's tokenization and
max_length), file size (PyTorch: the merged model's parameters in bytes; ONNX: the .onnx
file and any external-data file beside it), single-example latency p50 / p90 over
--latency-n dev sentences one at a time after a warm-up (tokenization done beforehand, not
timed), and batch-32 throughput over the whole dev set (median of --repeats passes; models
interleaved per pass so drift on the machine hits all alike). torch threads and ONNX Runtime
intra-op threads are both the machine's core count. The distilled student, its labels-only
twin and the pruned model are trained runs (bench/compress_extra.py says how to make each);
SmolLM2's GGUF q8_0 export follows the table. Writes its section into BENCHMARKS.md unless
--no-write.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, machine, update_benchmarks
from compress_extra import RUNS, gguf_section, trained_rows

TITLE = "## Compression: PyTorch vs ONNX fp32 vs ONNX int8 (CPU)"
BATCH = 32
WARMUP = 10


def latencies(model, encodings: list) -> list[float]:
    """Milliseconds per call of `model` on each encoding, one at a time, after warm-up calls."""
    for enc in encodings[:WARMUP]:
        model(**enc)
    times = []
    for enc in encodings:
        t0 = time.perf_counter()
        model(**enc)
        times.append((time.perf_counter() - t0) * 1e3)
    return times

def cpu_flags() -> str:
    flags: set[str] = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    return ", ".join(f"{f} {'yes' if f in flags else 'no'}"
                     for f in ("avx512_vnni", "avx512f", "avx2"))


def mb(nbytes: float) -> float:
    return nbytes / 1e6


def onnx_size(path: Path) -> float:
    """The .onnx file plus any external-data file written beside it, in MB."""
    files = [path] + [p for p in path.parent.iterdir()
                      if p != path and p.name.startswith(path.name) and p.is_file()]
    return mb(sum(p.stat().st_size for p in files))


class _Logits:
    """The PyTorch model under inference_mode, called like the ONNX sessions."""

    def __init__(self, model):
        self.model = model

    def __call__(self, **enc):
        import torch

        with torch.inference_mode():
            return self.model(**enc)


def naive_int8(model, tokenizer, info, out: Path) -> Path:
    """What a user writes today: torch.onnx.export of the merged model, then quantize_dynamic
    with its defaults (every quantizable weight, per-tensor, no exclusions)."""
    import torch
    from onnxruntime.quantization import quantize_dynamic

    from tunelab.export.onnx import _Logits as Wrap
    from tunelab.export.onnx import encode

    example = encode(tokenizer, info, [("an example text of some length", None),
                                       ("another one", None)])
    names = list(example)
    fp32 = out / "naive.onnx"
    with torch.no_grad():
        torch.onnx.export(Wrap(model).eval(), tuple(example[n] for n in names), str(fp32),
                          input_names=names, output_names=["logits"],
                          dynamic_axes={n: {0: "batch", 1: "sequence"} for n in names})
    q = out / "naive.int8.onnx"
    quantize_dynamic(str(fp32), str(q))
    return q


def smaller(results: dict[str, dict], pt: dict) -> str:
    """The distilled and pruned rows against the demo model (PyTorch fp32 both): the
    issue's goal is the student within 2 points at about 2x the speed."""
    out = []
    for key, r in results.items():
        if key not in RUNS:
            continue
        d, x = (r["accuracy"] - pt["accuracy"]) * 100, pt["p50"] / r["p50"]
        out.append(f"{key}: {d:+.2f} points, {x:.2f}x the single-example speed and "
                   f"{r['throughput'] / pt['throughput']:.2f}x the batch-32 throughput of the "
                   f"PyTorch fp32 demo model, {r['size']:.1f} MB")
    student = results.get(list(RUNS)[0])
    if student:
        d, x = (student["accuracy"] - pt["accuracy"]) * 100, pt["p50"] / student["p50"]
        t = student["throughput"] / pt["throughput"]
        fast = [f"{name} ({v:.2f}x)" for name, v in
                (("batch-32 throughput", t), ("single-example p50", x)) if v >= 1.8]
        out.append(f"the distilled-student goal (within 2 points at ~2x speed, read as >= 1.8x) "
                   f"is {'met' if d >= -2 and fast else 'NOT met'} ({d:+.2f} points; ~2x on "
                   f"{' and '.join(fast) if fast else 'neither measure'}; {t:.2f}x batch-32 "
                   f"throughput, {x:.2f}x single-example p50)")
    return ("Smaller models: " + "; ".join(out) + ".") if out else ""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, default=Path("runs/sst2-lora"))
    p.add_argument("--repeats", type=int, default=3, help="timed batch-32 passes over dev")
    p.add_argument("--latency-n", type=int, default=200, help="dev sentences timed one by one")
    p.add_argument("--no-write", action="store_true", help="print only, leave BENCHMARKS.md")
    p.add_argument("--student", type=Path, help="the distilled run (default runs/sst2-student)")
    p.add_argument("--no-gguf", action="store_true", help="leave out the SmolLM2 GGUF part")
    args = p.parse_args()
    run = args.run if args.run.is_absolute() or args.run.exists() else REPO / args.run
    if not (run / "run.json").is_file():
        print(f"{args.run}: no trained run there. Make the demo run first: `make demo` (writes "
              "runs/sst2-lora), or pass --run DIR of a classification run.", file=sys.stderr)
        sys.exit(2)

    import torch

    from tunelab.commands.export import export_run
    from tunelab.data.splits import load_splits
    from tunelab.export.onnx import INT8_FILE, KEEP_FP32, MODEL_FILE, encode
    from tunelab.methods.peft_format import merge
    from tunelab.runs.layout import load_run_config
    from tunelab.runs.onnx_model import ONNX_INFO, OnnxModel
    from tunelab.runs.trained import load_trained

    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    started = time.perf_counter()
    command = "python bench/compress.py " + " ".join(sys.argv[1:])

    model, tokenizer, info = load_trained(run)
    merge(model)
    model.eval()
    dev = load_splits(load_run_config(run).data).dev
    labels = info["labels"]
    gold = torch.tensor([labels.index(e.label) for e in dev])
    texts = [(e.text, e.text_pair) for e in dev]
    print(f"{run}: {len(dev)} dev examples, max_length {info['max_length']}, {threads} threads",
          flush=True)

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        t0 = time.perf_counter()
        export_run(run, "onnx", tmp / "onnx", quantize="int8")
        print(f"tunelab export: {time.perf_counter() - t0:.0f} s", flush=True)
        int8_from = json.loads((tmp / "onnx" / ONNX_INFO).read_text())["onnx"]["int8_from"]
        t0 = time.perf_counter()
        naive = naive_int8(model, tokenizer, info, tmp)
        print(f"naive export + quantize_dynamic: {time.perf_counter() - t0:.0f} s", flush=True)

        params = sum(t.numel() * t.element_size() for t in model.parameters())
        models = {
            "PyTorch fp32 (LoRA merged)": (_Logits(model), mb(params), None),
            "ONNX fp32 (tunelab export)": (OnnxModel(tmp / "onnx" / MODEL_FILE, threads),
                                           onnx_size(tmp / "onnx" / MODEL_FILE), None),
            "ONNX int8 (tunelab export --quantize int8)": (
                OnnxModel(tmp / "onnx" / INT8_FILE, threads), onnx_size(tmp / "onnx" / INT8_FILE),
                None),
            "ONNX int8, naive (quantize_dynamic defaults, every weight)": (
                OnnxModel(naive, threads), onnx_size(naive), None),
        }
        extra, missing = trained_rows(REPO, {list(RUNS)[0]: args.student})
        models.update({k: (_Logits(m), size, None) for k, (m, size, _) in extra.items()})
        names = {key: (m.inputs if isinstance(m, OnnxModel) else None)
                 for key, (m, _, _) in models.items()}

        # batches in dev order, tokenized once per model input set
        batches = {key: [encode(tokenizer, info, texts[i:i + BATCH], names[key])
                         for i in range(0, len(texts), BATCH)] for key in models}
        step = max(1, len(texts) // args.latency_n)
        singles_idx = list(range(0, len(texts), step))[:args.latency_n]
        singles = {key: [encode(tokenizer, info, [texts[i]], names[key]) for i in singles_idx]
                   for key in models}

        results: dict[str, dict] = {key: {"passes": []} for key in models}
        for key, (m, _, _) in models.items():  # accuracy (+ warm-up)
            pred = torch.cat([m(**b).logits.argmax(-1) for b in batches[key]])
            results[key]["accuracy"] = (pred == gold).float().mean().item()
            print(f"{key}: accuracy {results[key]['accuracy']:.4f}", flush=True)
        for key, (m, _, _) in models.items():  # single-example latency
            times = latencies(m, singles[key])
            qs = statistics.quantiles(times, n=10)
            results[key]["p50"], results[key]["p90"] = statistics.median(times), qs[8]
            print(f"{key}: p50 {results[key]['p50']:.2f} ms, p90 {results[key]['p90']:.2f} ms",
                  flush=True)
        # the same latency at 1 thread: with other load on the machine, a 2-thread OpenMP /
        # ORT pool waits on a descheduled peer, which can swamp a 10 ms call
        torch.set_num_threads(1)
        files = {key: path for key, path in zip(list(models)[1:], (
            tmp / "onnx" / MODEL_FILE, tmp / "onnx" / INT8_FILE, naive))}
        for key in models:
            m = models[key][0] if key not in files else OnnxModel(files[key], 1)
            results[key]["p50_1t"] = statistics.median(latencies(m, singles[key]))
            print(f"{key}: 1 thread p50 {results[key]['p50_1t']:.2f} ms", flush=True)
        torch.set_num_threads(threads)
        for r in range(args.repeats):  # batch-32 throughput, models interleaved
            order = list(models) if r % 2 == 0 else list(models)[::-1]
            for key in order:
                m = models[key][0]
                t0 = time.perf_counter()
                for b in batches[key]:
                    m(**b)
                results[key]["passes"].append(len(texts) / (time.perf_counter() - t0))
        results["ONNX int8 (tunelab export --quantize int8)"]["from"] = int8_from
        for key in models:
            results[key]["throughput"] = statistics.median(results[key]["passes"])
            results[key]["size"] = models[key][1]
            print(f"{key}: {results[key]['throughput']:.0f} ex/s "
                  f"({', '.join(f'{v:.0f}' for v in results[key]['passes'])})", flush=True)

    elapsed = time.perf_counter() - started
    keys = list(models)
    pt, fp, q8, nv = (results[k] for k in keys[:4])
    rows = [f"| {k} | {r['accuracy']:.4f} | {r['size']:.1f} | {r['p50']:.2f} / {r['p90']:.2f} | "
            f"{r['throughput']:.0f} |" for k, r in results.items()]
    rows += [f"| {line.split(':')[0]} | not measured: {line.split(': ', 1)[1]} | | | |"
             for line in missing]
    d_q8 = (q8["accuracy"] - pt["accuracy"]) * 100
    d_nv = (nv["accuracy"] - pt["accuracy"]) * 100
    speed_q8, speed_nv, speed_fp = pt["p50"] / q8["p50"], pt["p50"] / nv["p50"], pt["p50"] / fp["p50"]
    s1_q8, s1_nv, s1_fp = (pt["p50_1t"] / r["p50_1t"] for r in (q8, nv, fp))
    one_thread = ("1-thread p50 (ms), same sentences, as a check on contention: " + "; ".join(
        f"{k} {r['p50_1t']:.2f}" for k, r in results.items()) + ".")
    vnni = "avx512_vnni yes" in cpu_flags()

    def verdict(x: float) -> str:
        word = "met" if x >= 4 else "NOT met"
        return word + (" (barely: within 10% of 4x, which one run cannot settle)"
                       if 0.9 * 4 <= x < 1.1 * 4 else "")

    disagree = ("" if (speed_q8 >= 4) == (s1_q8 >= 4) else
                f" The {threads}-thread and 1-thread ratios fall on either side of the goal: int8 "
                f"gains more over PyTorch on {'one thread' if s1_q8 > speed_q8 else f'{threads} threads'}"
                f" than on {f'{threads}' if s1_q8 > speed_q8 else 'one'}, so whether the goal "
                "holds depends on the thread setting.")
    acc_goal = d_q8 >= -0.5
    reading = (
        f"Reading: tunelab's int8 (per-channel int8 weights, dynamic activations; {KEEP_FP32} "
        f"kept fp32; quantized from the {q8.get('from', 'fp32 graph')}) scores {q8['accuracy']:.4f} against PyTorch fp32's {pt['accuracy']:.4f}, "
        f"{d_q8:+.2f} points; the naive int8 (quantize_dynamic defaults: per-tensor, embeddings "
        f"and head quantized too) scores {nv['accuracy']:.4f}, {d_nv:+.2f} points. Files: "
        f"{pt['size']:.1f} MB (PyTorch) -> {fp['size']:.1f} (ONNX fp32) -> {q8['size']:.1f} "
        f"(tunelab int8; the fp32 embeddings keep it larger) / {nv['size']:.1f} (naive int8). "
        f"At one example, ONNX fp32 is {speed_fp:.1f}x, tunelab int8 {speed_q8:.1f}x and naive "
        f"int8 {speed_nv:.1f}x faster than PyTorch fp32 at p50 "
        f"({pt['p50']:.2f} -> {fp['p50']:.2f} / {q8['p50']:.2f} / {nv['p50']:.2f} ms); at batch "
        f"32 int8 runs {q8['throughput'] / pt['throughput']:.1f}x PyTorch's throughput. Against "
        f"issue 19's goals ({'this CPU has' if vnni else 'this CPU lacks'} AVX-512 VNNI): "
        f"<= 0.5 point accuracy loss is {'met' if acc_goal else 'NOT met'} ({d_q8:+.2f}); >= 4x "
        f"PyTorch fp32 single-example latency is {verdict(speed_q8)} at {threads} threads "
        f"({speed_q8:.2f}x) and {verdict(s1_q8)} at 1 thread ({s1_q8:.2f}x; ONNX fp32 "
        f"{s1_fp:.1f}x, naive int8 {s1_nv:.1f}x there).{disagree} {smaller(results, pt)} "
        "Latencies move by "
        "several percent between runs on this machine (and far more when another job shares "
        "its two cores); ratios between rows, measured in the same run, are the numbers to "
        "read.")
    header = (f"`{command.strip()}` ({datetime.date.today().isoformat()}, {elapsed / 60:.1f} "
              "min wall, exports included)")
    setup = (f"Machine: {machine()}. CPU flags: {cpu_flags()}. torch threads = ONNX Runtime "
             f"intra-op threads = {threads} (the machine's cores).")
    method = (f"Model: {run.name} (MiniLM + LoRA r=8 on SST-2, adapter merged), dev set "
              f"{len(dev)} examples, max_length {info['max_length']}. Accuracy over all dev "
              "examples; file in MB = 10^6 bytes (PyTorch: merged parameters; ONNX: .onnx "
              f"file(s)); latency over {len(singles_idx)} dev sentences one at a time after "
              f"{WARMUP} warm-up calls (tokenization not timed); throughput: median of "
              f"{args.repeats} batch-32 passes over the dev set (dev order, padded per batch). "
              "Naive int8: torch.onnx.export of the merged model, then "
              "onnxruntime.quantization.quantize_dynamic(src, dst) with default settings.")
    head = ("| model | dev accuracy | file (MB) | p50 / p90 latency 1 example (ms) | batch-32 "
            "throughput (ex/s) |")
    gguf = [] if args.no_gguf else gguf_section()
    section = "\n".join([TITLE, "", header, "", setup, "", method, "", head,
                         "|---|---|---|---|---|", *rows, "", one_thread, "", reading, "", *gguf])
    print()
    print(section)
    if not args.no_write:
        update_benchmarks(section)
        print(f"updated {REPO / 'BENCHMARKS.md'}")


if __name__ == "__main__":
    main()
