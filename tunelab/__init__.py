"""tunelab: fine-tune pretrained language models, fully or parameter-efficiently."""

__version__ = "0.1.0"
