"""Which modules of a transformers task model are its task head, and which parameters each owns.

A model concept (methods train the head, MLM setup re-initialises it, runs save it), so it
lives below methods.
"""

from __future__ import annotations

from torch import nn

HEAD_NAMES = ("classifier", "score")


def head_modules(model: nn.Module) -> list[str]:
    """Names of the task head modules at the top of a transformers task model. A masked LM's
    head is everything beside its encoder (BERT's `cls`, RoBERTa's `lm_head`). A multitask
    model lists its heads, one per task."""
    if type(model).__name__.endswith("ForMaskedLM"):
        return [n for n, _ in model.named_children() if n != model.base_model_prefix]
    own = [n for n in HEAD_NAMES if isinstance(getattr(model, n, None), nn.Module)]
    return own or list(getattr(model, "head_names", []))


def owned_parameters(model: nn.Module, name: str) -> list[tuple[str, nn.Parameter]]:
    """(name inside the module, parameter) for the parameters module `name` owns. A weight tied
    to another module (a masked LM's output layer sharing the input embeddings) is owned by the
    module that registered it first, so an MLM head never trains or saves the embeddings."""
    prefix = name + "."
    return [(n[len(prefix):], p) for n, p in model.named_parameters() if n.startswith(prefix)]
