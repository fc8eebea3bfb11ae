"""Tiny random image classifiers saved as model directories, and sklearn's digits as image
folders: no pretrained image model can be installed here, so the vision tests use these."""

from __future__ import annotations

from pathlib import Path

import torch

from tunelab.data.images import write_digits
from tunelab.models.vision import write_tiny_vit


def tiny_vit_dir(out: Path, seed: int = 0) -> Path:
    """A 2-layer ViT (hidden 32) reading 16x16 RGB images in 4x4 patches, with its processor
    (the model `python -m tunelab.models.vision --tiny-vit OUT` writes)."""
    return write_tiny_vit(out, seed)


def tiny_resnet_dir(out: Path, seed: int = 0) -> Path:
    """A 2-stage basic-block ResNet (8 and 16 channels) with a ConvNeXt-style processor."""
    from transformers import ConvNextImageProcessor, ResNetConfig, ResNetForImageClassification

    torch.manual_seed(seed)
    cfg = ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
                       layer_type="basic", num_labels=2)
    ResNetForImageClassification(cfg).save_pretrained(out)
    ConvNextImageProcessor(size={"shortest_edge": 32}, crop_pct=1.0).save_pretrained(out)
    return out


def digits_dir(out: Path, per_label: int = 60) -> Path:
    """sklearn's digits: per_label 8x8 grey PNGs in each of the folders 0/ ... 9/."""
    return write_digits(out, per_label)
