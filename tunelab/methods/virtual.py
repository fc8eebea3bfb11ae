"""What the prompt methods share: trainable virtual tokens fed to a frozen model through hooks.

Prompt tuning and p-tuning prepend n virtual token embeddings to the input; prefix tuning
puts n learned keys and values in front of every attention layer's, through the model's
cache (transformers' `DynamicCache`). Neither has a layer to replace, so the encoder that
makes them is attached to the model's backbone (`model.base_model`, e.g. `bert` or `model`)
as `prompt_encoder`, and two hooks on the backbone do the rest:

- before its forward: prepend the virtual tokens (or fill the cache with the prefix), and
  extend attention_mask, token_type_ids and position_ids to match;
- after it: drop the virtual positions from the hidden states, so everything downstream
  (the task head, tunelab's causal LM loss, `generate`) sees one position per real token.

The model object stays the user's: `model(...)`, `model.base_model(...)` and `model.generate`
all go through the hooks. Generation needs no special case: while the cache holds the
virtual tokens, each new step only extends the mask and shifts the positions by n.

Semantics follow peft (the virtual tokens take positions 0..n-1, real tokens follow; a BERT
pooler reads the first virtual token), and adapters are saved as peft saves them: the final
virtual-token table as `prompt_embeddings` and the task head as `base_model.<head>.*`.
A reparameterised encoder (p-tuning's MLP, prefix tuning's projection) is folded into that
table on save, so a loaded adapter is the table alone, as in peft's inference mode.
"""

from __future__ import annotations

import inspect
import math
from pathlib import Path
from typing import Any, Literal, TypeVar

import torch
from pydantic import Field, model_validator
from torch import nn

from tunelab.errors import AdapterError, MethodError
from tunelab.methods.base import (
    PEFT_PREFIX,
    AdapterMethod,
    ApplyReport,
    freeze_all,
    refuse_unsupported,
    report,
    required,
    unfreeze,
)
from tunelab.models import load_tokenizer
from tunelab.schema import StrictModel

ATTR = "prompt_encoder"  # the encoder's attribute on the backbone (its parameters' name part)
SAVED_KEY = "prompt_embeddings"  # peft's key for the virtual-token table


class VirtualTokensConfig(StrictModel):
    name: str  # narrowed by each method's config
    num_virtual_tokens: int = Field(20, ge=1, le=1024)


class InitFromTokens(VirtualTokensConfig):
    """Start the virtual tokens from real tokens: a text, or tokens sampled from the vocabulary."""

    init: Literal["vocab", "text", "random"] = "vocab"  # 'text' needs init_text
    init_text: str | None = None

    @model_validator(mode="after")
    def _text_iff_text_init(self) -> InitFromTokens:
        if self.init == "text" and not (self.init_text or "").strip():
            raise ValueError("method.init_text: init 'text' needs the text to start from, e.g. "
                             "init_text: 'Classify the sentiment of this review:'")
        if self.init != "text" and self.init_text is not None:
            raise ValueError(f"method.init_text is only read with init: text (init is "
                             f"{self.init!r}); remove it or set init: text")
        return self


def init_token_ids(backbone: nn.Module, cfg: InitFromTokens) -> torch.Tensor | None:
    """The n real tokens the virtual ones start from (None: random init). A text is cut or
    repeated to n tokens, as peft does; vocabulary samples are uniform over the embedding rows."""
    n = cfg.num_virtual_tokens
    if cfg.init == "random":
        return None
    if cfg.init == "vocab":
        return torch.randint(0, backbone.get_input_embeddings().num_embeddings, (n,))

    where = getattr(backbone.config, "name_or_path", "") or ""
    if not where:
        raise MethodError("method.init: text reads the model's tokenizer, but this model was not "
                          "loaded from a directory; use init: vocab")
    ids = load_tokenizer(Path(where))(cfg.init_text)["input_ids"]
    if not ids:
        raise MethodError(f"method.init_text {cfg.init_text!r} gives no tokens")
    return torch.tensor((ids * math.ceil(n / len(ids)))[:n], dtype=torch.long)


class VirtualTokens(nn.Module):
    """Makes the virtual tokens; subclasses define `table()` and `install(backbone)`."""

    def __init__(self, num_virtual_tokens: int):
        super().__init__()
        self.num_virtual_tokens = num_virtual_tokens
        self._strip = False  # set before a forward that prepended, read after it

    def table(self) -> torch.Tensor:
        """(n, width): what peft saves as prompt_embeddings."""
        raise NotImplementedError

    def install(self, backbone: nn.Module) -> None:
        raise NotImplementedError

    @torch.no_grad()
    def saved_table(self) -> torch.Tensor:
        """The table in eval mode (no encoder dropout), as saved in the adapter."""
        was_training = self.training
        self.eval()
        out = self.table().detach().float().cpu().contiguous()
        self.train(was_training)
        return out


class InputPrompt(VirtualTokens):
    """Virtual tokens as input embeddings (prompt tuning, p-tuning), prepended to the real ones."""

    def install(self, backbone: nn.Module) -> None:
        backbone.register_forward_pre_hook(self._before, with_kwargs=True)
        backbone.register_forward_hook(self._after)

    def _before(self, module: nn.Module, args: tuple, kwargs: dict[str, Any]
                ) -> tuple[tuple, dict[str, Any]]:
        kw = call_kwargs(module, args, kwargs)
        n = self.num_virtual_tokens
        self._strip = False
        if cache_length(kw.get("cache")) > 0:  # generating: the virtual tokens are in the cache
            kw["attention_mask"] = prefix_mask(kw.get("attention_mask"), n)
            if kw.get("position_ids") is not None:
                kw["position_ids"] = kw["position_ids"] + n
            return (), kw
        embeds = kw.get("inputs_embeds")
        if embeds is None:
            embeds = module.get_input_embeddings()(kw["input_ids"])  # (B, T, D)
        batch = embeds.shape[0]
        check_positions(module, n + embeds.shape[1], n)
        prompts = self.table().to(embeds.dtype).unsqueeze(0).expand(batch, -1, -1)  # (B, n, D)
        kw["inputs_embeds"] = torch.cat([prompts, embeds], dim=1)  # (B, n+T, D)
        kw["input_ids"] = None
        kw["attention_mask"] = prefix_mask(kw.get("attention_mask"), n)
        if kw.get("token_type_ids") is not None:  # segment 0 for the virtual tokens, as peft
            types = kw["token_type_ids"]
            kw["token_type_ids"] = torch.cat([types.new_zeros(batch, n), types], dim=1)
        if kw.get("position_ids") is not None:  # given positions follow the virtual 0..n-1
            pos = kw["position_ids"]
            head = torch.arange(n, device=pos.device, dtype=pos.dtype).expand(pos.shape[0], n)
            kw["position_ids"] = torch.cat([head, pos + n], dim=1)
        self._strip = True
        return (), kw

    def _after(self, module: nn.Module, args: tuple, output: Any) -> Any:
        if not self._strip:
            return output
        self._strip = False
        return strip_virtual(output, self.num_virtual_tokens)


def lr_note(lr: float) -> str:
    """The report line suggesting a learning rate; the user's train.lr is never changed."""
    return f"suggested train.lr: about {lr:g} (virtual tokens train best at a high rate)"


def backbone_of(model: nn.Module, method: str) -> nn.Module:
    if getattr(model.config, "is_encoder_decoder", False):
        raise MethodError(f"method {method}: encoder-decoder models are not supported by the "
                          "prompt methods yet; use a decoder-only or encoder-only model, or lora")
    return model.base_model


def encoder_of(model: nn.Module) -> tuple[str, VirtualTokens]:
    """(its name in the model, the encoder) of the one prompt encoder a model carries."""
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, VirtualTokens)]
    if len(found) != 1:
        raise AdapterError(f"expected one prompt encoder in the model, found {len(found)}")
    return found[0]


def call_kwargs(module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The call's arguments all by name (BERT heads pass input_ids positionally); the cache
    under transformers 5's name `cache` (callers may still say past_key_values)."""
    names = list(inspect.signature(module.forward).parameters)
    kw = dict(zip(names, args)) | kwargs
    if "past_key_values" in kw:
        kw["cache"] = kw.pop("past_key_values")
    return kw


def prefix_mask(mask: torch.Tensor | None, n: int) -> torch.Tensor | None:
    """A (B, T) padding mask with n leading ones for the virtual positions."""
    if mask is None:
        return None
    if mask.dim() != 2:
        raise MethodError("prompt methods need a (batch, length) attention mask; a 4-D mask "
                          "(packed examples) cannot be extended by the virtual tokens")
    return torch.cat([mask.new_ones(mask.shape[0], n), mask], dim=1)


def cache_length(cache: Any) -> int:
    return 0 if cache is None else int(cache.get_seq_length())


def check_positions(backbone: nn.Module, total: int, n: int) -> None:
    """Absolute position tables (BERT) end: say so instead of an index error deep inside."""
    table = getattr(getattr(backbone, "embeddings", None), "position_embeddings", None)
    if isinstance(table, nn.Embedding) and total > table.num_embeddings:
        raise MethodError(f"{n} virtual tokens + {total - n} input tokens exceed the model's "
                          f"{table.num_embeddings} positions; lower model.max_length or "
                          "method.num_virtual_tokens")


def strip_virtual(output: Any, n: int) -> Any:
    """Drop the n virtual positions from a backbone output's hidden states."""
    if isinstance(output, tuple):
        return (output[0][:, n:], *output[1:])
    output.last_hidden_state = output.last_hidden_state[:, n:]  # (B, n+T, H) -> (B, T, H)
    if getattr(output, "hidden_states", None) is not None:
        output.hidden_states = tuple(h[:, n:] for h in output.hidden_states)
    return output


VC = TypeVar("VC", bound=VirtualTokensConfig)


class PromptMethod(AdapterMethod[VC]):
    """The adapter side shared by the three prompt methods: peft's prompt-learning layout."""

    head_prefix = "base_model."  # peft names a prompt method's head base_model.<head>.*

    @classmethod
    def build(cls, backbone: nn.Module, cfg: VC) -> VirtualTokens:
        raise NotImplementedError

    @classmethod
    def apply(cls, model: nn.Module, cfg: VC, head: list[str]) -> ApplyReport:
        backbone = backbone_of(model, cls.name)
        if any(isinstance(m, VirtualTokens) for m in model.modules()):
            raise MethodError(f"method {cls.name}: the model already carries virtual tokens")
        freeze_all(model)
        encoder = cls.build(backbone, cfg)
        ref = backbone.get_input_embeddings().weight
        encoder.to(device=ref.device)
        backbone.add_module(ATTR, encoder)
        encoder.install(backbone)
        unfreeze(model, head)
        name = next(n for n, m in model.named_modules() if m is encoder)
        return report(cls.name, model, [name], head, cls.notes(cfg))

    @classmethod
    def notes(cls, cfg: VC) -> list[str]:
        return []

    @classmethod
    def adapter_tensors(cls, model: nn.Module, head: list[str]) -> dict[str, torch.Tensor]:
        return {SAVED_KEY: encoder_of(model)[1].saved_table()}

    @classmethod
    def adapter_config(cls, model: nn.Module, cfg: VC, head: list[str]) -> dict[str, Any]:
        backbone = model.base_model
        layers, heads, dim = cache_shape(backbone.config, cls.peft_type == "PREFIX_TUNING")
        return {"num_virtual_tokens": cfg.num_virtual_tokens, "token_dim": dim,
                "num_transformer_submodules": 1, "num_attention_heads": heads,
                "num_layers": layers, **cls.own_config(model, cfg)}

    @classmethod
    def own_config(cls, model: nn.Module, cfg: VC) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def check_adapter(cls, config: dict[str, Any], source: str) -> int:
        """The adapter's num_virtual_tokens, after refusing what tunelab cannot load."""
        refuse_unsupported(config, {"num_transformer_submodules": 1}, source)
        n = required(config, "num_virtual_tokens", source)
        if not isinstance(n, int) or n < 1:
            raise AdapterError(f"{source}: num_virtual_tokens must be a positive integer (got {n!r})")
        return n

    @classmethod
    def take_extra_tensors(cls, model: nn.Module, state: dict[str, torch.Tensor],
                           source: str) -> dict[str, torch.Tensor]:
        """peft's `prompt_embeddings` become the encoder's table; `base_model.<head>` keys get
        the `base_model.model.` prefix the shared loader reads."""
        if SAVED_KEY not in state:
            raise AdapterError(f"{source}: no '{SAVED_KEY}' tensor; is this a prompt-method adapter?")
        name = encoder_of(model)[0]
        out = {PEFT_PREFIX + name + ".embedding.weight": state[SAVED_KEY]}
        for key, tensor in state.items():
            if key == SAVED_KEY:
                continue
            out[key if key.startswith(PEFT_PREFIX) else PEFT_PREFIX + key.removeprefix("base_model.")] \
                = tensor
        return out

    @classmethod
    def check_run(cls, run: Any) -> None:
        if getattr(run.data, "packing", False):
            raise ValueError(f"data.packing: {cls.name} prepends virtual tokens to every example, "
                             "and a packed row holds many; set data.packing: false")


def cache_shape(config: Any, grouped: bool) -> tuple[int, int, int]:
    """(layers, heads, token_dim) as peft records them. For prefix tuning on grouped-query
    attention the cached keys have num_key_value_heads heads, so token_dim = head_dim x that."""
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    layers, heads, dim = config.num_hidden_layers, config.num_attention_heads, config.hidden_size
    kv_heads = getattr(config, "num_key_value_heads", None)
    if grouped and kv_heads:
        head_dim = getattr(config, "head_dim", None) or dim // heads
        return layers, kv_heads, head_dim * kv_heads
    return layers, heads, dim
