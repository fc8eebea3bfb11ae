"""P-tuning (Liu et al., 2021): virtual input embeddings produced by a small trained network.

A table of n embeddings goes through an MLP (or a bidirectional LSTM and an MLP), and the
output is prepended to the input as in prompt tuning; the network couples the virtual
tokens, which the paper found to train more stably than a free table. Shapes and parameter
names follow peft's PromptEncoder (`embedding`, `mlp_head.{0,2,4}`, `lstm_head`), so weights
copy across. On save the network is run once and its output stored as the table
(`prompt_embeddings`), as peft does: a loaded adapter is that table alone.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn

from tunelab.methods.prompt_tuning import PromptTuningConfig, PromptTuningMethod
from tunelab.methods.virtual import InputPrompt, PromptMethod, VirtualTokensConfig, lr_note

RECOMMENDED_LR = 3e-2  # MiniLM on SST-2, one short epoch: 0.595 dev accuracy (0.553 at 1e-2)


class PTuningConfig(VirtualTokensConfig):
    name: Literal["p_tuning"] = "p_tuning"
    encoder: Literal["mlp", "lstm"] = "mlp"
    encoder_hidden_size: int | None = Field(None, ge=1)  # None: the model's hidden size
    encoder_num_layers: int = Field(2, ge=1, le=8)  # LSTM layers (the MLP always has 3 Linear)
    encoder_dropout: float = Field(0.0, ge=0.0, lt=1.0)  # between LSTM layers


class PromptEncoder(InputPrompt):
    """embedding (n, D) -> [LSTM (n, 2h)] -> MLP -> (n, D) virtual input embeddings."""

    def __init__(self, num_virtual_tokens: int, dim: int, cfg: PTuningConfig):
        super().__init__(num_virtual_tokens)
        hidden = cfg.encoder_hidden_size or dim
        self.embedding = nn.Embedding(num_virtual_tokens, dim)
        if cfg.encoder == "lstm":
            self.lstm_head: nn.LSTM | None = nn.LSTM(
                dim, hidden, num_layers=cfg.encoder_num_layers, dropout=cfg.encoder_dropout,
                bidirectional=True, batch_first=True)
            self.mlp_head = nn.Sequential(nn.Linear(2 * hidden, 2 * hidden), nn.ReLU(),
                                          nn.Linear(2 * hidden, dim))
        else:
            self.lstm_head = None
            self.mlp_head = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(),
                                          nn.Linear(hidden, hidden), nn.ReLU(),
                                          nn.Linear(hidden, dim))

    def table(self) -> torch.Tensor:
        x = self.embedding.weight.unsqueeze(0)  # (1, n, D)
        if self.lstm_head is not None:
            x = self.lstm_head(x)[0]  # (1, n, 2h)
        return self.mlp_head(x)[0]  # (n, D)


class PTuningMethod(PromptMethod[PTuningConfig]):
    name = "p_tuning"
    config_cls = PTuningConfig
    peft_type = "P_TUNING"

    @classmethod
    def build(cls, backbone: nn.Module, cfg: PTuningConfig) -> PromptEncoder:
        return PromptEncoder(cfg.num_virtual_tokens, backbone.get_input_embeddings().embedding_dim,
                             cfg)

    @classmethod
    def notes(cls, cfg: PTuningConfig) -> list[str]:
        return [f"{cfg.num_virtual_tokens} virtual tokens from a {cfg.encoder.upper()} prompt "
                "encoder, prepended to every input", lr_note(RECOMMENDED_LR)]

    @classmethod
    def own_config(cls, model: nn.Module, cfg: PTuningConfig) -> dict[str, Any]:
        return {"encoder_reparameterization_type": cfg.encoder.upper(),
                "encoder_hidden_size": cfg.encoder_hidden_size
                or model.get_input_embeddings().embedding_dim,
                "encoder_num_layers": cfg.encoder_num_layers,
                "encoder_dropout": cfg.encoder_dropout}

    @classmethod
    def config_from_adapter(  # type: ignore[override]
            cls, config: dict[str, Any], source: str) -> PromptTuningConfig:
        # peft saves the encoder's output, not the encoder: the adapter is a plain table, so
        # it loads as prompt tuning: another config type than this method trains with
        return PromptTuningMethod.config_from_adapter(config, source)
