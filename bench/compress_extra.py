"""The rows of bench/compress.py beyond the demo model's own exports: the distilled student,
its labels-only twin, the pruned model (each a trained run, loaded and merged like the demo
model), and SmolLM2 written as a GGUF q8_0 file next to its PyTorch output."""

from __future__ import annotations

import tempfile
from pathlib import Path

# row name -> (default run directory, how to make it)
RUNS = {
    "distilled 3-layer student (KD from the demo run, full FT)": (
        "runs/sst2-student", "tunelab train examples/sst2-student.yaml"),
    "3-layer student, labels only (same budget)": (
        "runs/sst2-student-labels",
        "tunelab train examples/sst2-student.yaml distill.alpha=0 "
        "output_dir=runs/sst2-student-labels"),
    "pruned: half the FFN neurons by importance, 300 recovery steps": (
        "runs/sst2-pruned/recovered",
        "tunelab prune runs/sst2-lora runs/sst2-pruned --ffn 0.5 --recover-steps 300"),
}
PROMPTS = ["The capital of France is", "Write one sentence about the sea.",
           "List three primary colours:"]


def trained_rows(repo: Path, given: dict[str, Path | None]) -> tuple[dict, list[str]]:
    """{row name: (merged PyTorch model, parameter MB)} for the runs that exist, and a note
    per missing one saying how to make it."""
    from tunelab.methods.peft_format import merge
    from tunelab.runs.trained import load_trained

    rows, missing = {}, []
    for name, (default, make) in RUNS.items():
        run = given.get(name) or repo / default
        if not (run / "run.json").is_file():
            missing.append(f"{name}: no run at {run} (make it with `{make}`)")
            continue
        model, _, _ = load_trained(run)
        merge(model)
        model.eval()
        size = sum(t.numel() * t.element_size() for t in model.parameters()) / 1e6
        rows[name] = (model, size, str(run))
    return rows, missing


def gguf_section() -> list[str]:
    """SmolLM2-135M-Instruct through `tunelab export --to gguf` at q8_0 (and the f32 size):
    greedy continuations of the PyTorch model and of the file as transformers reads it."""
    from tunelab.export.gguf import export_gguf

    with tempfile.TemporaryDirectory() as tmp:
        q8 = export_gguf(Path("smollm2"), Path(tmp) / "q8", "q8_0", prompts=PROMPTS,
                         log=lambda _: None)
        f32 = export_gguf(Path("smollm2"), Path(tmp) / "f32", "f32", prompts=PROMPTS[:1],
                          log=lambda _: None)
    lines = ["### SmolLM2-135M-Instruct as GGUF (`tunelab export smollm2 --to gguf`)", "",
             f"q8_0 file {q8['bytes'] / 1e6:.1f} MB against f32 {f32['bytes'] / 1e6:.1f} MB "
             f"({q8['bytes'] / f32['bytes']:.2f}x). Read back with transformers' GGUF loader: "
             f"max |logit diff| {q8['max_logit_diff']:.3f} ({q8['rel_logit_diff']:.2%} of the "
             f"largest logit), argmax agreement {q8['argmax_agreement']:.1%} along the PyTorch "
             f"continuations, greedy text identical on {q8['greedy_same']} prompts (f32: "
             f"{f32['greedy_same']}, max |logit diff| {f32['max_logit_diff']:.1e}). The "
             "PyTorch model is the packaged Q4_1 GGUF dequantized to fp32 by transformers, so "
             "q8_0 here re-quantizes already-quantized weights.", "",
             "| prompt | PyTorch fp32 greedy | GGUF q8_0 greedy |", "|---|---|---|"]
    cell = lambda s: s.replace("|", "\\|").replace("\n", " ⏎ ").strip()  # noqa: E731
    lines += [f"| {cell(s['prompt'])} | {cell(s['pytorch'])} | {cell(s['gguf'])} |"
              for s in q8["samples"]]
    return lines + [""]
