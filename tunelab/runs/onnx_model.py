"""An exported ONNX directory (`tunelab export RUN --to onnx OUT`) loaded for predict and eval.

The directory holds the model file(s), the tokenizer, the run's config.yaml and ONNX_INFO
(the run's run.json plus an `onnx` record naming the file to serve). OnnxModel answers as a
transformers model does for the inference code (`model(**batch).logits`, `eval()`, `to()`,
`parameters()` for the device), so tasks/inference.py and the tasks' predict score an export
with the very code that scores the run. It lives in runs/ because commands and serve both
sit above this layer.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator

import torch

from tunelab.errors import CheckpointError, ModelError

ONNX_INFO = "onnx_run.json"  # the marker: a directory holding it is an ONNX export
INSTALL_HINT = "pip install 'tunelab[export]' (onnx, onnxruntime, onnxscript)"


def is_onnx_export(path: Path) -> bool:
    return (path / ONNX_INFO).is_file()


def onnxruntime() -> Any:
    """The onnxruntime module, or a ModelError telling the user how to install it."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ModelError(f"ONNX Runtime is not installed; {INSTALL_HINT}") from None
    return ort


class OnnxModel:
    """An ONNX Runtime session behind the calling convention of a transformers model."""

    training = False

    def __init__(self, path: Path, threads: int = 0):
        ort = onnxruntime()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # 0: ONNX Runtime's default (every core)
        options.log_severity_level = 3  # warnings about unused initializers are noise here
        try:
            self.session = ort.InferenceSession(str(path), options,
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own Fail / InvalidGraph types
            raise ModelError(f"{path}: ONNX Runtime cannot load it ({type(exc).__name__}: "
                             f"{exc}); export the run again with `tunelab export`") from None
        self.inputs = [i.name for i in self.session.get_inputs()]
        self._device_probe = torch.zeros(0)

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 token_type_ids: torch.Tensor | None = None, **_: Any) -> SimpleNamespace:
        given = {"input_ids": input_ids, "attention_mask": attention_mask,
                 "token_type_ids": token_type_ids}
        defaults = {"attention_mask": torch.ones_like(input_ids),
                    "token_type_ids": torch.zeros_like(input_ids)}
        feed = {name: (given.get(name) if given.get(name) is not None else defaults[name])
                .detach().cpu().to(torch.int64).numpy() for name in self.inputs}
        (logits,) = self.session.run(["logits"], feed)  # (B, n_labels) or (B, T, n_tags)
        return SimpleNamespace(logits=torch.from_numpy(logits))

    def eval(self) -> "OnnxModel":
        return self

    def train(self, mode: bool = True) -> "OnnxModel":
        if mode:
            raise ModelError("an ONNX export runs inference only; train the run itself")
        return self

    def to(self, *_: Any, **__: Any) -> "OnnxModel":
        return self  # ONNX Runtime runs on the CPU here

    def parameters(self) -> Iterator[torch.Tensor]:
        yield self._device_probe  # callers read the device off the first parameter


def read_onnx_info(path: Path) -> dict[str, Any]:
    try:
        info = json.loads((path / ONNX_INFO).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path / ONNX_INFO}: cannot read ({exc}); export the run again "
                              "with `tunelab export RUN --to onnx OUT`") from None
    if not isinstance(info, dict) or not isinstance(info.get("onnx"), dict):
        raise CheckpointError(f"{path / ONNX_INFO}: no 'onnx' record; was the directory edited?")
    return info


def load_onnx_run(path: Path, adapters: list[str] | None = None, use: str | None = None,
                  task: str | None = None) -> tuple[OnnxModel, Any, dict[str, Any]]:
    """(model, tokenizer, run info) of an ONNX export, as load_trained gives for a run."""
    from tunelab.models import load_tokenizer

    given = [flag for flag, value in (("--add-adapter", adapters), ("--adapter", use),
                                      ("--task", task)) if value]
    if given:
        raise CheckpointError(f"{path} is an ONNX export: one model with its adapter folded in; "
                              f"drop {', '.join(given)} (or give the run directory instead)")
    info = read_onnx_info(path)
    model_file = path / info["onnx"]["model"]
    if not model_file.is_file():
        raise CheckpointError(f"{path}: {info['onnx']['model']} is missing; export the run "
                              "again with `tunelab export RUN --to onnx OUT`")
    return OnnxModel(model_file), load_tokenizer(path), info
