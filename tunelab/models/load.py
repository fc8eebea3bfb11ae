"""Build the task model and tokenizer: unchanged transformers objects, quiet about expected noise.

Loading never runs code from the model directory: trust_remote_code is always False (a
config whose auto_map names its own Python module is refused), and transformers reads
weights from safetensors or, for a legacy .bin, with torch.load(weights_only=True), which
refuses any pickle that would call a function."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunelab.errors import ModelError
from tunelab.models.pooling import use_mean_pooling

# Config attributes that hold dropout rates in common transformers architectures.
DROPOUT_KEYS = ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout",
                "dropout", "attention_dropout", "hidden_dropout", "resid_pdrop", "embd_pdrop",
                "attn_pdrop", "summary_first_dropout")

# The transformers auto class that loads a merged run's checkpoint, by task (or route:
# seq2seq translation runs). One table: merge and export name the class from it.
AUTO_CLASSES = {"classification": "AutoModelForSequenceClassification",
                "token_classification": "AutoModelForTokenClassification",
                "causal_lm": "AutoModelForCausalLM", "seq2seq": "AutoModelForSeq2SeqLM",
                "masked_lm": "AutoModelForMaskedLM",
                "image_classification": "AutoModelForImageClassification"}


def load_tokenizer(path: Path) -> Any:
    """The model's tokenizer; one without a pad token (GPT-2, Llama) pads with its EOS, and the
    model config is given the same id (load_classifier), so padded positions are never read."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=False)
    except Exception as exc:
        raise ModelError(f"{path}: cannot load a tokenizer ({type(exc).__name__}: {exc})") from None
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _config(source: Path, dropout: float | None) -> Any:
    """The model config, with every dropout rate it has set to `dropout` when given."""
    import transformers
    from transformers import AutoConfig

    transformers.logging.set_verbosity_error()  # "newly initialised classifier" is expected
    transformers.utils.logging.disable_progress_bar()
    try:
        config = AutoConfig.from_pretrained(str(source), trust_remote_code=False)
    except Exception as exc:
        raise ModelError(f"{source}: cannot read the model config ({exc})") from None
    if dropout is not None:
        for key in DROPOUT_KEYS:
            if isinstance(getattr(config, key, None), float):
                setattr(config, key, dropout)
    return config


def load_classifier(path: Path, labels: list[str], dropout: float | None = None,
                    weights_from: Path | None = None, pad_token_id: int | None = None,
                    pooling: str | None = None) -> Any:
    """A sequence-classification model with len(labels) outputs.

    `dropout` overrides every dropout rate the config has. `weights_from` loads a full
    fine-tuned checkpoint (a run's model/ directory) instead of the base weights. `pooling`
    "mean": the head reads the tokens' mean, not the pooler (tunelab/models/pooling.py).
    """
    from transformers import AutoModelForSequenceClassification

    model = _labelled_model(AutoModelForSequenceClassification, "a sequence classifier", path,
                            labels, dropout, weights_from, pad_token_id)
    if pooling == "mean":
        use_mean_pooling(model)
    return model


def load_token_classifier(path: Path, labels: list[str], dropout: float | None = None,
                          weights_from: Path | None = None, pad_token_id: int | None = None) -> Any:
    """A token-classification model (one label per sub-token) with len(labels) outputs;
    id2label/label2id are set, so transformers and peft read the saved run's tags."""
    from transformers import AutoModelForTokenClassification

    return _labelled_model(AutoModelForTokenClassification, "a token classifier", path, labels,
                           dropout, weights_from, pad_token_id)


def _labelled_model(auto_cls: Any, what: str, path: Path, labels: list[str],
                    dropout: float | None, weights_from: Path | None,
                    pad_token_id: int | None) -> Any:
    source = weights_from or path
    config = _config(source, dropout)
    config.num_labels = len(labels)
    config.id2label = dict(enumerate(labels))
    config.label2id = {label: i for i, label in enumerate(labels)}
    if pad_token_id is not None:
        config.pad_token_id = pad_token_id  # decoders find the last real token by this id
    try:
        return auto_cls.from_pretrained(str(source), config=config, trust_remote_code=False)
    except Exception as exc:
        raise ModelError(f"{source}: cannot build {what} ({type(exc).__name__}: {exc})") from None


def load_causal_lm(path: Path, dropout: float | None = None, weights_from: Path | None = None) -> Any:
    """A causal LM (Llama, Qwen, Mistral, GPT-2, ...) in float32; `weights_from` as above."""
    from transformers import AutoModelForCausalLM

    return _load_lm(AutoModelForCausalLM, "a causal LM", path, dropout, weights_from)


def _load_lm(auto_class: Any, what: str, path: Path, dropout: float | None,
             weights_from: Path | None) -> Any:
    import torch

    source = weights_from or path
    config = _config(source, dropout)
    try:
        return auto_class.from_pretrained(str(source), config=config, dtype=torch.float32,
                                         trust_remote_code=False)
    except Exception as exc:
        raise ModelError(f"{source}: cannot build {what} ({type(exc).__name__}: {exc})") from None


def is_encoder_decoder(path: Path) -> bool:
    """T5, BART, Marian...: a separate encoder and decoder (AutoModelForSeq2SeqLM)."""
    return bool(getattr(_config(path, None), "is_encoder_decoder", False))


def load_seq2seq(path: Path, dropout: float | None = None, weights_from: Path | None = None) -> Any:
    """An encoder-decoder LM (T5, BART, Marian) in float32; `weights_from` as above."""
    from transformers import AutoModelForSeq2SeqLM

    return _load_lm(AutoModelForSeq2SeqLM, "an encoder-decoder LM", path, dropout, weights_from)
