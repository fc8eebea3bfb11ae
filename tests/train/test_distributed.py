"""torchrun with 2 CPU processes (gloo) gives the single-process result for the same global
batch, and its adapter loads in one process and in peft."""

from __future__ import annotations

import json
import sys

import torch
import yaml
from safetensors.torch import load_file

from conftest import run, tiny_config


def test_two_process_ddp_matches_one_process(tiny_model_dir, tiny_data, tmp_path):
    trees = {}
    for name in ("single", "ddp"):
        tree = tiny_config(tiny_model_dir, tiny_data, tmp_path / name, max_steps=10, eval_every=5)
        tree["model"]["dropout"] = 0.0  # dropout draws differ per process; everything else matches
        trees[name] = tmp_path / f"{name}.yaml"
        trees[name].write_text(yaml.safe_dump(tree))
    single = run([sys.executable, "-m", "tunelab", "train", str(trees["single"])], tmp_path)
    assert single.returncode == 0, single.stderr
    ddp = run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "--master_port", "29533", "-m", "tunelab", "train", str(trees["ddp"])], tmp_path)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert ddp.stdout.count("finished 10/10 steps") == 1  # rank 0 alone reports

    a = load_file(str(tmp_path / "single" / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "ddp" / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:  # gloo sums in another order than one process: float rounding only
        assert torch.allclose(a[k], b[k], atol=1e-5), k
    sa = json.loads((tmp_path / "single" / "summary.json").read_text())
    sb = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert abs(sa["final_dev"]["loss"] - sb["final_dev"]["loss"]) < 1e-4
    assert sa["final_dev"]["accuracy"] == sb["final_dev"]["accuracy"]
    assert abs(sa["tokens_per_s"] * sa["train_seconds"] - sb["tokens_per_s"] * sb["train_seconds"]) < 1

    # the distributed run's adapter loads in one process, in tunelab and in peft
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    from tunelab.runs.trained import load_trained

    ours, tok, _ = load_trained(tmp_path / "ddp")
    base = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=2)
    theirs = PeftModel.from_pretrained(base, tmp_path / "ddp" / "adapter").eval()
    enc = tok(["a wonderful story", "awful"], padding=True, return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(ours(**enc).logits, theirs(**enc).logits, atol=1e-5)


def test_two_process_fsdp_matches_one_process_and_resumes_in_one(tiny_model_dir, tiny_data,
                                                                 tmp_path):
    """FSDP shards every block; the checkpoints, best weights and adapter it writes are whole:
    they match the single-process run, load in peft, and resume in a single process."""
    trees = {}
    for name in ("single", "fsdp"):
        tree = tiny_config(tiny_model_dir, tiny_data, tmp_path / name, max_steps=8, eval_every=4,
                           distributed="fsdp")
        tree["model"]["dropout"] = 0.0
        tree["method"]["targets"] = "all-linear"  # LoRA in every block and the pooler
        trees[name] = tmp_path / f"{name}.yaml"
        trees[name].write_text(yaml.safe_dump(tree))
    single = run([sys.executable, "-m", "tunelab", "train", str(trees["single"])], tmp_path)
    assert single.returncode == 0, single.stderr
    fsdp = run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                "--master_port", "29534", "-m", "tunelab", "train", str(trees["fsdp"])], tmp_path)
    assert fsdp.returncode == 0, fsdp.stderr[:6000]
    assert "2 processes (FSDP)" in fsdp.stdout

    a = load_file(str(tmp_path / "single" / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "fsdp" / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and len(a) > 20
    for k in a:
        assert a[k].shape == b[k].shape and torch.allclose(a[k], b[k], atol=1e-5), k
    sa = json.loads((tmp_path / "single" / "summary.json").read_text())
    sb = json.loads((tmp_path / "fsdp" / "summary.json").read_text())
    assert abs(sa["final_dev"]["loss"] - sb["final_dev"]["loss"]) < 1e-4

    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    from tunelab.runs.trained import load_trained

    ours, tok, _ = load_trained(tmp_path / "fsdp")
    base = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=2)
    theirs = PeftModel.from_pretrained(base, tmp_path / "fsdp" / "adapter").eval()
    enc = tok(["a wonderful story", "awful"], padding=True, return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(ours(**enc).logits, theirs(**enc).logits, atol=1e-5)

    # the step-4 checkpoint of the FSDP run resumes in one process to the same end
    import shutil

    resumed = tmp_path / "resumed"
    shutil.copytree(tmp_path / "fsdp", resumed)
    shutil.rmtree(resumed / "checkpoints" / "step-0000008")
    tree = yaml.safe_load(trees["fsdp"].read_text()) | {"output_dir": str(resumed)}
    trees["resumed"] = tmp_path / "resumed.yaml"
    trees["resumed"].write_text(yaml.safe_dump(tree))
    again = run([sys.executable, "-m", "tunelab", "train", str(trees["resumed"]), "--resume"],
                tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed from" in again.stdout and "step-0000004" in again.stdout
    c = load_file(str(resumed / "adapter" / "adapter_model.safetensors"))
    for k in a:
        assert torch.allclose(a[k], c[k], atol=1e-5), k


def test_fsdp_full_fine_tuning_of_a_causal_lm_matches_one_process(tmp_path):
    """Full fine-tuning (every weight sharded, with its optimizer state), held-out generation
    inside the sharded model, and a saved model that is whole."""
    from sft_fixtures import tiny_llama_dir

    rows = [{"instruction": f"say {w}", "input": "", "output": f"{w} and {w} again"}
            for w in ("one", "fox", "sea", "sky", "hat", "cup")] * 3
    (tmp_path / "d.json").write_text(json.dumps(rows))
    model = tiny_llama_dir(tmp_path / "llama")
    trees = {}
    for name in ("single", "fsdp"):
        trees[name] = tmp_path / f"{name}.yaml"
        trees[name].write_text(yaml.safe_dump({
            "task": "causal_lm", "model": {"name": str(model), "max_length": 64},
            "data": {"path": str(tmp_path / "d.json"), "eval_size": 4, "samples": 1,
                     "sample_tokens": 6},
            "method": {"name": "full"},
            "train": {"batch_size": 4, "lr": 1e-2, "max_steps": 6, "eval_every": 3,
                      "warmup_ratio": 0.0, "distributed": "fsdp"},
            "output_dir": str(tmp_path / name)}))
    single = run([sys.executable, "-m", "tunelab", "train", str(trees["single"])], tmp_path)
    assert single.returncode == 0, single.stderr[-3000:]
    fsdp = run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                "--master_port", "29535", "-m", "tunelab", "train", str(trees["fsdp"])], tmp_path)
    assert fsdp.returncode == 0, fsdp.stderr[:6000]
    sa = json.loads((tmp_path / "single" / "summary.json").read_text())
    sb = json.loads((tmp_path / "fsdp" / "summary.json").read_text())
    assert sb["final_dev"]["loss"] < sb["initial_dev"]["loss"]
    assert abs(sa["final_dev"]["loss"] - sb["final_dev"]["loss"]) < 1e-3
    a = load_file(str(tmp_path / "single" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "fsdp" / "model" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].shape == b[k].shape and torch.allclose(a[k], b[k], atol=1e-4), k
    samples = sorted(p.name for p in (tmp_path / "fsdp" / "samples").iterdir())
    assert samples == ["step-0000000.jsonl", "step-0000003.jsonl", "step-0000006.jsonl"]
