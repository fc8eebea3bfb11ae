"""Build the task model and tokenizer: unchanged transformers objects, quiet about expected noise."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunelab.errors import ModelError

# Config attributes that hold dropout rates in common transformers architectures.
DROPOUT_KEYS = ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout",
                "dropout", "attention_dropout", "hidden_dropout", "resid_pdrop", "embd_pdrop",
                "attn_pdrop", "summary_first_dropout")


def load_tokenizer(path: Path) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path))
    except Exception as exc:
        raise ModelError(f"{path}: cannot load a tokenizer ({type(exc).__name__}: {exc})") from None


def load_classifier(path: Path, labels: list[str], dropout: float | None = None,
                    weights_from: Path | None = None) -> Any:
    """A sequence-classification model with len(labels) outputs.

    `dropout` overrides every dropout rate the config has. `weights_from` loads a full
    fine-tuned checkpoint (a run's model/ directory) instead of the base weights.
    """
    import transformers
    from transformers import AutoConfig, AutoModelForSequenceClassification

    transformers.logging.set_verbosity_error()  # "newly initialised classifier" is expected
    transformers.utils.logging.disable_progress_bar()
    source = weights_from or path
    try:
        config = AutoConfig.from_pretrained(str(source))
    except Exception as exc:
        raise ModelError(f"{source}: cannot read the model config ({exc})") from None
    config.num_labels = len(labels)
    config.id2label = dict(enumerate(labels))
    config.label2id = {label: i for i, label in enumerate(labels)}
    if dropout is not None:
        for key in DROPOUT_KEYS:
            if isinstance(getattr(config, key, None), float):
                setattr(config, key, dropout)
    if getattr(config, "pad_token_id", None) is None:
        config.pad_token_id = getattr(config, "eos_token_id", None)
    try:
        return AutoModelForSequenceClassification.from_pretrained(str(source), config=config)
    except Exception as exc:
        raise ModelError(f"{source}: cannot build a sequence classifier ({type(exc).__name__}: "
                         f"{exc})") from None
