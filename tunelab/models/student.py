"""model.keep_layers: a smaller model made from a bigger one by dropping transformer layers,
written once as a plain Hugging Face directory so every later step (the run's base, merge,
export, a PEFT adapter's base_model_name_or_path) sees an ordinary model.

The directory lives in the tunelab cache ($TUNELAB_CACHE, else ~/.cache/tunelab), named by a
hash of the source's files and the kept layers: the same request reuses it, a changed source
builds a new one."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from tunelab.errors import ModelError
from tunelab.io import DiskFullError, atomic_dir
from tunelab.models.surgery import drop_layers, keep_indices, layer_count

RECORD = "tunelab_student.json"  # what the directory was made from


def cache_root() -> Path:
    return Path(os.environ.get("TUNELAB_CACHE", Path.home() / ".cache" / "tunelab"))


def _fingerprint(source: Path) -> str:
    files = sorted(p for p in source.iterdir() if p.is_file())
    return json.dumps([[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files])


def _weights(name: str) -> bool:
    """A weight file or its shard index: the student's own replace them."""
    return ".safetensors" in name or name.startswith(("pytorch_model", "model.")) \
        or name.endswith((".bin", ".pt", ".h5", ".msgpack", ".onnx", ".gguf"))


def student_base(source: Path, keep: int | list[int]) -> Path:
    """The directory of `source` with only the layers `keep` (see surgery.keep_indices),
    built now if the cache lacks it."""
    import transformers
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(source), trust_remote_code=False)
    n = layer_count(config)
    layers = keep_indices(keep, n)
    key = hashlib.sha256(f"{source.resolve()}|{_fingerprint(source)}|{layers}".encode()).hexdigest()
    out = cache_root() / "students" / f"{source.name}-{len(layers)}of{n}-{key[:12]}"
    if (out / RECORD).is_file():
        return out
    arch = (config.architectures or ["AutoModel"])[0]
    cls = getattr(transformers, arch, None) or transformers.AutoModel
    transformers.logging.set_verbosity_error()
    try:
        model = cls.from_pretrained(str(source), trust_remote_code=False)
    except Exception as exc:
        raise ModelError(f"model.keep_layers: cannot load {source} as {arch} "
                         f"({type(exc).__name__}: {exc})") from None
    dropped = drop_layers(model, layers)
    record = {"source": str(source.resolve()), "kept_layers": layers, "dropped_layers": dropped,
              "layers_before": n, "architecture": arch}
    try:
        with atomic_dir(out) as tmp:
            model.save_pretrained(tmp)
            for f in source.iterdir():  # the tokenizer's files, and anything else beside
                if f.is_file() and not (tmp / f.name).exists() and not _weights(f.name):
                    shutil.copy2(f, tmp / f.name)
            (tmp / RECORD).write_text(json.dumps(record, indent=2) + "\n")
    except DiskFullError as exc:
        raise ModelError(f"model.keep_layers: {exc}") from None
    return out


def student_record(path: Path) -> dict | None:
    """What a keep_layers directory was made from (None for any other model directory)."""
    f = Path(path) / RECORD
    return json.loads(f.read_text()) if f.is_file() else None
