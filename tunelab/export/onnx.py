"""`tunelab export RUN --to onnx OUT [--quantize int8]`: an encoder run (classification, NER)
as an ONNX model that ONNX Runtime serves without PyTorch.

The run's adapter is folded into its weights first (a non-linear adapter, such as bottleneck
layers, is exported as part of the graph), then `torch.onnx.export(dynamo=True)` (the
torch.export-based exporter, with onnxscript's optimizer) writes a graph with inputs
input_ids / attention_mask (/ token_type_ids when the tokenizer makes them), dynamic batch
and sequence axes, and one output, logits. `--quantize int8` adds model.int8.onnx: ONNX
Runtime dynamic quantization, int8 weights per output channel, activations quantized per
batch at run time; the embeddings, the pooler and the task head stay fp32 (KEEP_FP32): they
hold few of the FLOPs, and a quantization error there reaches the logits undamped. For BERT
encoders the int8 model is built from a fused graph (FUSED_INT8): the TorchScript exporter's
graph of eager attention, which ONNX Runtime's BERT optimizer turns into one Attention,
SkipLayerNormalization and BiasGelu node per layer (about 50 nodes instead of about 300), so
attention runs as one int8 QAttention; any other model, or a graph the optimizer cannot fuse,
is quantized from model.onnx itself.

The export checks itself before it is kept: ONNX Runtime and PyTorch run the run's held-out
examples (dev set; a few fixed texts when it cannot be read), padded in one batch and one by
one. fp32 logits must agree within FP32_TOLERANCE; int8's largest difference and argmax
agreement are printed and recorded in onnx_run.json.
"""

from __future__ import annotations

import ast
import json
import logging
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tunelab.errors import AdapterError, ExportError, TunelabError
from tunelab.io import DiskFullError, atomic_dir, write_text
from tunelab.methods.peft_format import merge
from tunelab.methods.virtual import VirtualTokens
from tunelab.models.heads import head_modules
from tunelab.runs.layout import load_run_config, read_run_info
from tunelab.runs.onnx_model import INSTALL_HINT, ONNX_INFO, OnnxModel
from tunelab.runs.trained import load_trained

TASKS = ("classification", "token_classification")
MODEL_FILE, INT8_FILE = "model.onnx", "model.int8.onnx"
FP32_TOLERANCE = 1e-4
KEEP_FP32 = "embeddings, pooler and task head"
KEPT_MODULES = ("embeddings", "pooler")  # beside the task head
FUSABLE = ("bert",)  # model types ONNX Runtime's BERT optimizer fuses (checked here: MiniLM)
FUSED_INT8 = ("fused graph (TorchScript exporter, ONNX Runtime BERT fusions: Attention, "
              "SkipLayerNormalization, BiasGelu)")
CHECK_EXAMPLES = 32
INPUTS = ("input_ids", "attention_mask", "token_type_ids")  # _Logits.forward's order
FIXED_TEXTS = ["the movie was great", "John Smith visited Paris on Monday .",
               "an awful , boring plot and weak acting", "x",
               "Google and Microsoft met in London with Mary Jones today ."]


class _Logits(nn.Module):
    """The task model as a function of tensors to its logits (what the graph computes)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        # (B, T) int64 each -> (B, n_labels) for classification, (B, T, n_tags) for NER
        types = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        return self.model(input_ids=input_ids, attention_mask=attention_mask, **types).logits


def export_onnx(run_dir: Path, out: Path, quantize: str | None = None) -> dict[str, Any]:
    """Write `out` (model.onnx, tokenizer, config.yaml, ONNX_INFO); returns the check record."""
    if out.is_dir() and any(out.iterdir()) and not (out / ONNX_INFO).is_file():
        raise ExportError(f"{out} already holds other files; write the export to a new directory")
    _require_packages()
    model, tokenizer, info = _encoder_model(run_dir)
    texts = held_out_texts(run_dir, info)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_dir(out) as tmp:
            names = _write_graph(model, tokenizer, info, tmp / MODEL_FILE)
            record: dict[str, Any] = {"model": MODEL_FILE, "inputs": names, "exporter":
                                      "torch.onnx.export(dynamo=True)", "quantize": quantize,
                                      "source_run": str(run_dir.resolve())}
            record["check"] = check(model, tokenizer, info, texts, tmp / MODEL_FILE)
            if quantize == "int8":
                fused = fused_graph(model, tokenizer, info, tmp / "fused.onnx")
                quantize_int8(fused or tmp / MODEL_FILE, tmp / INT8_FILE, head_modules(model))
                if fused is not None:
                    fused.unlink()
                record.update(model=INT8_FILE, keep_fp32=KEEP_FP32,
                              int8_from=FUSED_INT8 if fused else MODEL_FILE)
                record["check_int8"] = check(model, tokenizer, info, texts, tmp / INT8_FILE)
            tokenizer.save_pretrained(tmp)
            shutil.copyfile(run_dir / "config.yaml", tmp / "config.yaml")
            write_text(tmp / ONNX_INFO, json.dumps({**info, "artifact": record["model"],
                                                    "onnx": record}, indent=2) + "\n")
    except DiskFullError as exc:
        raise ExportError(str(exc)) from None
    _print_summary(out, record, len(texts))
    return record


def _require_packages() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise ExportError(f"export --to onnx needs {exc.name}; {INSTALL_HINT}") from None


def _encoder_model(run_dir: Path) -> tuple[nn.Module, Any, dict[str, Any]]:
    """The run's model with its adapter folded in; only encoder tasks ONNX export holds."""
    info = read_run_info(run_dir)
    task = info["task"]
    if task == "multitask":
        raise ExportError(f"export --to onnx: {run_dir} is a multitask run; export one task's "
                          f"run, {run_dir}/tasks/NAME")
    if task not in TASKS:
        lm = info.get("route", task) == "causal_lm"
        other = " (for a causal LM: --to gguf or --to hf)" if lm else ""
        raise ExportError(f"export --to onnx: {run_dir} is a {task} run; ONNX export holds "
                          f"{' and '.join(TASKS)} runs{other}")
    model, tokenizer, info = load_trained(run_dir)
    if any(isinstance(m, VirtualTokens) for m in model.modules()):
        raise ExportError(f"export --to onnx: a {info['method']} run adds virtual tokens at run "
                          "time, which the graph cannot hold; export runs of full, freeze, "
                          "bitfit or an adapter method (lora, dora, ia3, houlsby, ...)")
    try:
        merge(model)
    except AdapterError:
        pass  # a non-linear adapter (bottleneck layers) stays in the graph as layers
    return model.eval(), tokenizer, info


def encode(tokenizer: Any, info: dict[str, Any], texts: list[tuple[str, str | None]],
           names: list[str] | None = None) -> dict[str, torch.Tensor]:
    """(B, T) int64 inputs for `texts` ((text, pair or None) each), padded and cut as the run was."""
    firsts = [t for t, _ in texts]
    pairs = [p or "" for _, p in texts] if any(p is not None for _, p in texts) else None
    enc = tokenizer(firsts, pairs, truncation=True, max_length=info["max_length"], padding=True,
                    return_tensors="pt")
    keep = names or list(INPUTS)
    return {k: enc[k] for k in INPUTS if k in enc and k in keep}  # the graph's input order


def _example_inputs(tokenizer: Any, info: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Two texts of different lengths (a padded batch) for the exporters to trace."""
    return encode(tokenizer, info, [("an example text of some length", None),
                                    ("another one", None)])


def _write_graph(model: nn.Module, tokenizer: Any, info: dict[str, Any], path: Path) -> list[str]:
    """Export the logits graph with dynamic batch and sequence axes; returns its input names."""
    example = _example_inputs(tokenizer, info)
    names = list(example)
    axes = {name: {0: "batch", 1: "sequence"} for name in names}
    registry = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registry.level
    registry.setLevel(logging.ERROR)  # "torchvision is not installed": no vision ops here
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # shared axis names, renamed anyway
            program = torch.onnx.export(_Logits(model).eval(), (), kwargs=example, dynamo=True,
                                        dynamic_shapes=axes, output_names=["logits"], verbose=False)
        program.save(str(path))
    except Exception as exc:  # the exporter raises many types; all mean "cannot trace this"
        raise ExportError(f"export --to onnx: torch.onnx could not export {type(model).__name__} "
                          f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
                          "; export --to hf and convert that checkpoint with optimum instead"
                          ) from None
    finally:
        registry.setLevel(level)
    return names


def fused_graph(model: nn.Module, tokenizer: Any, info: dict[str, Any], path: Path
                ) -> Path | None:
    """`path`: the model's fp32 graph with each layer's attention, residual + LayerNorm and
    bias + GELU fused into single ONNX Runtime nodes (see the module docstring); None when the
    model type is not in FUSABLE or the optimizer finds no Attention to fuse."""
    config = getattr(model, "config", None)
    if getattr(config, "model_type", None) not in FUSABLE:
        return None
    from onnxruntime.transformers.optimizer import optimize_model

    example = _example_inputs(tokenizer, info)
    names, raw = list(example), path.with_suffix(".raw.onnx")
    configs = {id(m.config): m.config for m in model.modules()
               if getattr(m, "config", None) is not None}
    before = {k: c._attn_implementation for k, c in configs.items()}
    root = logging.getLogger()
    level = root.level
    try:
        for c in configs.values():  # the eager pattern is the one the fusion matches
            c._attn_implementation = "eager"
        root.setLevel(logging.ERROR)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's tracer warnings
            torch.onnx.export(_Logits(model).eval(), tuple(example[n] for n in names), str(raw),
                              input_names=names, output_names=["logits"], dynamo=False,
                              opset_version=17,
                              dynamic_axes={n: {0: "batch", 1: "sequence"} for n in names})
            fused = optimize_model(str(raw), model_type="bert",
                                   num_heads=config.num_attention_heads,
                                   hidden_size=config.hidden_size)
        if not fused.get_fused_operator_statistics().get("Attention"):
            return None
        fused.save_model_to_file(str(path))
        return path
    except Exception:  # the exporter and optimizer raise many types: model.onnx is used
        return None
    finally:
        for k, c in configs.items():
            c._attn_implementation = before[k]
        root.setLevel(level)
        raw.unlink(missing_ok=True)


def quantize_int8(src: Path, dst: Path, heads: list[str]) -> list[str]:
    """Dynamic int8 quantization of the weight MatMuls and fused Attention nodes (per output
    channel); the embeddings (Gathers or EmbedLayerNormalization, left alone), the pooler and
    the task head stay fp32. ONNX Runtime turns each Gemm (a linear on (B, H): pooler,
    sequence head) into `<name>_MatMul` + Add first, so those names are excluded too. Returns
    the names of the nodes kept fp32."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(src)).graph
    keep = [name for node in graph.node if node.op_type in ("MatMul", "Gemm")
            and _is_kept(_module_of(node), heads)
            for name in ((node.name,) if node.op_type == "MatMul"
                         else (node.name, node.name + "_MatMul"))]
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # "consider pre-processing": shape inference, not accuracy
    try:
        quantize_dynamic(src, dst, per_channel=True, weight_type=QuantType.QInt8,
                         op_types_to_quantize=["MatMul", "Attention"], nodes_to_exclude=keep,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    finally:
        root.setLevel(level)
    return keep


def _module_of(node: Any) -> str:
    """The module a node was traced in ("model.classifier"), from the metadata the dynamo
    exporter writes, or from the TorchScript exporter's node name ("/model/classifier/Gemm");
    "" when neither says (such nodes are quantized)."""
    if node.name.startswith("/"):
        return ".".join(node.name.strip("/").split("/")[:-1])
    meta = {p.key: p.value for p in node.metadata_props}
    try:
        scopes = ast.literal_eval(meta.get("pkg.torch.onnx.name_scopes", "[]"))
    except (ValueError, SyntaxError):
        return ""
    return str(scopes[-2]) if len(scopes) >= 2 else ""  # the last scope is the op itself


def _is_kept(module: str, heads: list[str]) -> bool:
    parts = module.removeprefix("model.").split(".")  # "model.": _Logits' attribute
    return parts[0] in heads or any(name in parts for name in KEPT_MODULES)


@torch.no_grad()
def check(model: nn.Module, tokenizer: Any, info: dict[str, Any],
          texts: list[tuple[str, str | None]], path: Path) -> dict[str, float]:
    """PyTorch against ONNX Runtime: the texts in one padded batch, then the first few one by
    one (other batch sizes and lengths than the export's example). fp32 beyond
    FP32_TOLERANCE raises; returns the largest logit difference and argmax agreement."""
    session = OnnxModel(path)
    batches = [texts] + [[t] for t in texts[:3]]
    worst, agree, total = 0.0, 0, 0
    for batch in batches:
        enc = encode(tokenizer, info, batch, session.inputs)
        want = model(**enc).logits.float()  # (B, C) or (B, T, C)
        got = session(**enc).logits.float()
        worst = max(worst, (want - got).abs().max().item())
        same = want.argmax(-1) == got.argmax(-1)  # (B,) or (B, T)
        mask = enc["attention_mask"].bool() if same.dim() == 2 else torch.ones_like(same)
        agree, total = agree + int(same[mask].sum()), total + int(mask.sum())
    if path.name == MODEL_FILE and worst > FP32_TOLERANCE:
        raise ExportError(f"export --to onnx: ONNX Runtime's logits differ from PyTorch's by "
                          f"{worst:.2e} (> {FP32_TOLERANCE:g}); the graph does not reproduce the "
                          "model. Report it with the model type; --to hf still works")
    return {"max_abs_diff": worst, "argmax_agreement": agree / max(total, 1)}


def held_out_texts(run_dir: Path, info: dict[str, Any]) -> list[tuple[str, str | None]]:
    """Up to CHECK_EXAMPLES dev examples of the run as (text, pair); fixed texts if the data
    cannot be read any more (moved, deleted)."""
    try:
        cfg = load_run_config(run_dir)
        if info["task"] == "token_classification":
            from tunelab.data.conll import load_conll_splits

            return [(" ".join(s.words), None) for s in load_conll_splits(cfg.data).dev
                    ][:CHECK_EXAMPLES]
        from tunelab.data.splits import load_splits

        return [(e.text, e.text_pair) for e in load_splits(cfg.data).dev][:CHECK_EXAMPLES]
    except (TunelabError, OSError):
        pair = "a second text" if info.get("text_pair") else None
        return [(t, pair) for t in FIXED_TEXTS]


def _print_summary(out: Path, record: dict[str, Any], n: int) -> None:
    fp32 = record["check"]
    size = (out / MODEL_FILE).stat().st_size / 2**20
    print(f"wrote {out}/{MODEL_FILE} ({size:.1f} MiB; {record['exporter']}, inputs "
          f"{', '.join(record['inputs'])}, dynamic batch and sequence axes)")
    print(f"check on {n} held-out examples: ONNX Runtime fp32 vs PyTorch max |logit diff| "
          f"{fp32['max_abs_diff']:.2e} (tolerance {FP32_TOLERANCE:g})")
    if "check_int8" in record:
        q = record["check_int8"]
        size = (out / INT8_FILE).stat().st_size / 2**20
        print(f"wrote {out}/{INT8_FILE} ({size:.1f} MiB; dynamic int8, per-channel weights, "
              f"{KEEP_FP32} kept fp32): max |logit diff| {q['max_abs_diff']:.2e}, argmax "
              f"agreement {q['argmax_agreement']:.1%}")
    print(f"`tunelab predict {out} TEXT` and `tunelab eval {out}` use "
          f"{record['model']} through ONNX Runtime")
