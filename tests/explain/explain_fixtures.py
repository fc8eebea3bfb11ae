"""Models for explanation tests: a toy classifier whose label is decided by one known token,
and the tiny BERT as a 2-label sequence classifier (both with MiniLM's real tokenizer)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

KEY = "great"  # the toy model's deciding word
INFO = {"task": "classification", "labels": ["0", "1"], "max_length": 64, "text_pair": False}
SENTENCES = ["the movie was great and the plot was fine",
             "great acting , a slow story and a long night at the cinema",
             "i thought the music and the camera work were great",
             "well , it was great , unbelievably so , for a sequel of a sequel"]


class OneTokenClassifier(nn.Module):
    """logits = W · sum of token embeddings; only `key` has a large component on the one
    direction W reads, so its presence alone decides label 1 (others nudge a little)."""

    def __init__(self, vocab: int, key: int, pad: int, dim: int = 8, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.embeddings = nn.Embedding(vocab, dim)
        self.classifier = nn.Linear(dim, 2, bias=False)
        self.config = SimpleNamespace(_attn_implementation=None)
        with torch.no_grad():
            w = torch.randn(vocab, dim, generator=g) * 0.1
            w[key, 0], w[pad] = 3.0, 0.0
            self.embeddings.weight.copy_(w)
            head = torch.randn(2, dim, generator=g) * 0.1
            head[:, 0] = torch.tensor([-1.0, 1.0])
            self.classifier.weight.copy_(head)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None, **_) -> SimpleNamespace:
        h = (self.embeddings(input_ids) * attention_mask[..., None]).sum(1)  # (B, D)
        return SimpleNamespace(logits=self.classifier(h))  # (B, 2)


def tokenizer():
    from transformers import AutoTokenizer

    from tunelab.runs.resolve import resolve

    return AutoTokenizer.from_pretrained(str(resolve("minilm")))


def toy_model(tok) -> OneTokenClassifier:
    return OneTokenClassifier(tok.vocab_size, tok.convert_tokens_to_ids(KEY),
                              tok.pad_token_id).eval()


def sharp_bert(tok, seed: int = 0):
    """A random 2-layer, hidden-32 BERT classifier with large weights (init std 0.5), so its
    output moves a lot along the IG path: a hard case for completeness."""
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128,
                        num_labels=2, initializer_range=0.5)
    torch.manual_seed(seed)
    return BertForSequenceClassification(config).eval()


def randomise(model: nn.Module, seed: int) -> nn.Module:
    """Every weight redrawn (Adebayo et al. 2018's full randomisation), same shapes."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * max(float(p.std()), 0.02))
    return model


def spearman(a: list[float], b: list[float]) -> float:
    ra = torch.tensor(a).argsort().argsort().float()
    rb = torch.tensor(b).argsort().argsort().float()
    return float(torch.corrcoef(torch.stack([ra, rb]))[0, 1])


def toy_cls_run(model_dir: Path, root: Path) -> Path:
    """The tiny BERT with LoRA, 4 steps on the toy sentiment set: a real run directory."""
    from conftest import tiny_config, toy_sentiment_files

    from tunelab.config import validate
    from tunelab.recipes.run import train

    data = toy_sentiment_files(root, dev=12)
    tree = tiny_config(model_dir, data, root / "run", max_steps=4, eval_every=4,
                       checkpoint_every=4)
    train(validate(tree), log=lambda _: None)
    return root / "run"
