"""Masked-LM continued pretraining: masking statistics, the missing MLM head, a learning run,
exact resume, and fine-tuning from a finished run (`model.name: <run dir>`)."""

from __future__ import annotations

import json
import math
import random
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import FILL, NEG, POS, interrupt_then_resume, synthetic_rows
from tunelab.commands.evaluate import evaluate
from tunelab.commands.merge_run import merge
from tunelab.commands.predict import predict
from tunelab.config import validate
from tunelab.data.masking import IGNORE, SPECIAL, Masker, encode_texts
from tunelab.data.sft import PlainText
from tunelab.errors import ConfigError, DataError, ModelError
from tunelab.models.heads import head_modules
from tunelab.models.mlm import init_head, load_masked_lm, token_counts
from tunelab.runs.trained import load_trained
from tunelab.recipes.run import train

LONG = ["unbelievably", "overwhelming", "misunderstanding", "photographers", "extraordinary"]


def quiet(_: str) -> None:
    pass


def corpus(n: int, seed: int) -> list[str]:
    """Sentences with structure an MLM can learn: 'the X movie was Y and Y'."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        adj = POS[:4] if rng.random() < 0.5 else NEG[:4]
        out.append(f"the {rng.choice(FILL[1:4])} was {rng.choice(adj)} and {rng.choice(adj)} , "
                   f"{rng.choice(LONG)} {rng.choice(adj)} .")
    return out


def wordpiece_tokenizer():
    """A tiny uncased WordPiece tokenizer (BERT's pipeline): the long words split into ##pieces."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    words = " ".join(POS + NEG + FILL + ["was", "and", ",", "."])
    tok.train_from_iterator([words] * 20 + [" ".join(LONG)],
                            trainers.WordPieceTrainer(vocab_size=120, special_tokens=specials))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[(s, tok.token_to_id(s)) for s in ("[CLS]", "[SEP]")])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")


@pytest.fixture(scope="module")
def tok():
    return wordpiece_tokenizer()


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory, tok) -> Path:
    """A 2-layer BERT saved without an MLM head (as MiniLM is), with the tiny tokenizer."""
    from transformers import BertConfig, BertModel

    out = tmp_path_factory.mktemp("tiny-bert-wp")
    cfg = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    BertModel(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def texts(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("mlm-text")
    (root / "train.txt").write_text("\n".join(corpus(400, 1)) + "\n")
    (root / "held.txt").write_text("\n".join(corpus(60, 2)) + "\n")
    return {"train": root / "train.txt", "held": root / "held.txt"}


def mlm_config(model: Path | str, texts: dict[str, Path], out: Path, method: dict | None = None,
               **train_keys) -> dict:
    return {"task": "masked_lm", "model": {"name": str(model), "max_length": 32},
            "data": {"path": str(texts["train"]), "eval_path": str(texts["held"]),
                     "text_split": "line"},
            "method": method or {"name": "lora", "r": 4, "alpha": 8},
            "train": {"batch_size": 16, "lr": 5e-3, "max_steps": 30, "eval_every": 10,
                      "checkpoint_every": 10, "log_every": 5, "seed": 0, "warmup_steps": 0,
                      **train_keys},
            "output_dir": str(out)}


def docs(lines: list[str]) -> list[PlainText]:
    return [PlainText(t, f"t:{i}") for i, t in enumerate(lines)]


# ----------------------------------------------------------------------------- masking


def masker(tok, **kw) -> Masker:
    return Masker.for_tokenizer(tok, kw.pop("rate", 0.15), kw.pop("whole_word", False),
                                kw.pop("mask_share", 0.8), kw.pop("random_share", 0.1))


@pytest.mark.parametrize("whole_word", [False, True])
def test_mask_rate_shares_and_special_tokens(tok, whole_word):
    enc, _ = encode_texts(tok, docs(corpus(3000, 3)), 64)
    m = masker(tok, whole_word=whole_word)
    batch = m.batch(enc, list(range(len(enc))), "stats")
    labels, inputs, attn = batch["labels"], batch["input_ids"], batch["attention_mask"]
    chosen = labels != IGNORE
    special = torch.zeros_like(chosen)
    for row, words in enumerate(enc.words):
        special[row, : len(words)] = torch.tensor([w == SPECIAL for w in words])
    assert not (chosen & special).any() and not (chosen & (attn == 0)).any()
    assert (inputs[special] != tok.mask_token_id).all()  # specials are never replaced either
    maskable = sum(enc.maskable)
    assert abs(chosen.sum().item() / maskable - 0.15) < 0.01  # every token w.p. exactly 0.15
    shown = inputs[chosen]
    originals = labels[chosen]
    as_mask = (shown == tok.mask_token_id).float().mean().item()
    kept = (shown == originals).float().mean().item()
    assert abs(as_mask - 0.8) < 0.03 and abs(kept - 0.1 - 0.1 / len(m.random_pool)) < 0.03
    assert set((shown[(shown != tok.mask_token_id) & (shown != originals)]).tolist()) <= set(m.random_pool)


def test_short_texts_are_masked_at_the_rate_not_rounded_up(tok):
    enc, _ = encode_texts(tok, docs(["good"] * 4000), 16)  # a few maskable tokens each
    assert set(enc.maskable) == {len(tok("good", add_special_tokens=False)["input_ids"])}
    chosen = (masker(tok).batch(enc, list(range(4000)), "k")["labels"] != IGNORE).sum().item()
    assert abs(chosen / sum(enc.maskable) - 0.15) < 0.015


def test_whole_word_masking_keeps_words_whole(tok):
    enc, _ = encode_texts(tok, docs(corpus(1500, 4)), 64)
    split_words = 0
    for whole_word, expect_whole in ((True, True), (False, False)):
        m = masker(tok, whole_word=whole_word, rate=0.3)
        partial = 0
        for i in range(len(enc)):
            _, labels = m.mask(enc.input_ids[i], enc.words[i], random.Random(f"w:{i}"))
            by_word: dict[int, set[bool]] = {}
            for w, lab in zip(enc.words[i], labels):
                if w != SPECIAL:
                    by_word.setdefault(w, set()).add(lab != IGNORE)
            pieces = {w: enc.words[i].count(w) for w in by_word}
            split_words += sum(n > 1 for n in pieces.values())
            partial += sum(len(v) > 1 for v in by_word.values())
        assert (partial == 0) == expect_whole
    assert split_words > 1000  # the long words really are several sub-tokens


def test_masks_are_a_function_of_key_and_example_only(tok):
    enc, _ = encode_texts(tok, docs(corpus(64, 5)), 64)
    m = masker(tok)
    together = m.batch(enc, list(range(64)), "0:3")
    alone = m.batch(enc, [7], "0:3")  # another batch / micro-batch / process: the same draw
    n = alone["labels"].shape[1]
    assert torch.equal(together["labels"][7, :n], alone["labels"][0])
    assert torch.equal(together["input_ids"][7, :n], alone["input_ids"][0])
    other = m.batch(enc, list(range(64)), "0:4")  # the next step draws anew
    assert not torch.equal(other["labels"], together["labels"])


def test_long_texts_continue_in_the_next_window(tok):
    text = " ".join(corpus(12, 6))
    enc, split = encode_texts(tok, docs([text, "good"]), 16)
    assert split == len(enc) - 2 and len(enc) > 3
    inner = [t for ids in enc.input_ids[:-1] for t in ids[1:-1]]
    assert inner == tok(text, add_special_tokens=False)["input_ids"]  # nothing cut away
    assert all(len(ids) <= 16 and ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
               for ids in enc.input_ids)
    assert enc.records[0].text == text and enc.records[-1].text == "good"


def test_text_without_a_mask_token_is_refused(tmp_path):
    from sft_fixtures import tiny_tokenizer

    with pytest.raises(DataError, match="has no mask token; use an encoder"):
        encode_texts(tiny_tokenizer(), docs(["hello world"]), 16)


# ----------------------------------------------------------------------------- the head


def test_missing_head_is_initialised_tied_with_a_unigram_prior(bert_dir, tok):
    model, missing = load_masked_lm(bert_dir)
    assert head_modules(model) == ["cls"]
    assert "cls.predictions.transform.dense.weight" in missing and "cls.predictions.bias" in missing
    enc, _ = encode_texts(tok, docs(corpus(200, 7)), 32)
    counts = token_counts(enc.input_ids, enc.words, len(tok))
    lines = init_head(model, missing, counts)
    assert "tied to the input embeddings" in lines[0] and "log token frequency" in lines[0]
    pr = model.cls.predictions
    assert pr.decoder.weight is model.bert.embeddings.word_embeddings.weight
    prior = ((counts + 1.0) / (counts.sum() + len(counts))).log()
    assert torch.allclose(pr.bias, prior.float(), atol=1e-6)
    assert torch.equal(pr.transform.LayerNorm.weight, torch.ones(32))


def test_lora_trains_the_head_but_not_the_tied_embeddings(bert_dir, texts, tmp_path):
    from tunelab import methods

    model, _ = load_masked_lm(bert_dir)
    report = methods.apply(model, validate(mlm_config(bert_dir, texts, tmp_path)).method)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert report.head == ["cls"]
    assert {"cls.predictions.bias", "cls.predictions.transform.dense.weight"} <= trainable
    assert not model.bert.embeddings.word_embeddings.weight.requires_grad
    assert not any("decoder" in n for n in report.matched)  # the vocabulary layer is not LoRA'd


# ----------------------------------------------------------------------------- runs


def test_mlm_lora_run_learns_and_reloads(bert_dir, texts, tmp_path, capsys):
    out = tmp_path / "mlm"
    summary = train(validate(mlm_config(bert_dir, texts, out, lr=1e-2)), log=quiet)
    before, after = summary["initial_dev"], summary["final_dev"]
    assert before["loss"] < math.log(len(wordpiece_tokenizer())) - 0.5  # the prior helps at once
    # the same held-out masks before and after: a tiny random BERT with r=4 learns slowly
    assert after["loss"] < before["loss"] - 0.1 and after["masked_accuracy"] > before["masked_accuracy"]
    saved = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    assert "base_model.model.cls.predictions.bias" in saved
    assert not any("decoder.weight" in k or "word_embeddings" in k for k in saved)
    cfg = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert cfg["task_type"] is None and cfg["modules_to_save"] == ["cls"]
    info = json.loads((out / "run.json").read_text())
    assert info["task"] == "masked_lm" and info["mlm_head"] == "initialised"
    scores = evaluate(out, None, "dev")  # reloads base + adapter: the same held-out masks
    assert scores["loss"] == pytest.approx(after["loss"], abs=1e-4)
    with pytest.raises(DataError, match="is a masked_lm run"):
        predict(out, ["good"], None)
    merge(out, tmp_path / "merged")
    assert "AutoModelForMaskedLM" in capsys.readouterr().out
    from tunelab.report import report

    page = report([out], log=quiet)
    text = " ".join(re.sub(r"<[^>]+>", " ", page.read_text()).split())
    assert "MLM head initialised" in text and "masked_accuracy" in text


def test_mlm_resume_draws_the_same_masks(bert_dir, texts, tmp_path, monkeypatch):
    tree = mlm_config(bert_dir, texts, tmp_path / "straight", method={"name": "full"},
                      max_steps=12, eval_every=4, checkpoint_every=4)
    straight = train(validate(tree), log=quiet)
    assert straight["final_dev"]["loss"] < straight["initial_dev"]["loss"] - 0.15  # full learns
    interrupt_then_resume(tree, tmp_path / "interrupted", monkeypatch, at=5)
    a = load_file(str(tmp_path / "straight" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "interrupted" / "model" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture
def cls_data(tmp_path) -> dict[str, Path]:
    paths = {}
    for split, n, seed in (("train", 96, 1), ("dev", 32, 2)):
        path = tmp_path / f"{split}.tsv"
        path.write_text("sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in synthetic_rows(n, seed)))
        paths[split] = path
    return paths


def cls_config(model: Path, data: dict[str, Path], out: Path, method: str) -> dict:
    return {"model": {"name": str(model), "max_length": 32},
            "data": {"train": str(data["train"]), "dev": str(data["dev"]),
                     "columns": {"text": "sentence", "label": "label"}},
            "method": {"name": method, **({"r": 4, "alpha": 8} if method == "lora" else {})},
            "train": {"batch_size": 16, "lr": 5e-3, "max_steps": 8, "eval_every": 4,
                      "checkpoint_every": 4, "seed": 0},
            "output_dir": str(out)}


@pytest.mark.parametrize("first,second", [("lora", "lora"), ("full", "full")])
def test_fine_tuning_from_an_mlm_run(bert_dir, texts, cls_data, tmp_path, first, second):
    from tunelab.models.load import load_classifier

    mlm = tmp_path / "mlm"
    tree = mlm_config(bert_dir, texts, mlm, method={"name": first, **(
        {"r": 4, "alpha": 8} if first == "lora" else {})}, max_steps=10)
    tree["model"]["dropout"] = 0.0
    train(validate(tree), log=quiet)
    mlm_model, _, _ = load_trained(mlm)
    from tunelab.methods.peft_format import merge as merge_layers

    merge_layers(mlm_model)
    out = tmp_path / "cls"
    summary = train(validate(cls_config(mlm, cls_data, out, second)), log=quiet)

    base = mlm / "as_base"
    config = json.loads((base / "config.json").read_text())
    assert config["architectures"] == ["BertForMaskedLM"]
    assert config["hidden_dropout_prob"] == 0.1  # the base's, not the MLM run's override
    info = json.loads((out / "run.json").read_text())
    assert info["base_model"] == str(base) and info["model_name"] == str(mlm)
    assert info["chain"] == [{"run": str(mlm.resolve()), "task": "masked_lm", "method": first,
                              "base_model": str(bert_dir)}]
    # the adapted base holds the MLM-trained encoder, and the pooler of the original model
    start = load_classifier(base, ["0", "1"])
    assert torch.equal(start.bert.encoder.layer[1].attention.self.query.weight,
                       mlm_model.bert.encoder.layer[1].attention.self.query.weight)
    original = load_classifier(bert_dir, ["0", "1"])
    assert torch.equal(start.bert.pooler.dense.weight, original.bert.pooler.dense.weight)
    assert not torch.equal(start.bert.encoder.layer[1].attention.self.query.weight,
                           original.bert.encoder.layer[1].attention.self.query.weight)
    # eval reloads the adapted base (plus this run's weights): the training run's own score
    scores = evaluate(out, None, "dev")
    assert scores["accuracy"] == pytest.approx(summary["final_dev"]["accuracy"])
    # predict and merge use it too: the same probabilities as the run's model, and not those
    # of the same head and adapter on the original base
    ours, tok, _ = load_trained(out)
    enc = tok(["the movie was good", "awful plot"], padding=True, return_tensors="pt")
    with torch.no_grad():
        probs = ours(**enc).logits.softmax(-1)
    got = predict(out, ["the movie was good", "awful plot"], None)
    assert [p for _, p in got] == pytest.approx(probs.max(-1).values.tolist(), abs=1e-5)
    from transformers import AutoModelForSequenceClassification

    merge(out, tmp_path / "merged")
    merged = AutoModelForSequenceClassification.from_pretrained(tmp_path / "merged").eval()
    with torch.no_grad():
        assert torch.allclose(merged(**enc).logits.softmax(-1), probs, atol=1e-5)
    if second == "lora":
        from tunelab.methods.peft_format import load_adapter

        plain = load_classifier(bert_dir, ["0", "1"])
        load_adapter(plain, out / "adapter", head_modules(plain))
        with torch.no_grad():
            a, b = plain.eval().bert(**enc).last_hidden_state, ours.bert(**enc).last_hidden_state
            assert (a - b).abs().max() > 1e-2
    # a deleted as_base/ is rebuilt from the run it came from
    shutil.rmtree(base)
    again = evaluate(out, None, "dev")
    assert again["accuracy"] == scores["accuracy"] and (base / "model.safetensors").is_file()


def test_a_bottleneck_run_cannot_be_a_base(bert_dir, texts, tmp_path):
    from tunelab.runs.resolve import resolve

    mlm = tmp_path / "mlm"
    train(validate(mlm_config(bert_dir, texts, mlm, method={"name": "pfeiffer"}, max_steps=2,
                              eval_every=2)), log=quiet)
    with pytest.raises(ModelError, match="a pfeiffer run cannot be a base for another run"):
        resolve(str(mlm))


# ----------------------------------------------------------------------------- config and data


def test_config_errors_name_the_keys(bert_dir, texts, tmp_path):
    tree = mlm_config(bert_dir, texts, tmp_path)
    tree["data"]["random_token_share"] = 0.3
    with pytest.raises(ConfigError, match=r"data.mask_token_share \(0.8\) \+ data.random_token_share"):
        validate(tree)
    tree = mlm_config(bert_dir, texts, tmp_path, metric="accuracy")
    with pytest.raises(ConfigError, match="masked_lm runs are scored by held-out masked-token loss"):
        validate(tree)


def test_a_labelled_tsv_reads_its_text_column_only(tmp_path):
    from tunelab.config import MaskedLMDataConfig
    from tunelab.data.unlabeled import read_texts, split_texts

    path = tmp_path / "s.tsv"
    path.write_text("sentence\tlabel\nfine movie\t1\nbad plot\t0\nnice\t1\n")
    d = MaskedLMDataConfig(path=str(path), text_column="sentence", eval_size=1)
    assert [t.text for t in read_texts(str(path), d)] == ["fine movie", "bad plot", "nice"]
    train_texts, held, _ = split_texts(d)
    assert len(train_texts) == 2 and len(held) == 1
    with pytest.raises(DataError, match="no column 'text' in the header"):
        read_texts(str(path), MaskedLMDataConfig(path=str(path)))


def test_data_inspect_shows_the_first_steps_masks(bert_dir, texts, tmp_path, capsys):
    from tunelab.commands.inspect_data import inspect

    inspect(validate(mlm_config(bert_dir, texts, tmp_path)), n=40, colour=False)
    out = capsys.readouterr().out
    assert "400 training texts -> 400 windows" in out and "held-out: 60 texts" in out
    assert "->[MASK]]]" in out and "[[" in out
    assert "[CLS]" in out and "[[[CLS]" not in out  # specials shown, never predicted


@pytest.mark.real
def test_mlm_on_minilm_initialises_its_head_learns_and_becomes_a_base(tmp_path, monkeypatch):
    from conftest import real_data_dir
    from tunelab.config import load_config
    from tunelab.models import load_classifier
    from tunelab.runs.resolve import resolve

    monkeypatch.setenv("TUNELAB_DATA_DIR", str(real_data_dir()))
    out = tmp_path / "mlm"
    cfg = load_config(None, ["task=masked_lm", "model.name=minilm", "model.max_length=64",
                             "data.path=sst2", "data.eval_size=200", "data.max_examples=1280",
                             "method.name=lora", "train.lr=2e-3", "train.max_steps=40",
                             "train.batch_size=32", f"output_dir={out}"])
    logs: list[str] = []
    summary = train(cfg, log=logs.append)
    assert any(line.startswith("MLM head: not in the checkpoint") for line in logs)
    before, after = summary["initial_dev"], summary["final_dev"]
    # the unigram-prior bias (from 1,280 texts here); a random head scores about log(30522)
    assert before["loss"] < math.log(30522) - 1.5
    assert after["loss"] < before["loss"] - 0.5, (before, after)  # 8.17 -> 6.99 when written
    base = resolve(str(out))
    ours, original = load_classifier(base, ["0", "1"]), load_classifier(resolve("minilm"), ["0", "1"])
    assert torch.equal(ours.bert.pooler.dense.weight, original.bert.pooler.dense.weight)
    assert not torch.equal(ours.bert.encoder.layer[0].attention.self.query.weight,
                           original.bert.encoder.layer[0].attention.self.query.weight)


def test_a_checkpoint_with_its_mlm_head_keeps_it(bert_dir, tmp_path):
    model, missing = load_masked_lm(bert_dir)
    init_head(model, missing, torch.zeros(model.config.vocab_size, dtype=torch.long))
    with torch.no_grad():
        model.cls.predictions.transform.dense.weight.mul_(3.0)
    model.save_pretrained(tmp_path / "with-head")
    again, missing = load_masked_lm(tmp_path / "with-head")
    assert missing == [] and init_head(again, missing, None) == ["MLM head: loaded from the checkpoint"]
    assert torch.equal(again.cls.predictions.transform.dense.weight,
                       model.cls.predictions.transform.dense.weight)


def test_a_tied_layer_named_by_the_user_trains_its_shared_weight(bert_dir, texts, tmp_path):
    from tunelab import methods

    model, _ = load_masked_lm(bert_dir)
    cfg = validate(mlm_config(bert_dir, texts, tmp_path, method={
        "name": "freeze", "train_last_layers": 0, "train_modules": ["decoder"]})).method
    methods.apply(model, cfg)
    assert model.bert.embeddings.word_embeddings.weight.requires_grad  # asked for by name
    assert model.cls.predictions.transform.dense.weight.requires_grad  # the head, as always
    assert not model.bert.encoder.layer[0].attention.self.query.weight.requires_grad
