"""Prefix tuning (Li & Liang, 2021): n trainable keys and values in front of every attention layer.

The prefix enters through the model's cache interface: before the backbone runs, a
`DynamicCache` is filled with the prefix (layer l gets keys (B, heads, n, head_dim) and
values alike), so every layer attends to it as to n earlier tokens; the attention mask gets
n leading ones and given position ids move n on. With `generate` the cache already holds the
prefix after the first step and simply grows. Real tokens take positions n, n+1, ... as in
peft. Under grouped-query attention the prefix has the key/value heads' width, as in peft.

The table (n, layers x 2 x heads x head_dim) is laid out as peft's `prompt_embeddings`. It
starts from the keys and values the frozen model computes for real tokens (`init: vocab`,
sampled from the vocabulary, or `init: text`), which Li & Liang found far better than
random; `projection: true` makes it the output of a two-layer tanh MLP instead (their
reparameterisation, init random), folded into the table on save.
HF gradient checkpointing drops the cache in training, so the two are refused together.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from tunelab.errors import MethodError
from tunelab.methods.virtual import (
    InitFromTokens,
    PromptMethod,
    VirtualTokens,
    cache_length,
    cache_shape,
    call_kwargs,
    check_positions,
    init_token_ids,
    lr_note,
    prefix_mask,
)

RECOMMENDED_LR = 3e-2  # MiniLM on SST-2, one short epoch: 0.733 dev accuracy (0.718 at 1e-2)


class PrefixTuningConfig(InitFromTokens):
    name: Literal["prefix_tuning"] = "prefix_tuning"
    init: Literal["vocab", "text", "random"] | None = None  # None: vocab, or random with projection
    projection: bool = False  # the prefix from an MLP over n embeddings (trained), not free
    encoder_hidden_size: int | None = Field(None, ge=1)  # the MLP's width; None: token_dim

    @model_validator(mode="after")
    def _init_fits_projection(self) -> PrefixTuningConfig:
        if self.projection and self.init in ("vocab", "text"):
            raise ValueError(f"method.init: {self.init} sets the prefix itself, but with "
                             "projection: true an MLP makes it; remove init or set projection: false")
        if not self.projection and self.encoder_hidden_size is not None:
            raise ValueError("method.encoder_hidden_size is the projection MLP's width; set "
                             "projection: true or remove it")
        return self


def new_cache(backbone: nn.Module) -> Any:
    from transformers import DynamicCache

    return DynamicCache(config=backbone.config)  # the config says which layers slide


def compute_dtype(backbone: nn.Module) -> torch.dtype:
    """The dtype attention runs in: autocast's when it is on, else the weights'."""
    weight = backbone.get_input_embeddings().weight
    kind = weight.device.type
    return torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else weight.dtype


class PrefixEncoder(VirtualTokens):
    """The prefix table (n, layers * 2 * width), free or from a projection MLP."""

    def __init__(self, num_virtual_tokens: int, layers: int, heads: int, width: int,
                 projection: bool, hidden: int | None):
        super().__init__(num_virtual_tokens)
        self.layers, self.heads, self.head_dim = layers, heads, width // heads
        out = layers * 2 * width
        self.transform: nn.Sequential | None = None
        if projection:
            self.embedding = nn.Embedding(num_virtual_tokens, width)
            self.transform = nn.Sequential(nn.Linear(width, hidden or width), nn.Tanh(),
                                           nn.Linear(hidden or width, out))
        else:
            self.embedding = nn.Embedding(num_virtual_tokens, out)

    def table(self) -> torch.Tensor:
        x = self.embedding.weight  # (n, width) or (n, out)
        return self.transform(x) if self.transform is not None else x  # (n, out)

    def install(self, backbone: nn.Module) -> None:
        backbone.register_forward_pre_hook(self._before, with_kwargs=True)

    def kv(self, dtype: torch.dtype) -> torch.Tensor:
        """(2 * layers, heads, n, head_dim): keys at even rows, values at odd, as peft."""
        n = self.num_virtual_tokens
        return self.table().to(dtype).view(n, 2 * self.layers, self.heads, self.head_dim) \
            .permute(1, 2, 0, 3)

    def fill(self, cache: Any, batch: int, dtype: torch.dtype) -> Any:
        kv = self.kv(dtype)
        for layer in range(self.layers):
            cache.update(kv[2 * layer].expand(batch, -1, -1, -1),
                         kv[2 * layer + 1].expand(batch, -1, -1, -1), layer)
        return cache

    @torch.no_grad()
    def start_from(self, backbone: nn.Module, ids: torch.Tensor) -> None:
        """Set the table to the keys and values the frozen model computes for `ids` (n,)."""
        cache = new_cache(backbone)
        was_training = backbone.training
        backbone.eval()
        backbone(input_ids=ids[None].to(backbone.get_input_embeddings().weight.device),
                 cache=cache, use_cache=True)
        backbone.train(was_training)
        kv = torch.stack([t[0] for layer in cache.layers for t in (layer.keys, layer.values)])
        n = self.num_virtual_tokens  # kv: (2 * layers, heads, n, head_dim)
        self.embedding.weight.copy_(kv.permute(2, 0, 1, 3).reshape(n, -1))

    def _before(self, module: nn.Module, args: tuple, kwargs: dict[str, Any]
                ) -> tuple[tuple, dict[str, Any]]:
        kw = call_kwargs(module, args, kwargs)
        n = self.num_virtual_tokens
        if getattr(module, "gradient_checkpointing", False) and module.training \
                and torch.is_grad_enabled():
            raise MethodError("prefix_tuning cannot train with gradient checkpointing (it drops "
                              "the cache that holds the prefix); set train.gradient_checkpointing: "
                              "false")
        if cache_length(kw.get("cache")) == 0:  # a new sequence: put the prefix in the cache
            ref = kw.get("input_ids") if kw.get("input_ids") is not None else kw["inputs_embeds"]
            check_positions(module, n + ref.shape[1], n)
            cache = kw.get("cache")
            kw["cache"] = self.fill(cache if cache is not None else new_cache(module),
                                    ref.shape[0], compute_dtype(module))
        kw["attention_mask"] = prefix_mask(kw.get("attention_mask"), n)
        if kw.get("position_ids") is not None:
            kw["position_ids"] = kw["position_ids"] + n
        return (), kw


class PrefixTuningMethod(PromptMethod[PrefixTuningConfig]):
    name = "prefix_tuning"
    config_cls = PrefixTuningConfig
    peft_type = "PREFIX_TUNING"

    @classmethod
    def build(cls, backbone: nn.Module, cfg: PrefixTuningConfig) -> PrefixEncoder:
        layers, heads, width = cache_shape(backbone.config, grouped=True)
        encoder = PrefixEncoder(cfg.num_virtual_tokens, layers, heads, width, cfg.projection,
                                cfg.encoder_hidden_size)
        if not cfg.projection:
            ids = init_token_ids(backbone, cfg.model_copy(update={"init": cfg.init or "vocab"}))
            if ids is not None:
                encoder.start_from(backbone, ids)
        return encoder

    @classmethod
    def notes(cls, cfg: PrefixTuningConfig) -> list[str]:
        how = "from a projection MLP" if cfg.projection else f"init: {cfg.init or 'vocab'}"
        return [f"a prefix of {cfg.num_virtual_tokens} keys and values in every attention layer "
                f"({how})", lr_note(RECOMMENDED_LR)]

    @classmethod
    def own_config(cls, model: nn.Module, cfg: PrefixTuningConfig) -> dict[str, Any]:
        width = cache_shape(model.base_model.config, grouped=True)[2]
        return {"encoder_hidden_size": cfg.encoder_hidden_size or width,
                "prefix_projection": cfg.projection, "init_weights": None}

    @classmethod
    def config_from_adapter(cls, config: dict[str, Any], source: str) -> PrefixTuningConfig:
        # a projected prefix is saved as its output table (peft's inference mode)
        return PrefixTuningConfig(num_virtual_tokens=cls.check_adapter(config, source),
                                  init="random")

    @classmethod
    def check_run(cls, run: Any) -> None:
        super().check_run(run)
        if run.train.gradient_checkpointing:
            raise ValueError("train.gradient_checkpointing: transformers drops the cache in "
                             "checkpointed layers, and the prefix lives in the cache; set it to "
                             "false for prefix_tuning")
