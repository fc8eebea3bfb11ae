"""ONNX export of encoder runs: ONNX Runtime gives PyTorch's logits at any batch size and
length, int8 keeps the labels, and predict / eval score an export exactly as the run."""

from __future__ import annotations

import contextlib
import io
import json
import sys
from pathlib import Path

import pytest
import torch
from conftest import synthetic_rows, tiny_config, toy_sentiment_files
from ner_fixtures import toy_sentences

from tunelab.cli import main
from tunelab.commands.evaluate import evaluate
from tunelab.commands.export import export_run
from tunelab.commands.predict import predict
from tunelab.config import validate
from tunelab.errors import CheckpointError, ExportError, ModelError
from tunelab.export.onnx import (FP32_TOLERANCE, FUSED_INT8, INT8_FILE, MODEL_FILE,
                                 quantize_int8)
from tunelab.recipes.run import train
from tunelab.runs.onnx_model import ONNX_INFO, OnnxModel, load_onnx_run
from tunelab.runs.trained import load_trained

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

LONG = "the movie was really good and the acting quite fine " * 10  # cut at max_length 32


def quiet(_: str) -> None:
    pass


@pytest.fixture(scope="module")
def cls_run(tiny_model_dir, tmp_path_factory) -> Path:
    """A tiny BERT fully fine-tuned until it learns the toy task (LoRA on a random tiny base
    learns too little to make the int8 and eval checks mean anything; LoRA runs are exported
    in the last test)."""
    root = tmp_path_factory.mktemp("cls")
    data = toy_sentiment_files(root, dev=64)
    tree = tiny_config(tiny_model_dir, data, root / "run", max_steps=128, eval_every=128,
                       checkpoint_every=128, lr=3e-3)
    tree["method"] = {"name": "full"}
    train(validate(tree), log=quiet)
    return root / "run"


@pytest.fixture(scope="module")
def cls_onnx(cls_run) -> Path:
    out = cls_run.parent / "onnx"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["export", str(cls_run), "--to", "onnx", str(out)]) == 0
    (cls_run.parent / "export.out").write_text(printed.getvalue())
    return out


@pytest.fixture(scope="module")
def ner_onnx(ner_run) -> Path:
    out = ner_run.parent / "onnx"
    assert main(["export", str(ner_run), "--to", "onnx", str(out)]) == 0
    return out


def dev_texts(run: Path) -> list[str]:
    lines = (run.parent / "dev.tsv").read_text().splitlines()[1:]
    return [line.split("\t")[0] for line in lines]


def max_diff_over_shapes(run: Path, onnx_file: Path, texts: list[str]) -> float:
    """Largest |logit| difference over batches of 1, 3 and 7 texts of mixed lengths."""
    model, tokenizer, info = load_trained(run)  # the run as trained: adapter not merged
    session = OnnxModel(onnx_file)
    worst, widths = 0.0, set()
    for size in (1, 3, 7):
        for start in range(0, len(texts) - size + 1, size):
            enc = tokenizer(texts[start:start + size], truncation=True, padding=True,
                            max_length=info["max_length"], return_tensors="pt")
            widths.add((size, enc["input_ids"].shape[1]))
            with torch.no_grad():
                want = model(**enc).logits
            worst = max(worst, (session(**enc).logits - want).abs().max().item())
    assert len({w for _, w in widths}) >= 4  # several sequence lengths, incl. the cut one
    return worst


# ----------------------------------------------------------------------------- fp32


def test_classifier_logits_equal_pytorch_at_any_batch_and_length(cls_run, cls_onnx):
    texts = ["great", LONG, *dev_texts(cls_run)[:19]]
    assert max_diff_over_shapes(cls_run, cls_onnx / MODEL_FILE, texts) < FP32_TOLERANCE
    session = OnnxModel(cls_onnx / MODEL_FILE).session
    assert [(i.name, i.shape) for i in session.get_inputs()] == [
        ("input_ids", ["batch", "sequence"]), ("attention_mask", ["batch", "sequence"]),
        ("token_type_ids", ["batch", "sequence"])]
    assert [o.name for o in session.get_outputs()] == ["logits"]
    info = json.loads((cls_onnx / ONNX_INFO).read_text())
    assert info["labels"] == ["0", "1"] and info["max_length"] == 32
    assert info["onnx"]["model"] == MODEL_FILE and info["onnx"]["check"]["max_abs_diff"] < 1e-4
    assert info["onnx"]["check"]["argmax_agreement"] == 1.0
    assert (cls_onnx / "tokenizer.json").is_file() and (cls_onnx / "config.yaml").is_file()
    printed = (cls_run.parent / "export.out").read_text()
    assert "torch.onnx.export(dynamo=True)" in printed
    line = next(x for x in printed.splitlines() if x.startswith("check on 32 held-out examples"))
    assert float(line.split("max |logit diff| ")[1].split()[0]) < FP32_TOLERANCE


def test_ner_logits_equal_pytorch_at_any_batch_and_length(ner_run, ner_onnx):
    texts = [" ".join(w for w, _ in s) for s in toy_sentences(21, seed=9)]
    texts[4] = " ".join(["john smith visited paris"] * 12)  # cut at max_length 32
    assert max_diff_over_shapes(ner_run, ner_onnx / MODEL_FILE, texts) < FP32_TOLERANCE


# ----------------------------------------------------------------------------- int8


def test_int8_classifier_keeps_the_labels(cls_run, tmp_path, capsys):
    out = tmp_path / "int8"
    assert main(["export", str(cls_run), "--to", "onnx", str(out), "--quantize", "int8"]) == 0
    printed = capsys.readouterr().out
    assert "embeddings, pooler and task head kept fp32" in printed
    record = json.loads((out / ONNX_INFO).read_text())["onnx"]
    assert record["model"] == INT8_FILE and record["check_int8"]["argmax_agreement"] >= 0.95
    assert record["int8_from"] == FUSED_INT8  # a BERT: quantized from the fused graph
    import onnx

    graph = onnx.load(str(out / INT8_FILE)).graph
    ops = [n.op_type for n in graph.node]
    # 2 layers: one int8 QAttention (q, k, v in one weight) and 3 int8 MatMuls (attention
    # output, FFN in and out) each; pooler and head are fp32 Gemms
    assert ops.count("QAttention") == 2 and ops.count("MatMulInteger") == 6
    assert ops.count("SkipLayerNormalization") == 4 and "EmbedLayerNormalization" in ops
    floats = {i.name for i in graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
    assert any("classifier" in n for n in floats)  # the head stays fp32
    texts = dev_texts(cls_run)
    ours = predict(cls_run, texts, None)
    theirs = predict(out, texts, None)  # the export serves the int8 model
    agree = sum(a[0] == b[0] for a, b in zip(ours, theirs)) / len(texts)
    assert agree >= 0.95


def test_int8_ner_keeps_the_tags(ner_run, ner_onnx, tmp_path):
    model, tokenizer, info = load_trained(ner_run)
    kept = quantize_int8(ner_onnx / MODEL_FILE, tmp_path / INT8_FILE, ["classifier"])
    import onnx

    ops = [n.op_type for n in onnx.load(str(tmp_path / INT8_FILE)).graph.node]
    assert len(kept) == 1 and ops.count("MatMulInteger") == 12  # all but the head
    session = OnnxModel(tmp_path / INT8_FILE)
    texts = [" ".join(w for w, _ in s) for s in toy_sentences(40, seed=2)]
    enc = tokenizer(texts, truncation=True, padding=True, max_length=32, return_tensors="pt")
    with torch.no_grad():
        want = model(**enc).logits.argmax(-1)
    got = session(**enc).logits.argmax(-1)
    mask = enc["attention_mask"].bool()
    assert (want == got)[mask].float().mean().item() >= 0.95


# ----------------------------------------------------------------------------- predict, eval


def test_predict_and_eval_score_the_export_as_the_run(cls_run, cls_onnx, capsys):
    texts = ["a wonderful story", "the plot was awful and boring", LONG]
    ours, theirs = predict(cls_run, texts, None), predict(cls_onnx, texts, None)
    assert [label for label, _ in ours] == [label for label, _ in theirs]
    assert [p for _, p in ours] == pytest.approx([p for _, p in theirs], abs=1e-5)
    capsys.readouterr()
    assert main(["predict", str(cls_onnx), texts[0]]) == 0
    assert capsys.readouterr().out.startswith(f"{ours[0][0]}\t{ours[0][1]:.4f}\ta wonderful")
    run_scores, onnx_scores = evaluate(cls_run, None, "dev"), evaluate(cls_onnx, None, "dev")
    assert run_scores["accuracy"] == onnx_scores["accuracy"] >= 0.9
    assert run_scores["macro_f1"] == onnx_scores["macro_f1"]


def test_ner_predict_and_eval_score_the_export_as_the_run(ner_run, ner_onnx):
    texts = ["John Smith visited Paris.", "the report said Anna met Google"]
    run_entities = predict(ner_run, texts, None)
    onnx_entities = predict(ner_onnx, texts, None)
    assert onnx_entities == run_entities and sum(map(len, run_entities)) >= 3
    ours, theirs = evaluate(ner_run, None, "dev"), evaluate(ner_onnx, None, "dev")
    assert theirs["f1"] == ours["f1"] > 0.5
    assert theirs["loss"] == pytest.approx(ours["loss"], abs=1e-5)


def test_hf_export_is_the_merged_run(cls_run, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    assert main(["export", str(cls_run), "--to", "hf", str(tmp_path / "hf")]) == 0
    plain = AutoModelForSequenceClassification.from_pretrained(tmp_path / "hf").eval()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert plain.config.id2label == {0: "0", 1: "1"}
    model, _, _ = load_trained(cls_run)
    enc = tokenizer(["a wonderful story", LONG], truncation=True, max_length=32, padding=True,
                    return_tensors="pt")
    with torch.no_grad():
        assert (plain(**enc).logits - model(**enc).logits).abs().max().item() < 1e-5


# ----------------------------------------------------------------------------- bad input


def fake_run(root: Path, task: str) -> Path:
    (root / "adapter").mkdir(parents=True)
    (root / "run.json").write_text(json.dumps({"task": task, "artifact": "adapter", "tasks": ["a"]}))
    return root


def test_formats_refuse_what_they_cannot_hold(cls_run, tmp_path, capsys):
    lm = fake_run(tmp_path / "lm", "causal_lm")
    assert main(["export", str(lm), "--to", "onnx", str(tmp_path / "o")]) == 2
    assert ("is a causal_lm run; ONNX export holds classification and token_classification runs "
            "(for a causal LM: --to gguf or --to hf)") in capsys.readouterr().err
    multi = fake_run(tmp_path / "multi", "multitask")
    with pytest.raises(ExportError, match="multitask run; export one task's run"):
        export_run(multi, "onnx", tmp_path / "o")
    with pytest.raises(ExportError, match="unknown format; choose from lora, hf, onnx, gguf"):
        export_run(cls_run, "tflite", tmp_path / "o")
    with pytest.raises(SystemExit):
        main(["export", str(cls_run), "--to", "tflite", str(tmp_path / "o")])
    assert "invalid choice: 'tflite'" in capsys.readouterr().err
    assert main(["export", str(cls_run), "--to", "hf", str(tmp_path / "o"), "--quantize",
                 "int8"]) == 2
    assert "--quantize int8: quantization applies to --to onnx" in capsys.readouterr().err
    assert main(["export", str(cls_run), "--to", "onnx", str(tmp_path / "o"), "--dtype",
                 "q8_0"]) == 2
    assert "applies to --to gguf (f32, f16, q8_0); for ONNX choose --quantize int8" in \
        capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_an_export_refuses_run_options_and_missing_files(cls_onnx, tmp_path, monkeypatch):
    with pytest.raises(CheckpointError, match="is an ONNX export.*drop --adapter, --task"):
        load_onnx_run(cls_onnx, None, "base", "sst2")
    (tmp_path / "other.txt").write_text("x")
    with pytest.raises(ExportError, match="already holds other files"):
        export_run(cls_onnx.parent / "run", "onnx", tmp_path)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    with pytest.raises(ModelError, match=r"ONNX Runtime is not installed; pip install "
                                         r"'tunelab\[export\]'"):
        OnnxModel(cls_onnx / MODEL_FILE)
    with pytest.raises(ExportError, match=r"needs onnxruntime; pip install 'tunelab\[export\]'"):
        export_run(cls_onnx.parent / "run", "onnx", tmp_path / "new")


def test_gguf_is_wired_with_its_dtype(cls_run, tmp_path, monkeypatch):
    gguf = pytest.importorskip("tunelab.export.gguf")
    calls = []
    monkeypatch.setattr(gguf, "export_gguf", lambda run, out, dtype: calls.append(dtype) or {})
    assert main(["export", str(cls_run), "--to", "gguf", str(tmp_path / "a.gguf")]) == 0
    assert main(["export", str(cls_run), "--to", "gguf", str(tmp_path / "b.gguf"), "--dtype",
                 "q8_0"]) == 0
    assert calls == ["f16", "q8_0"]


def test_lora_is_folded_in_bottleneck_layers_exported_and_a_prompt_method_refused(
        tiny_model_dir, tiny_data, tmp_path, capsys):
    runs = {}
    for name in ("prompt_tuning", "houlsby", "lora"):
        tree = tiny_config(tiny_model_dir, tiny_data, tmp_path / name, max_steps=2)
        if name != "lora":  # tiny_config's own method is LoRA on query and value
            tree["method"] = {"name": name}
        train(validate(tree), log=quiet)
        runs[name] = tmp_path / name
    assert main(["export", str(runs["prompt_tuning"]), "--to", "onnx", str(tmp_path / "p")]) == 2
    assert "prompt_tuning run adds virtual tokens at run time" in capsys.readouterr().err
    texts = ["great", LONG, *[t for t, _ in synthetic_rows(12, seed=3)]]
    export_run(runs["houlsby"], "onnx", tmp_path / "h")
    assert max_diff_over_shapes(runs["houlsby"], tmp_path / "h" / MODEL_FILE, texts) \
        < FP32_TOLERANCE
    export_run(runs["lora"], "onnx", tmp_path / "l")
    assert max_diff_over_shapes(runs["lora"], tmp_path / "l" / MODEL_FILE, texts) < FP32_TOLERANCE
