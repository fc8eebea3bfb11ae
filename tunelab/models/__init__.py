"""Models: resolve a name to a local directory and build the task model and tokenizer.

A run directory as model.name is resolved one layer up, in tunelab.runs.resolve."""

from tunelab.models.load import (
                                 is_encoder_decoder,
                                 load_causal_lm,
                                 load_classifier,
                                 load_seq2seq,
                                 load_token_classifier,
                                 load_tokenizer,
)
from tunelab.models.resolve import PACKAGED

__all__ = ["PACKAGED", "load_classifier", "load_token_classifier", "load_causal_lm",
           "load_seq2seq", "load_tokenizer", "is_encoder_decoder"]
