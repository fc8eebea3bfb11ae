"""Typed errors. Each carries a message that names what is at fault and what to do."""


class TunelabError(Exception):
    """Base class: the CLI prints these as one line and exits non-zero."""

    exit_code = 2


class ConfigError(TunelabError):
    """A config file, key or value is wrong."""


class DataError(TunelabError):
    """A data file is missing or a row in it is malformed."""


class ModelError(TunelabError):
    """A model name or directory cannot be resolved or loaded."""


class MethodError(TunelabError):
    """A fine-tuning method cannot be applied (e.g. no target module matched)."""


class AdapterError(TunelabError):
    """An adapter directory is missing files or does not fit the model."""


class CheckpointError(TunelabError):
    """A checkpoint is missing, damaged, or does not fit the current config."""


class ExportError(TunelabError):
    """A run cannot be written in the asked format, or the written file does not reproduce it."""
