"""Prompt tuning (Lester et al., 2021): n trainable input embeddings in front of every input.

Only the virtual-token table trains (and a classifier's head). The table starts from real
token embeddings: a text (`init: text`, e.g. a task description) or tokens sampled from the
vocabulary (`init: vocab`, the default); `random` draws N(0, 1) as peft's RANDOM does, far
from the scale of real embeddings. Small models need a high learning rate (about 1e-1).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from tunelab.methods.virtual import (
    InitFromTokens,
    InputPrompt,
    PromptMethod,
    init_token_ids,
    lr_note,
)

PEFT_INIT = {"vocab": "SAMPLE_VOCAB", "text": "TEXT", "random": "RANDOM"}
RECOMMENDED_LR = 1e-1  # MiniLM SST-2, one short epoch: 0.668 dev accuracy (3e-2: 0.553, 0.3: 0.575)


class PromptTuningConfig(InitFromTokens):
    name: Literal["prompt_tuning"] = "prompt_tuning"


class PromptEmbedding(InputPrompt):
    """A (n, D) table of virtual input embeddings."""

    def __init__(self, num_virtual_tokens: int, dim: int):
        super().__init__(num_virtual_tokens)
        self.embedding = nn.Embedding(num_virtual_tokens, dim)

    def table(self) -> torch.Tensor:
        return self.embedding.weight  # (n, D)


class PromptTuningMethod(PromptMethod[PromptTuningConfig]):
    name = "prompt_tuning"
    config_cls = PromptTuningConfig
    peft_type = "PROMPT_TUNING"

    @classmethod
    def build(cls, backbone: nn.Module, cfg: PromptTuningConfig) -> PromptEmbedding:
        words = backbone.get_input_embeddings()
        encoder = PromptEmbedding(cfg.num_virtual_tokens, words.embedding_dim)
        ids = init_token_ids(backbone, cfg)
        if ids is not None:
            with torch.no_grad():
                encoder.embedding.weight.copy_(words.weight[ids.to(words.weight.device)])
        return encoder

    @classmethod
    def notes(cls, cfg: PromptTuningConfig) -> list[str]:
        return [f"{cfg.num_virtual_tokens} virtual tokens prepended to every input (init: "
                f"{cfg.init})", lr_note(RECOMMENDED_LR)]

    @classmethod
    def own_config(cls, model: nn.Module, cfg: PromptTuningConfig) -> dict[str, Any]:
        text = cfg.init == "text"
        return {"prompt_tuning_init": PEFT_INIT[cfg.init],
                "prompt_tuning_init_text": cfg.init_text if text else None,
                # peft requires it with TEXT; it is not read in inference mode
                "tokenizer_name_or_path": model.name_or_path if text else None,
                "tokenizer_kwargs": None}

    @classmethod
    def config_from_adapter(cls, config: dict[str, Any], source: str) -> PromptTuningConfig:
        # the saved table replaces the init, so none is run (peft's inference mode)
        return PromptTuningConfig(num_virtual_tokens=cls.check_adapter(config, source),
                                  init="random")
