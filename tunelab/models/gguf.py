"""GGUF checkpoints -> a cached Hugging Face safetensors directory, converted once.

transformers (with the `gguf` package) de-quantises every tensor to float32; the result is
saved without its quantization_config so that it is an ordinary checkpoint, written to a
temp directory and renamed into place so an interrupted conversion leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from pathlib import Path

from tunelab.errors import ModelError
from tunelab.io import atomic_dir


def cache_root() -> Path:
    env = os.environ.get("TUNELAB_CACHE")
    base = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tunelab"
    return base / "models"


def converted_dir(gguf_path: Path) -> Path:
    """Cache location: the file's name plus a digest of its path, size and mtime."""
    stat = gguf_path.stat()
    key = hashlib.sha256(f"{gguf_path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return cache_root() / f"{gguf_path.stem}-{key.hexdigest()[:12]}"


def ensure_converted(gguf_path: Path, log=lambda m: print(m, file=sys.stderr)) -> Path:
    """The converted directory for `gguf_path`, converting it on first use."""
    if not gguf_path.is_file():
        raise ModelError(f"{gguf_path}: GGUF file not found")
    out = converted_dir(gguf_path)
    if (out / "config.json").is_file() and (out / "model.safetensors").is_file():
        return out
    try:
        import gguf  # noqa: F401  (transformers needs it to read GGUF)
    except ImportError:
        raise ModelError(f"{gguf_path}: reading GGUF needs the `gguf` package: pip install gguf") from None
    import torch
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    transformers.logging.set_verbosity_error()
    log(f"converting {gguf_path.name} to a safetensors checkpoint (once; about a minute) -> {out}")
    t0 = time.perf_counter()
    folder, name = str(gguf_path.parent), gguf_path.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name, trust_remote_code=False)
        quantised = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32,
                                                         trust_remote_code=False)
    except Exception as exc:
        raise ModelError(f"{gguf_path}: cannot convert ({type(exc).__name__}: {exc})") from None
    config = AutoConfig.from_pretrained(folder, gguf_file=name, trust_remote_code=False)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantised.state_dict(), strict=True)
    if hasattr(model.generation_config, "max_length"):
        model.generation_config.max_length = None
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    log(f"converted in {time.perf_counter() - t0:.0f}s")
    return out
