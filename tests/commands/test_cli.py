"""Commands on a trained tiny run: eval, predict, merge, info, and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from conftest import tiny_config
from tunelab.cli import main
from tunelab.config import validate
from tunelab.runs.trained import load_trained
from tunelab.recipes.run import train

pytestmark = pytest.mark.integration  # end-to-end runs through the CLI or `train`


@pytest.fixture
def trained_run(tiny_model_dir, tiny_data, tmp_path) -> Path:
    tree = tiny_config(tiny_model_dir, tiny_data, tmp_path / "run", max_steps=8)
    train(validate(tree), log=lambda _: None)
    return tmp_path / "run"


def test_merge_writes_a_plain_transformers_model_with_the_same_outputs(trained_run, tmp_path, capsys):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    assert main(["merge", str(trained_run), str(tmp_path / "merged")]) == 0
    assert "merged 4 adapter layers" in capsys.readouterr().out
    plain = AutoModelForSequenceClassification.from_pretrained(tmp_path / "merged").eval()
    tok = AutoTokenizer.from_pretrained(tmp_path / "merged")
    ours, _, info = load_trained(trained_run)
    enc = tok(["a wonderful story", "the plot was awful and boring"], padding=True,
              return_tensors="pt")
    with torch.no_grad():
        diff = (plain(**enc).logits - ours(**enc).logits).abs().max().item()
    assert diff < 1e-5
    assert plain.config.id2label == {0: "0", 1: "1"} and info["labels"] == ["0", "1"]


def test_eval_prints_accuracy_f1_and_confusion_matrix(trained_run, capsys):
    assert main(["eval", str(trained_run)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("dev: 32 examples\naccuracy: ")
    assert "macro-F1: " in out and "confusion matrix (rows: gold):" in out
    rows = [line for line in out.splitlines() if line.strip().startswith(("0 |", "1 |"))]
    matrix = [[int(v) for v in r.split("|")[1].split()] for r in rows]
    assert sum(map(sum, matrix)) == 32
    accuracy = float(out.splitlines()[1].split()[1])
    assert accuracy == pytest.approx((matrix[0][0] + matrix[1][1]) / 32, abs=1e-4)


def test_predict_prints_label_and_probability(tiny_model_dir, tiny_data, tmp_path, capsys):
    tree = tiny_config(tiny_model_dir, tiny_data, tmp_path / "full", max_steps=96, eval_every=48,
                       lr=3e-3)
    tree["method"] = {"name": "full"}  # learns the toy task (see test_train)
    train(validate(tree), log=lambda _: None)
    texts = tmp_path / "in.txt"
    texts.write_text("a wonderful story\n\nthe plot was awful\n")
    assert main(["predict", str(tmp_path / "full"), "great acting", "--file", str(texts)]) == 0
    rows = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert [(r[0], r[2]) for r in rows] == [("1", "great acting"), ("1", "a wonderful story"),
                                            ("0", "the plot was awful")]
    assert all(0.5 < float(r[1]) <= 1.0 for r in rows)


def test_info_prints_matches_and_counts(tiny_model_dir, tiny_data, tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tiny_config(tiny_model_dir, tiny_data, tmp_path / "o")))
    assert main(["info", str(path), "method.targets=[query]"]) == 0
    out = capsys.readouterr().out
    assert "matched modules (2): bert.encoder.layer.0.attention.self.query, " in out
    # 2 layers x r=4 x (32 in + 32 out) LoRA params + classifier 32*2+2
    assert "trainable parameters: 578 / " in out
    assert not (tmp_path / "o").exists()  # info trains nothing and writes nothing
    assert main(["info", str(path), "train.head_lr_scale=3"]) == 0
    assert "task head trains at train.lr x 3 (2 tensors)\n" in capsys.readouterr().out


@pytest.mark.parametrize("args,message", [
    (["config", "show", "nope.yaml"], "error: config file not found: nope.yaml\n"),
    (["eval", "/nonexistent-run"], "error: /nonexistent-run: not a tunelab run directory (no "
                                   "run.json); give the output_dir of a `tunelab train` run\n"),
])
def test_errors_are_one_line_with_nonzero_exit(args, message, capsys):
    assert main(args) == 2
    assert capsys.readouterr().err == message


def test_bad_target_is_one_line_and_debug_shows_the_traceback(tiny_model_dir, tiny_data, tmp_path,
                                                               capsys):
    from tunelab.errors import MethodError

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tiny_config(tiny_model_dir, tiny_data, tmp_path / "o")))
    assert main(["train", str(path), "method.targets=[qkv]"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: method.targets: no Linear layer matches 'qkv'") and err.count("\n") == 1
    assert not (tmp_path / "o").exists()  # a run that fails validation leaves nothing behind
    with pytest.raises(MethodError):
        main(["--debug", "train", str(path), "method.targets=[qkv]"])


# one tiny config per PEFT-family method: `tunelab train` end to end, then eval and merge
CLI_METHODS = [{"name": "lora", "loraplus_lr_ratio": 16, "targets": ["query", "value"]},
               {"name": "ia3"}, {"name": "vera", "r": 8}, {"name": "loha", "r": 4},
               {"name": "lokr", "r": 4, "rank_dropout": 0.1},
               {"name": "houlsby", "reduction_factor": 4}, {"name": "pfeiffer"},
               {"name": "adalora", "init_r": 4, "target_r": 2, "tfinal": 1}]


@pytest.mark.parametrize("method", CLI_METHODS, ids=lambda m: m["name"])
def test_train_eval_and_merge_through_the_cli(method, tiny_model_dir, tiny_data, tmp_path, capsys):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tunelab.methods import METHODS
    from tunelab.methods.base import AdapterLayer

    tree = tiny_config(tiny_model_dir, tiny_data, tmp_path / "run", max_steps=4)
    tree["method"] = method
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tree))
    assert main(["train", str(path)]) == 0
    method_cls = METHODS[method["name"]]
    assert (tmp_path / "run" / "adapter" / method_cls.config_file).is_file()
    assert main(["eval", str(tmp_path / "run")]) == 0
    assert "accuracy: " in capsys.readouterr().out
    ours, _, _ = load_trained(tmp_path / "run")
    assert any(isinstance(m, AdapterLayer) for m in ours.modules())
    if not all(m.mergeable for m in ours.modules() if isinstance(m, AdapterLayer)):
        assert main(["merge", str(tmp_path / "run"), str(tmp_path / "merged")]) == 2
        assert "cannot be merged" in capsys.readouterr().err
        return
    assert main(["merge", str(tmp_path / "run"), str(tmp_path / "merged")]) == 0
    plain = AutoModelForSequenceClassification.from_pretrained(tmp_path / "merged").eval()
    enc = AutoTokenizer.from_pretrained(tmp_path / "merged")(["a wonderful story", "awful"],
                                                             padding=True, return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(plain(**enc).logits, ours(**enc).logits, atol=1e-5)
