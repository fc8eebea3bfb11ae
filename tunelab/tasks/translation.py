"""Translation: two routes through the one loop, scored by BLEU and chrF (sacrebleu).

- Decoder-only models (SmolLM2, Llama...): each pair is a chat turn, the prompt names the
  languages and the answer (the target sentence) is what trains; this is causal-LM SFT, so
  the task extends CausalLMTask and only adds translating.
- Encoder-decoder models (T5, BART, Marian): source in, target as labels.

Training selects by held-out loss; BLEU and chrF are computed on the test split before and
after training, by generation with the run's settings (beams, max new tokens).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from tunelab.data.parallel import Pair
from tunelab.data.render import IGNORE, Renderer
from tunelab.data.sft import Conversation
from tunelab.runs.layout import write_json
from tunelab.tasks.base import Inside, Task
from tunelab.tasks.causal_lm import CausalLMTask, token_loss


def translation_scores(hypotheses: list[str], references: list[str]) -> dict[str, float]:
    """Corpus BLEU and chrF (sacrebleu defaults: 13a tokenisation, chrF with n=6, beta=2)."""
    import sacrebleu

    return {"bleu": sacrebleu.corpus_bleu(hypotheses, [references]).score,
            "chrf": sacrebleu.corpus_chrf(hypotheses, [references]).score}


def first_line(text: str) -> str:
    """A chat model may add a note after its translation; the translation is the first line."""
    stripped = text.strip()
    return stripped.splitlines()[0].strip() if stripped else ""


class Translating(Task):
    """What both routes share: generate for every source, score against the references."""

    gen: Any  # config.Generation
    test: list[Pair]

    def generate_batch(self, model: nn.Module, sources: list[str], device: torch.device
                       ) -> list[str]:
        raise NotImplementedError

    @torch.no_grad()
    def translate(self, model: nn.Module, sources: list[str], device: torch.device) -> list[str]:
        was_training = model.training
        model.eval()
        out: list[str] = []
        for start in range(0, len(sources), self.gen.batch_size):
            out += self.generate_batch(model, sources[start:start + self.gen.batch_size], device)
        model.train(was_training)
        return out

    def test_scores(self, model: nn.Module, device: torch.device) -> tuple[dict[str, float], list[str]]:
        """(BLEU/chrF on the test pairs, the hypotheses)."""
        hyps = self.translate(model, [p.source for p in self.test], device)
        return translation_scores(hyps, [p.target for p in self.test]), hyps

    def test_before(self, inside: Inside, device: torch.device, run_dir: Path, resumed: bool,
                    write: bool, log: Callable[[str], None]) -> dict[str, float]:
        """Scored before training too; a resumed run reads the score its first start wrote."""
        path = run_dir / "test_before.json"
        if resumed and path.is_file():
            return json.loads(path.read_text())
        log(f"scoring the test split ({len(self.test)} examples) before training ...")
        scores, _ = inside(lambda m: self.test_scores(m, device))
        if write:
            write_json(path, scores)
        return scores

    def test_after(self, inside: Inside, device: torch.device, run_dir: Path, write: bool,
                   log: Callable[[str], None]) -> dict[str, float]:
        """Scored after training; the translations go to test_translations.jsonl."""
        log("scoring the test split after training ...")
        scores, hyps = inside(lambda m: self.test_scores(m, device))
        if write:
            write_translations(run_dir / "test_translations.jsonl", self.test, hyps)
        return scores


def write_translations(path: Path, pairs: list[Pair], hyps: list[str]) -> None:
    rows = [{"source": p.source, "reference": p.target, "hypothesis": h}
            for p, h in zip(pairs, hyps)]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                    encoding="utf-8")


class DecoderTranslationTask(Translating, CausalLMTask):
    name = "translation"

    def __init__(self, tokenizer, renderer: Renderer, prompt: Callable[[str], str],
                 test: list[Pair], gen: Any, loss_chunk: int | None = None):
        CausalLMTask.__init__(self, tokenizer, renderer, packing=False, loss_chunk=loss_chunk)
        self.prompt, self.test, self.gen = prompt, test, gen

    def records(self, pairs: list[Pair]) -> list[Conversation]:
        return [Conversation([{"role": "user", "content": self.prompt(p.source)},
                              {"role": "assistant", "content": p.target}], p.where)
                for p in pairs]

    def generate_batch(self, model: nn.Module, sources: list[str], device: torch.device
                       ) -> list[str]:
        prompts = [self.renderer.chat_text([{"role": "user", "content": self.prompt(s)}],
                                           generation_prompt=True) for s in sources]
        side, self.tok.padding_side = self.tok.padding_side, "left"  # generation continues the right end
        enc = self.tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        self.tok.padding_side = side
        enc = enc.to(device)
        ids = model.generate(**enc, max_new_tokens=self.gen.max_new_tokens,
                             num_beams=self.gen.num_beams, do_sample=False,
                             pad_token_id=self.pad_id)
        texts = self.tok.batch_decode(ids[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        return [first_line(t) for t in texts]


@dataclass
class Seq2SeqEncoded:
    input_ids: list[list[int]]  # prefix + source
    labels: list[list[int]]  # target, ending with the tokenizer's EOS
    mean_trained: float = field(init=False)  # target tokens per pair, on average

    def __post_init__(self) -> None:
        self.mean_trained = sum(map(len, self.labels)) / max(1, len(self.labels))

    def __len__(self) -> int:
        return len(self.input_ids)

    def lengths(self) -> list[int]:
        return [len(s) + len(t) for s, t in zip(self.input_ids, self.labels)]


class Seq2SeqTranslationTask(Translating):
    name = "translation"
    default_metric = "loss"

    def __init__(self, tokenizer, max_length: int, prefix: Callable[[str], str],
                 test: list[Pair], gen: Any):
        self.tok, self.max_length, self.prefix, self.test, self.gen = (
            tokenizer, max_length, prefix, test, gen)
        self.pad_id = tokenizer.pad_token_id

    def encode(self, pairs: list[Pair]) -> Seq2SeqEncoded:
        src = self.tok([self.prefix(p.source) for p in pairs], truncation=True,
                       max_length=self.max_length)["input_ids"]
        tgt = self.tok(text_target=[p.target for p in pairs], truncation=True,
                       max_length=self.max_length)["input_ids"]
        eos = self.tok.eos_token_id  # T5 and BART add it; a bare tokenizer does not
        tgt = [t if t and t[-1] == eos else t + [eos] for t in tgt]
        return Seq2SeqEncoded(src, tgt)

    def collate(self, data: Seq2SeqEncoded, index: list[int]) -> dict[str, torch.Tensor]:
        """input_ids / attention_mask (B, S) padded with pad; labels (B, T) with IGNORE."""
        src = [data.input_ids[i] for i in index]
        tgt = [data.labels[i] for i in index]
        ids = torch.full((len(index), max(map(len, src))), self.pad_id, dtype=torch.long)
        labels = torch.full((len(index), max(map(len, tgt))), IGNORE, dtype=torch.long)
        for row, (s, t) in enumerate(zip(src, tgt)):
            ids[row, :len(s)] = torch.tensor(s)
            labels[row, :len(t)] = torch.tensor(t)
        return {"input_ids": ids, "attention_mask": (ids != self.pad_id).long(), "labels": labels}

    @staticmethod
    def units(data: Seq2SeqEncoded, index: list[int]) -> float:
        """Target tokens these pairs hold on average (see CausalLMTask.units)."""
        return len(index) * data.mean_trained

    @staticmethod
    def loss_sum(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        # the model shifts labels right into decoder inputs itself
        logits = model(**batch).logits  # (B, T, V)
        return F.cross_entropy(logits.flatten(0, 1).float(), batch["labels"].flatten(),
                               ignore_index=IGNORE, reduction="sum")

    def evaluate(self, model: nn.Module, data: Seq2SeqEncoded, batch_size: int,
                 device: torch.device, autocast: torch.autocast | None = None) -> dict[str, float]:
        return token_loss(self, model, data, lambda index: self.collate(data, index), batch_size,
                          device, autocast)

    def generate_batch(self, model: nn.Module, sources: list[str], device: torch.device
                       ) -> list[str]:
        enc = self.tok([self.prefix(s) for s in sources], return_tensors="pt", padding=True,
                       truncation=True, max_length=self.max_length).to(device)
        ids = model.generate(**enc, max_new_tokens=self.gen.max_new_tokens,
                             num_beams=self.gen.num_beams, do_sample=False)
        return [t.strip() for t in self.tok.batch_decode(ids, skip_special_tokens=True)]
