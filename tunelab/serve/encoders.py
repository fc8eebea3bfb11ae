"""Encoder models behind the server's classify, NER and embeddings routes.

An `EncoderModel` is a tunelab classification or token-classification run (its answers are
`tunelab predict`'s, computed by the same tunelab.tasks.inference code) or a plain encoder
directory, which only embeds. Embeddings are sentence-transformers' all-MiniLM-L6-v2
pipeline (Transformer -> Pooling(mean) -> Normalize): the encoder's last hidden state
averaged over real tokens, then scaled to unit length; a fine-tuned run embeds with the
encoder inside its task model, so it serves retrieval with what it learned. An ONNX export
(`tunelab export RUN --to onnx OUT`) classifies or finds entities through ONNX Runtime with
that same inference code; its graph outputs only logits, so it does not embed.

Inputs longer than the model's max length are truncated, never refused: a run's
model.max_length, a plain model's sentence-transformers max_seq_length (256 for MiniLM) or
else its position limit. The server calls these methods from worker threads; one lock
keeps a model to one forward pass at a time.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tunelab.errors import DataError, ModelError
from tunelab.models import load_tokenizer
from tunelab.models.pooling import masked_mean
from tunelab.models.resolve import resolve as resolve_model
from tunelab.runs.layout import task_runs
from tunelab.runs.onnx_model import load_onnx_run
from tunelab.runs.trained import load_trained
from tunelab.tasks.inference import classify, extract_entities, length_batches

EMBED_BATCH = 32
RUN_TASKS = ("classification", "token_classification")  # plain models: "embedding"
WHAT = {"classification": "classify texts", "token_classification": "find entities (ner)"}


class EncoderModel:
    """One served encoder: `task` says which of classify / ner it answers (every one embeds
    but an ONNX export, whose graph stops at the logits)."""

    def __init__(self, model_id: str, task: str, model: Any, tokenizer: Any,
                 info: dict[str, Any], encoder: nn.Module | None, max_length: int):
        self.id = model_id
        self.task = task
        self.model, self.tokenizer, self.info = model, tokenizer, info
        # the bare transformer (the task model's base, or the model); None: cannot embed
        self.encoder = encoder
        self.max_length = max_length
        self._lock = threading.Lock()

    @classmethod
    def from_run(cls, run_dir: Path, model_id: str) -> EncoderModel:
        """A finished classification or token-classification run (full or adapter, as
        `tunelab predict` loads it); a multitask run's tasks are served one by one."""
        runs = task_runs(run_dir, None)
        if len(runs) > 1:
            raise ModelError(f"{run_dir} is a multitask run; serve one task's run directory: "
                             f"{', '.join(str(r) for r in runs)}")
        model, tokenizer, info = load_trained(runs[0])
        if info["task"] not in RUN_TASKS:
            raise ModelError(f"{run_dir} is a {info['task']} run; only classification and "
                             "token_classification runs are served as encoders")
        return cls(model_id, info["task"], model, tokenizer, info, model.base_model,
                   int(info["max_length"]))

    @classmethod
    def from_onnx(cls, path: Path, model_id: str) -> EncoderModel:
        """An ONNX export of a classification or NER run, run by ONNX Runtime from the file
        its onnx_run.json names (model.int8.onnx after --quantize int8), as predict does."""
        model, tokenizer, info = load_onnx_run(path)
        if info["task"] not in RUN_TASKS:
            raise ModelError(f"{path}: an ONNX export of a {info['task']} run; only "
                             "classification and token_classification exports are served")
        return cls(model_id, info["task"], model, tokenizer, info, None, int(info["max_length"]))

    @property
    def embeds(self) -> bool:
        return self.encoder is not None

    def card(self) -> dict[str, Any]:
        """What GET /v1/models adds for this model: an ONNX export's runtime and weights, so
        a client can tell it from the PyTorch run it came from."""
        record = self.info.get("onnx")
        if not isinstance(record, dict):
            return {}
        return {"backend": "onnxruntime", "quantization": record.get("quantize"),
                "file": record.get("model")}

    def kind(self) -> str:
        """How errors name the model: its task, and for an export its runtime and weights."""
        card = self.card()
        if not card:
            return f"a {self.task} model"
        weights = "int8" if card["quantization"] == "int8" else "fp32"
        return f"a {self.task} model (an ONNX export run by ONNX Runtime, {weights})"

    @classmethod
    def from_base(cls, path: Path, model_id: str) -> EncoderModel:
        """A plain encoder: a Hugging Face directory or a packaged model name (`minilm`).
        It has no trained head, so it only embeds."""
        import transformers
        from transformers import AutoConfig, AutoModel

        transformers.utils.logging.disable_progress_bar()
        directory = resolve_model(str(path))
        config = AutoConfig.from_pretrained(str(directory), trust_remote_code=False)
        if config.is_encoder_decoder or any(a.endswith("ForCausalLM")
                                            for a in config.architectures or ()):
            raise ModelError(f"{path}: a {config.model_type} generative model, not an encoder; "
                             "embeddings come from encoder models (BERT, MiniLM, RoBERTa)")
        tokenizer = load_tokenizer(directory)
        encoder = AutoModel.from_pretrained(str(directory), dtype=torch.float32,
                                            trust_remote_code=False).eval()
        return cls(model_id, "embedding", encoder, tokenizer, {}, encoder,
                   _max_length(directory, config, tokenizer))

    def classify(self, texts: list[str]) -> list[dict[str, Any]]:
        """Per text: {"label", "score" (its probability), "probs": {label: probability}}.
        A run trained on text pairs reads each text as "first<TAB>second"."""
        self._check("classification", texts)
        with self._lock:
            found = classify(self.model, self.tokenizer, self.info, texts)
        return [{"label": label, "score": p, "probs": probs} for label, p, probs in found]

    def ner(self, texts: list[str]) -> list[list[dict[str, Any]]]:
        """Per text, its entities: {"entity" (type), "text", "start", "end" (character offsets
        into the text, end exclusive), "score" (mean probability of its words' tags)}."""
        self._check("token_classification", texts)
        with self._lock:
            pred = extract_entities(self.model, self.tokenizer, self.info, texts)
        return [[{"entity": e.type, "text": e.text, "start": e.start, "end": e.end, "score": s}
                 for e, s in zip(found, scores)]
                for found, scores in zip(pred.entities, pred.scores)]

    def embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
        """(unit-length mean-pooled vectors in input order, input tokens counted with the
        special ones, after truncation)."""
        self._check(None, texts)
        if self.encoder is None:
            raise ModelError(f"model '{self.id}' is {self.kind()}; its graph outputs only "
                             "logits, so it cannot embed; serve the run directory instead")
        with self._lock, torch.inference_mode():
            return self._embed(self.encoder, texts)

    def _embed(self, encoder: nn.Module, texts: list[str]) -> tuple[list[list[float]], int]:
        lengths = [len(ids) for ids in self.tokenizer(texts, truncation=True,
                                                      max_length=self.max_length)["input_ids"]]
        device = next(encoder.parameters()).device
        out: list[list[float]] = [[] for _ in texts]
        for index in length_batches(lengths, EMBED_BATCH):
            batch = self.tokenizer([texts[i] for i in index], truncation=True, padding=True,
                                   max_length=self.max_length, return_tensors="pt").to(device)
            hidden = encoder(**batch).last_hidden_state.float()
            vectors = mean_pool(hidden, batch["attention_mask"])
            for i, row in zip(index, vectors.cpu().tolist()):
                out[i] = row
        return out, sum(lengths)

    def _check(self, task: str | None, texts: list[str]) -> None:
        """A clear error for a model of another task, no texts, or an empty text."""
        if task is not None and task != self.task:
            raise ModelError(f"model '{self.id}' ({self.task}) cannot {WHAT[task]}; "
                             f"pick a {task} model")
        if not isinstance(texts, list) or not texts:
            raise DataError("no input texts: give a non-empty list of strings")
        for k, text in enumerate(texts):
            if not isinstance(text, str):
                raise DataError(f"input {k} is a {type(text).__name__}, not a string")
            if not text.strip():
                raise DataError(f"input {k} is empty; give text with at least one word")


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """sentence-transformers' Pooling(mean) then Normalize: the average of the real tokens'
    (B, T, H) states, scaled to unit L2 length."""
    return torch.nn.functional.normalize(masked_mean(hidden, mask), p=2, dim=1)


def _max_length(directory: Path, config: Any, tokenizer: Any) -> int:
    """sentence-transformers' max_seq_length when the directory has one, else the tokenizer's
    and the position embeddings' limit, whichever is smaller."""
    st_config = directory / "sentence_bert_config.json"
    if st_config.is_file():
        value = json.loads(st_config.read_text(encoding="utf-8")).get("max_seq_length")
        if isinstance(value, int) and value > 0:
            return value
    limits = [v for v in (getattr(config, "max_position_embeddings", None),
                          tokenizer.model_max_length) if isinstance(v, int) and 0 < v < 1_000_000]
    return min(limits, default=512)
