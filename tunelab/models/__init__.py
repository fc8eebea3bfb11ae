"""Models: resolve a name to a local directory and build the task model and tokenizer."""

from tunelab.models.load import (load_causal_lm, load_classifier, load_token_classifier,
                                 load_tokenizer)
from tunelab.models.resolve import PACKAGED, resolve

__all__ = ["PACKAGED", "resolve", "load_classifier", "load_token_classifier", "load_causal_lm",
           "load_tokenizer"]
