"""Image classifiers (ViT, ConvNeXt, ResNet, ...: AutoModelForImageClassification) and their
image processors, from a local directory; unchanged transformers objects, no remote code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunelab.errors import ModelError
from tunelab.models.load import _config


def load_image_processor(path: Path) -> Any:
    """The model's own image processor (resize, crop, normalise): preprocessor_config.json."""
    import transformers
    from transformers import AutoImageProcessor

    transformers.logging.set_verbosity_error()  # the PIL fallback without torchvision is fine
    if not (Path(path) / "preprocessor_config.json").is_file():
        raise ModelError(f"{path}: no preprocessor_config.json; an image model directory needs "
                         "its image processor (save it there with processor.save_pretrained(DIR))")
    try:
        return AutoImageProcessor.from_pretrained(str(path), trust_remote_code=False)
    except Exception as exc:
        raise ModelError(f"{path}: cannot load the image processor "
                         f"({type(exc).__name__}: {exc})") from None


def load_image_classifier(path: Path, labels: list[str], dropout: float | None = None,
                          weights_from: Path | None = None) -> Any:
    """An image classifier with len(labels) outputs. A pretrained head of another size (an
    ImageNet head's 1000 classes) is replaced by a fresh one; `weights_from` loads a full
    fine-tuned checkpoint (a run's model/ directory) instead of the base weights."""
    from transformers import AutoModelForImageClassification

    source = weights_from or path
    config = _config(source, dropout)
    config.num_labels = len(labels)
    config.id2label = dict(enumerate(labels))
    config.label2id = {label: i for i, label in enumerate(labels)}
    try:
        return AutoModelForImageClassification.from_pretrained(
            str(source), config=config, ignore_mismatched_sizes=True, trust_remote_code=False)
    except Exception as exc:
        raise ModelError(f"{source}: cannot build an image classifier "
                         f"({type(exc).__name__}: {exc})") from None


def image_mode(config: Any) -> str:
    """The Pillow mode a model (its config) reads: L for one input channel, RGB for three."""
    channels = getattr(config, "num_channels", 3)
    if channels not in (1, 3):
        raise ModelError(f"the model reads {channels}-channel images; tunelab feeds grey (1) or "
                         "RGB (3) images only")
    return "L" if channels == 1 else "RGB"


def model_image_mode(path: Path) -> str:
    """image_mode of the model directory's config, without loading its weights."""
    return image_mode(_config(path, None))


def write_tiny_vit(out: Path, seed: int = 0) -> Path:
    """A randomly initialised 2-layer ViT (hidden 32) for 16x16 RGB images in 4x4 patches, with
    its ViTImageProcessor, saved to `out`: a stand-in where no pretrained image model can be
    installed (it learns sklearn's digits with LoRA; docs/vision.md)."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(seed)
    cfg = ViTConfig(image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=2,
                    num_attention_heads=2, intermediate_size=64, num_labels=2)
    ViTForImageClassification(cfg).save_pretrained(out)
    ViTImageProcessor(size={"height": 16, "width": 16}).save_pretrained(out)
    return out


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tunelab.models.vision",
                                     description="write a tiny random ViT model directory")
    parser.add_argument("--tiny-vit", type=Path, required=True, help="output directory")
    write_tiny_vit(parser.parse_args().tiny_vit)
