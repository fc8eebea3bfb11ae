"""METHODS: every fine-tuning method, one line each. Adding a method = one file + one line."""

from typing import Any

from tunelab.methods.adalora import AdaLoraMethod
from tunelab.methods.base import Method
from tunelab.methods.bitfit import BitFitMethod
from tunelab.methods.bottleneck import HoulsbyMethod, PfeifferMethod
from tunelab.methods.dora import DoraMethod
from tunelab.methods.freeze import FreezeMethod
from tunelab.methods.full import FullMethod
from tunelab.methods.ia3 import IA3Method
from tunelab.methods.loha import LohaMethod
from tunelab.methods.lokr import LokrMethod
from tunelab.methods.lora import LoraMethod
from tunelab.methods.p_tuning import PTuningMethod
from tunelab.methods.prefix_tuning import PrefixTuningMethod
from tunelab.methods.prompt_tuning import PromptTuningMethod
from tunelab.methods.vera import VeraMethod

METHODS: dict[str, type[Method[Any]]] = {
    "full": FullMethod,
    "freeze": FreezeMethod,
    "bitfit": BitFitMethod,
    "lora": LoraMethod,
    "dora": DoraMethod,
    "ia3": IA3Method,
    "vera": VeraMethod,
    "loha": LohaMethod,
    "lokr": LokrMethod,
    "adalora": AdaLoraMethod,
    "houlsby": HoulsbyMethod,
    "pfeiffer": PfeifferMethod,
    "prompt_tuning": PromptTuningMethod,
    "prefix_tuning": PrefixTuningMethod,
    "p_tuning": PTuningMethod,
}
