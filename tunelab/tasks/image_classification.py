"""Image classification: batches of pixels made by the model's own image processor, cross-
entropy on the logits, accuracy and macro-F1 as for text classification."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tunelab.data.batching import plan_batches
from tunelab.data.images import ImageData, ImageExample, load_image
from tunelab.tasks.base import Task
from tunelab.tasks.classification import Predictions
from tunelab.tasks.metrics import classification_metrics


class ImageClassificationTask(Task):
    name = "image_classification"
    default_metric = "accuracy"

    def __init__(self, labels: list[str], processor: Any, mode: str = "RGB"):
        self.labels = labels
        self.index = {label: i for i, label in enumerate(labels)}
        self.processor = processor  # AutoImageProcessor: resize, rescale, normalise
        self.mode = mode  # the Pillow mode images are converted to: RGB, or L (one channel)

    @classmethod
    def from_run_info(cls, tokenizer: Any, info: dict[str, Any]) -> "ImageClassificationTask":
        """The task of a trained run (`tokenizer`: the run's image processor)."""
        return cls(info["labels"], tokenizer, info.get("image_mode", "RGB"))

    def encode(self, examples: list[ImageExample]) -> ImageData:
        """Files and label ids; a label outside the run's labels gets -1 (predict only)."""
        return ImageData([e.path for e in examples], [self.index.get(e.label, -1) for e in examples])

    def pixels(self, data: ImageData, index: list[int]) -> torch.Tensor:
        """(B, C, H, W) float pixels of images `index`, as the processor prepares them."""
        images = [load_image(data.paths[i], self.mode) for i in index]
        return self.processor(images=images, return_tensors="pt")["pixel_values"].float()

    def collate(self, data: ImageData, index: list[int]) -> dict[str, torch.Tensor]:
        return {"pixel_values": self.pixels(data, index),
                "labels": torch.tensor([data.labels[i] for i in index], dtype=torch.long)}

    def plan_batches(self, lengths: list[int], batch_size: int, seed: int, epoch: int,
                     bucket: bool) -> list[list[int]]:
        """Random batches: every image is resized alike, so sorting by size gains nothing."""
        return plan_batches(lengths, batch_size, seed, epoch, bucket=False)

    @staticmethod
    def units(data: ImageData, index: list[int]) -> int:
        """Examples: the loss is a mean per image."""
        return len(index)

    @staticmethod
    def logits(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(pixel_values=batch["pixel_values"]).logits.float()  # (B, n_labels)

    @staticmethod
    def loss_sum(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Summed (not mean) cross-entropy, so accumulation divides by the step's image count."""
        return F.cross_entropy(ImageClassificationTask.logits(model, batch), batch["labels"],
                               reduction="sum")

    @torch.no_grad()
    def predict(self, model: nn.Module, data: ImageData, batch_size: int, device: torch.device,
                autocast: torch.autocast | None = None) -> Predictions:
        """Class probabilities per image; the loss covers the images with a known label."""
        was_training = model.training
        model.eval()
        probs = torch.empty(len(data), len(self.labels))
        loss, known = 0.0, 0
        for start in range(0, len(data), batch_size):
            index = list(range(start, min(start + batch_size, len(data))))
            batch = {k: v.to(device) for k, v in self.collate(data, index).items()}
            with autocast or nullcontext():
                logits = self.logits(model, batch)  # (B, n_labels)
            gold = batch["labels"] >= 0
            if gold.any():
                loss += F.cross_entropy(logits[gold], batch["labels"][gold], reduction="sum").item()
                known += int(gold.sum())
            probs[index] = logits.softmax(-1).cpu()
        model.train(was_training)
        return Predictions(probs, loss / max(known, 1))

    def evaluate(self, model: nn.Module, data: ImageData, batch_size: int, device: torch.device,
                 autocast: torch.autocast | None = None) -> dict[str, Any]:
        pred = self.predict(model, data, batch_size, device, autocast)
        return {"loss": pred.loss, **classification_metrics(pred.labels, data.labels,
                                                            len(self.labels))}
