"""Instruction SFT: formats, exact loss masks, pad == eos, packing isolation, template parity."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sft_fixtures import tiny_llama_dir, tiny_tokenizer
from tunelab.data.render import IGNORE, Renderer
from tunelab.data.sft import Completion, Conversation, PlainText, load_records
from tunelab.errors import DataError
from tunelab.kernels.varlen_attention import block_mask
from tunelab.tasks.causal_lm import CausalLMTask, pack_batch, pad_batch


def supervised_spans(tok, ids: list[int], labels: list[int]) -> list[str]:
    """The decoded runs of consecutive trained tokens (position 0 never trains)."""
    spans, current = [], []
    for j, (i, label) in enumerate(zip(ids, labels)):
        if label != IGNORE and j > 0:
            current.append(i)
        elif current:
            spans.append(tok.decode(current))
            current = []
    if current:
        spans.append(tok.decode(current))
    return spans


def write_json(path: Path, rows: list[dict]) -> Path:
    path.write_text(json.dumps(rows))
    return path


def renderer(tok, loss_on="assistant", max_length=512, truncation="right", append_eos=True):
    return Renderer(tok, loss_on, max_length, truncation, append_eos)


MULTI = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello world"},
         {"role": "assistant", "content": "hello, how are you?"},
         {"role": "user", "content": "the capital of france?"},
         {"role": "assistant", "content": "paris"}]


@pytest.mark.parametrize("loss_on,expected", [
    ("assistant", ["hello, how are you?<|im_end|>", "paris<|im_end|>"]),
    ("last_turn", ["paris<|im_end|>"]),
])
def test_golden_masks_multi_turn(loss_on, expected):
    tok = tiny_tokenizer()
    ids, labels = renderer(tok, loss_on).render(Conversation(MULTI, "x"))
    assert supervised_spans(tok, ids, labels) == expected
    assert all(label in (IGNORE, i) for i, label in zip(ids, labels))


def test_loss_on_all_trains_every_token():
    tok = tiny_tokenizer()
    ids, labels = renderer(tok, "all").render(Conversation(MULTI, "x"))
    assert labels == ids


def test_every_format_reads_and_masks(tmp_path):
    tok = tiny_tokenizer()
    r = renderer(tok)
    alpaca = write_json(tmp_path / "a.json", [
        {"instruction": "translate this", "input": "hello world", "output": "hallo welt",
         "system": "be brief", "history": [["one two", "three four"]]}])
    rec = load_records(str(alpaca), "auto", {}, {})[0]
    assert rec.messages == [
        {"role": "system", "content": "be brief"}, {"role": "user", "content": "one two"},
        {"role": "assistant", "content": "three four"},
        {"role": "user", "content": "translate this\n\nhello world"},
        {"role": "assistant", "content": "hallo welt"}]
    assert supervised_spans(tok, *r.render(rec)) == ["three four<|im_end|>", "hallo welt<|im_end|>"]

    sharegpt = tmp_path / "s.jsonl"
    sharegpt.write_text(json.dumps({"conversations": [{"from": "human", "value": "hi"},
                                                      {"from": "gpt", "value": "hello"}]}) + "\n")
    rec = load_records(str(sharegpt), "auto", {}, {})[0]
    assert supervised_spans(tok, *r.render(rec)) == ["hello<|im_end|>"]

    mapped = write_json(tmp_path / "m.json", [{"chat": [{"role": "asker", "content": "hi"},
                                                        {"role": "bot", "content": "yo"}]}])
    rec = load_records(str(mapped), "messages", {"messages": "chat"}, {"asker": "user"})[0]
    assert [m["role"] for m in rec.messages] == ["user", "assistant"]

    pc = write_json(tmp_path / "p.json", [{"prompt": "one two", "completion": " three"}])
    rec = load_records(str(pc), "auto", {}, {})[0]
    assert isinstance(rec, Completion)
    assert supervised_spans(tok, *r.render(rec)) == [" three<|im_end|>"]

    text = write_json(tmp_path / "t.json", [{"text": "the quick brown fox"}])
    rec = load_records(str(text), "auto", {}, {})[0]
    ids, labels = r.render(rec)
    assert isinstance(rec, PlainText) and labels == ids and ids[-1] == tok.eos_token_id


def test_pad_equal_to_eos_still_trains_each_turns_eos():
    tok = tiny_tokenizer(pad_is_eos=True)
    assert tok.pad_token_id == tok.eos_token_id
    r = renderer(tok)
    short = r.render(Conversation([{"role": "user", "content": "hi"},
                                   {"role": "assistant", "content": "yo"}], "x"))
    long = r.render(Conversation(MULTI, "y"))
    from tunelab.data.render import LMEncoded

    data = LMEncoded([short[0], long[0]], [short[1], long[1]])
    batch = pad_batch(data, [0, 1], tok.pad_token_id)
    row = batch["labels"][0]
    n = len(short[0])
    assert row[n - 2].item() == tok.eos_token_id  # <|im_end|> closing the answer trains
    assert (row[n:] == IGNORE).all()  # the padding that looks the same does not
    assert (batch["input_ids"][0, n:] == tok.eos_token_id).all()


def test_chat_template_parity():
    tok = tiny_tokenizer()
    r = renderer(tok)
    rec = Conversation(MULTI, "x")
    expected_prompt = tok.apply_chat_template(MULTI[:-1], tokenize=False, add_generation_prompt=True)
    assert r.prompt_text(rec) == expected_prompt
    assert r.chat_text(MULTI) == expected_prompt + "paris<|im_end|>\n"
    ids, _ = r.render(rec)
    assert tok.decode(ids) == expected_prompt + "paris<|im_end|>\n"


def test_truncation_counts_and_drops_are_reported():
    tok = tiny_tokenizer()
    short = Conversation([{"role": "user", "content": "hi"},
                          {"role": "assistant", "content": "yo"}], "s")
    long = Conversation([{"role": "user", "content": " ".join(["the quick brown fox"] * 8)},
                         {"role": "assistant", "content": "yes"}], "long")
    fits = len(renderer(tok).render(short)[0])
    data, stats = renderer(tok, max_length=fits).encode([long, short])
    # cut at `fits` tokens, the long one loses its whole answer: dropped and counted, not trained
    assert (stats.kept, stats.truncated, stats.dropped_no_supervision) == (1, 1, 1)
    assert data.records == [short]
    data, stats = renderer(tok, max_length=fits, truncation="drop").encode([long, short])
    assert (stats.kept, stats.dropped_too_long, stats.truncated) == (1, 1, 0)


def test_bad_records_name_the_item(tmp_path):
    bad = write_json(tmp_path / "b.json", [{"instruction": "a", "output": "b"},
                                           {"instruction": "c", "output": ""}])
    with pytest.raises(DataError) as exc:
        load_records(str(bad), "auto", {}, {})
    assert str(exc.value) == f"{bad}[item 1]: missing or empty 'output' (data.columns.output)"
    role = write_json(tmp_path / "r.json", [{"messages": [{"role": "narrator", "content": "x"}]}])
    with pytest.raises(DataError, match=r"r.json\[item 0\]: messages\[0\] has role 'narrator'"):
        load_records(str(role), "auto", {}, {})
    none = write_json(tmp_path / "n.json", [{"messages": [{"role": "user", "content": "x"}]}])
    with pytest.raises(DataError, match="no assistant message, so nothing would train"):
        load_records(str(none), "auto", {}, {})


def test_packing_isolates_examples(tmp_path):
    from transformers import AutoModelForCausalLM

    from tunelab.data.render import LMEncoded

    path = tiny_llama_dir(tmp_path / "m")
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    tok = tiny_tokenizer()
    r = renderer(tok)
    convs = [Conversation(MULTI, "a"), Conversation(MULTI[1:3], "b"),
             Conversation([{"role": "user", "content": "one two"},
                           {"role": "assistant", "content": "three four five"}], "c")]
    encoded = [r.render(c) for c in convs]
    data = LMEncoded([e[0] for e in encoded], [e[1] for e in encoded])
    task = CausalLMTask(tok, r, packing=True)
    packed = pack_batch(data, [0, 1, 2])
    with torch.no_grad():
        for k in range(3):
            alone = task.loss_sum(model, pad_batch(data, [k], tok.pad_token_id)).item()
            only_k = dict(packed)
            keep = torch.zeros_like(packed["labels"], dtype=torch.bool)
            start = sum(len(data.input_ids[i]) for i in range(k))
            keep[0, start:start + len(data.input_ids[k])] = True
            only_k["labels"] = packed["labels"].masked_fill(~keep, IGNORE)
            assert task.loss_sum(model, only_k).item() == pytest.approx(alone, abs=1e-4)

        def logits_of(batch):
            allowed = block_mask(batch["cu_seq_lens"], 1, batch["input_ids"].shape[1], True)
            mask = torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min)
            return model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                         attention_mask=mask).logits

        before = logits_of(packed)
        changed = LMEncoded(list(data.input_ids), list(data.labels))
        changed.input_ids[0] = [t + 1 if t < 300 else t for t in changed.input_ids[0]]
        after = logits_of(pack_batch(changed, [0, 1, 2]))
        n0 = len(data.input_ids[0])
        assert not torch.allclose(before[0, :n0], after[0, :n0])
        assert torch.allclose(before[0, n0:], after[0, n0:], atol=1e-6)


def test_every_supervised_token_weighs_the_same_in_bucketed_batches():
    """A step divides its loss sum by (examples x mean supervised tokens per example), not by
    the batch's own count: a batch of short answers must not weigh each token more."""
    from tunelab.data.render import LMEncoded

    short, long = [1, 2, IGNORE, 3], [1] * 30  # 3 and 29 supervised tokens (the first never is)
    data = LMEncoded([[5] * len(short)] * 2 + [[5] * len(long)] * 2, [short, short, long, long])
    assert data.trained == [2, 2, 29, 29]  # labels shift: the first token of each is never a target
    assert data.mean_trained == pytest.approx(15.5)
    assert CausalLMTask.units(data, [0, 1]) == CausalLMTask.units(data, [2, 3]) == pytest.approx(31)
    # over a whole split the units are the exact token count, so held-out loss is per token
    assert CausalLMTask.units(data, [0, 1, 2, 3]) == pytest.approx(sum(data.trained))
