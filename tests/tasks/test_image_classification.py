"""task: image_classification end to end on tiny random models and sklearn's digits (no
pretrained image model can be installed here): LoRA on a ViT learns, and the trained run
predicts, evaluates and merges; full fine-tuning of a ResNet saves a model that predicts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tunelab.cli import main
from tunelab.config import validate
from tunelab.errors import ConfigError, ModelError
from tunelab.recipes.run import train
from tunelab.runs.trained import load_trained

from vision_fixtures import digits_dir, tiny_resnet_dir, tiny_vit_dir


def _quiet(_: str) -> None:
    pass


def _tree(model: Path, data: Path, out: Path, method: dict, **train_opts) -> dict:
    return {"task": "image_classification", "model": {"name": str(model)},
            "data": {"train": str(data)}, "method": method,
            "train": {"epochs": 10, "batch_size": 32, "lr": 5e-3, "checkpoint_every": 1000,
                      "log_every": 1000, "seed": 0, **train_opts},
            "output_dir": str(out)}


@pytest.fixture(scope="module")
def vit_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    """A tiny ViT trained with LoRA on 600 digits (540 train / 60 dev)."""
    tmp = tmp_path_factory.mktemp("vit")
    data = digits_dir(tmp / "digits", per_label=60)
    method = {"name": "lora", "r": 8, "alpha": 16, "targets": "all-linear"}
    summary = train(validate(_tree(tiny_vit_dir(tmp / "vit"), data, tmp / "run", method)),
                    log=_quiet)
    return tmp / "run", data, summary


def test_vit_lora_learns_digits(vit_run):
    run, _, summary = vit_run
    before, after = summary["initial_dev"]["accuracy"], summary["final_dev"]["accuracy"]
    assert before <= 0.2  # an untrained head: chance is 0.1
    assert after >= 0.4 and after - before >= 0.25, (before, after)
    assert summary["final_dev"]["loss"] < summary["initial_dev"]["loss"] - 0.5
    assert (run / "adapter" / "adapter_config.json").is_file()


def test_predict_an_image_file_and_a_folder(vit_run, capsys: pytest.CaptureFixture[str]):
    run, data, _ = vit_run
    image = sorted((data / "3").glob("*.png"))[0]
    assert main(["predict", str(run), str(image)]) == 0
    label, prob, shown = capsys.readouterr().out.strip().split("\t")
    assert label in {str(d) for d in range(10)} and 0.1 < float(prob) <= 1.0
    assert shown == str(image)
    assert main(["predict", str(run), str(data / "7")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 60
    assert sum(line.split("\t")[0] == "7" for line in lines) >= 20  # mostly right


def test_predict_names_a_missing_or_non_image_file(vit_run, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]):
    run, _, _ = vit_run
    assert main(["predict", str(run), str(tmp_path / "nope.png")]) != 0
    assert "nope.png: no such image file or folder" in capsys.readouterr().err
    (tmp_path / "a.txt").write_text("not an image")
    assert main(["predict", str(run), str(tmp_path / "a.txt")]) != 0
    assert "a.txt: not an image Pillow can read" in capsys.readouterr().err


def test_eval_scores_the_dev_images_as_training_did(vit_run, capsys: pytest.CaptureFixture[str]):
    run, _, summary = vit_run
    assert main(["eval", str(run)]) == 0
    out = capsys.readouterr().out
    assert "dev: 60 images" in out
    assert f"accuracy: {summary['final_dev']['accuracy']:.4f}" in out
    assert "confusion matrix" in out


def test_merged_run_loads_as_a_plain_transformers_model(vit_run, tmp_path: Path):
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    run, _, _ = vit_run
    assert main(["merge", str(run), str(tmp_path / "merged")]) == 0
    model, _, _ = load_trained(run)
    merged = AutoModelForImageClassification.from_pretrained(tmp_path / "merged").eval()
    assert AutoImageProcessor.from_pretrained(tmp_path / "merged") is not None
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(merged(pixel_values=x).logits, model(pixel_values=x).logits,
                              atol=1e-5)


def test_resnet_full_fine_tuning_saves_a_model_that_predicts(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]):
    """Full fine-tuning saves the whole model; the run predicts from model/."""
    data = digits_dir(tmp_path / "digits", per_label=20)
    summary = train(validate(_tree(tiny_resnet_dir(tmp_path / "resnet"), data, tmp_path / "run",
                                   {"name": "full"}, epochs=3, lr=1e-2)), log=_quiet)
    assert summary["artifact_kind"] == "model"
    assert (tmp_path / "run" / "model" / "preprocessor_config.json").is_file()
    assert summary["final_dev"]["loss"] < summary["initial_dev"]["loss"]
    assert main(["predict", str(tmp_path / "run"), str(data / "0")]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 20


def test_resnet_conv_lora_trains_the_convolutions(tmp_path: Path):
    data = digits_dir(tmp_path / "digits", per_label=10)
    cfg = validate(_tree(tiny_resnet_dir(tmp_path / "resnet"), data, tmp_path / "run",
                         {"name": "lora", "r": 4, "targets": ["convolution"]}, epochs=1))
    logs: list[str] = []
    train(cfg, log=logs.append)
    assert any("matched modules (6)" in line for line in logs), logs
    import json

    written = json.loads((tmp_path / "run" / "adapter" / "adapter_config.json").read_text())
    assert written["target_modules"] == ["convolution"] and written["task_type"] is None


def test_config_refuses_token_metrics():
    tree = {"task": "image_classification", "data": {"train": "x"}, "train": {"metric": "f1"}}
    with pytest.raises(ConfigError, match="train.metric: f1 scores token classification"):
        validate(tree)


def test_a_model_dir_without_an_image_processor_is_refused(tmp_path: Path):
    vit = tiny_vit_dir(tmp_path / "vit")
    (vit / "preprocessor_config.json").unlink()
    data = digits_dir(tmp_path / "digits", per_label=2)
    with pytest.raises(ModelError, match="no preprocessor_config.json"):
        train(validate(_tree(vit, data, tmp_path / "run", {"name": "lora"})), log=_quiet)


def test_info_and_data_inspect_read_an_image_config(vit_run, capsys: pytest.CaptureFixture[str]):
    run, _, _ = vit_run
    assert main(["info", str(run / "config.yaml")]) == 0
    out = capsys.readouterr().out
    assert "matched modules (12)" in out and "task head (trains fully): classifier" in out
    assert main(["data", "inspect", str(run / "config.yaml")]) == 0
    out = capsys.readouterr().out
    assert "images per label: train 540, dev 60" in out
    assert "read as RGB and becomes pixel_values of shape (3, 16, 16)" in out


def test_report_page_of_an_image_run(vit_run, tmp_path: Path):
    run, _, _ = vit_run
    assert main(["report", str(run), "--out", str(tmp_path / "report")]) == 0
    assert any(p.suffix == ".html" for p in (tmp_path / "report").iterdir())


@pytest.mark.parametrize("make, method", [
    (tiny_vit_dir, {"name": "ia3", "targets": ["k_proj", "v_proj", "fc2"], "feedforward": ["fc2"]}),
    (tiny_resnet_dir, {"name": "bitfit"}),  # a random ViT's biases barely move its CLS token
])
def test_other_methods_train_image_models(make, method, tmp_path: Path):
    data = digits_dir(tmp_path / "digits", per_label=20)
    summary = train(validate(_tree(make(tmp_path / "model"), data, tmp_path / "run",
                                   method, epochs=5, lr=2e-2, load_best_at_end=False)),
                    log=_quiet)
    assert summary["final_dev"]["loss"] < summary["initial_dev"]["loss"] - 0.02
