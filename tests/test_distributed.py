"""torchrun with 2 CPU processes (gloo) gives the single-process result for the same global
batch, and its adapter loads in one process and in peft."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file

from conftest import REPO, tiny_config


def run(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)


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

    from tunelab.runs import load_trained

    ours, tok, _ = load_trained(tmp_path / "ddp")
    base = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=2)
    theirs = PeftModel.from_pretrained(base, tmp_path / "ddp" / "adapter").eval()
    enc = tok(["a wonderful story", "awful"], padding=True, return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(ours(**enc).logits, theirs(**enc).logits, atol=1e-5)
