"""Data the model cannot read: the unknown-token share at encoding time (tunelab/data/coverage.py)
and the recipes that stop on it (classification, token classification, SFT)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import real_data_dir
from ner_fixtures import toy_sentences, write_conll
from tunelab.config import validate
from tunelab.data.coverage import check_coverage, measure, record_fields
from tunelab.data.sft import Completion, Conversation
from tunelab.errors import DataError
from tunelab.recipes.setup import setup

ENGLISH = ["the", "movie", "was", "good", "bad", "great", "awful", "plot", "and", "really",
           "john", "paris", "google", "said", "in", "."]
CHINESE = ["很快，好吃，味道足，量大", "送餐太慢了", "味道不错", "难吃死了", "服务很好",
           "包装很好", "太贵了", "还会再来"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


@pytest.fixture(scope="module")
def wordpiece_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny uncased English WordPiece tokenizer (no CJK in its vocabulary) and a random
    2-layer BERT of its size, saved as a Hugging Face model directory."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    out = tmp_path_factory.mktemp("tiny-wordpiece")
    vocab = {t: i for i, t in enumerate(SPECIAL + ENGLISH)}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True, handle_chinese_chars=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                            cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
                            model_max_length=64).save_pretrained(out)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1,
                         num_attention_heads=2, intermediate_size=32,
                         max_position_embeddings=64)).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tokenizer(wordpiece_dir: Path):
    from tunelab.models import load_tokenizer

    return load_tokenizer(wordpiece_dir)


def write_tsv(path: Path, texts: list[str], pairs: list[str] | None = None) -> Path:
    head = "sentence\tlabel" if pairs is None else "sentence\tsecond\tlabel"
    rows = [f"{t}\t{i % 2}" if pairs is None else f"{t}\t{pairs[i]}\t{i % 2}"
            for i, t in enumerate(texts)]
    path.write_text("\n".join([head, *rows]) + "\n", encoding="utf-8")
    return path


def english(n: int) -> list[str]:
    return [" ".join(ENGLISH[(i + k) % 10] for k in range(4)) for i in range(n)]


def chinese(n: int) -> list[str]:
    return [CHINESE[i % len(CHINESE)] for i in range(n)]


def config(model_dir: Path, train: Path, dev: Path, tmp_path: Path, pair: bool = False,
           **data) -> object:
    cols = {"text": "sentence", "label": "label", **({"text_pair": "second"} if pair else {})}
    return validate({"model": {"name": str(model_dir), "max_length": 32},
                     "data": {"train": str(train), "dev": str(dev), "columns": cols, **data},
                     "method": {"name": "full"}, "output_dir": str(tmp_path / "run")})


# ----------------------------------------------------------------------------- measuring


def test_measure_counts_unknown_tokens_without_the_special_tokens(tokenizer):
    cov = measure(tokenizer, {"train": {"text": ["the movie was good", "很好 movie"]}})
    c = cov.counts["train"]["text"]
    assert (c.tokens, c.unknown) == (4 + 3, 2)  # no [CLS]/[SEP]; 很 and 好 are one [UNK] each
    assert cov.samples() == ["很", "好"]
    assert cov.unk_token == "[UNK]"


def test_truncated_share_counts_the_special_tokens_and_both_columns(tokenizer):
    texts = {"text": ["the movie", "the movie was good and"], "text_pair": ["good", "bad"]}
    cov = measure(tokenizer, {"train": texts}, max_length=7)  # 2+1+3, 5+1+3 with specials
    assert cov.truncated == {"train": 0.5}


def test_byte_level_tokenizers_are_never_checked():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE({"<unk>": 0, "a": 1}, [], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")
    assert measure(fast, {"train": {"text": ["很快"]}}) is None
    assert check_coverage(fast, {"train": {"text": ["很快"]}}, print) is None


def test_sft_fields_are_named_in_the_error(tokenizer):
    records = [Completion("the movie was", "很好", "f:1"),
               Conversation([{"role": "user", "content": "good movie"},
                             {"role": "assistant", "content": "great plot"}], "f:2")]
    fields = record_fields(records)
    assert fields == {"prompt": ["the movie was"], "completion": ["很好"],
                      "user messages": ["good movie"], "assistant messages": ["great plot"]}
    with pytest.raises(DataError, match=r"100\.0% of the train tokens of column completion"):
        check_coverage(tokenizer, {"train": fields}, print, model="tiny")


# ----------------------------------------------------------------------------- recipes


def test_chinese_text_stops_the_classification_recipe(wordpiece_dir, tmp_path):
    cfg = config(wordpiece_dir, write_tsv(tmp_path / "train.tsv", chinese(40)),
                 write_tsv(tmp_path / "dev.tsv", chinese(10)), tmp_path)
    with pytest.raises(DataError) as exc:
        setup(cfg, lambda _: None)
    msg = str(exc.value)
    assert msg.startswith("data: 100.0% of the train tokens of column text (file column "
                          "'sentence') are the unknown token [UNK] (dev: 100.0%), e.g. ")
    assert "choose a model whose vocabulary covers the script" in msg
    assert "data.allow_unknown_tokens: true" in msg


def test_allow_unknown_tokens_runs_on_and_logs_the_share(wordpiece_dir, tmp_path):
    cfg = config(wordpiece_dir, write_tsv(tmp_path / "train.tsv", chinese(40)),
                 write_tsv(tmp_path / "dev.tsv", chinese(10)), tmp_path,
                 allow_unknown_tokens=True)
    lines: list[str] = []
    s = setup(cfg, lines.append)
    assert len(s.train) == 40
    warned = [line for line in lines if "unknown token" in line]
    assert len(warned) == 1
    assert warned[0].startswith("warning: data: unknown token [UNK]: text 100.0% of train / "
                                "100.0% of dev tokens (e.g. ")
    assert warned[0].endswith("truncated at model.max_length 32: 0.0% of train / 0.0% of dev "
                              "examples (data.allow_unknown_tokens: true, running anyway)")


def test_english_text_runs_with_no_warning_line(wordpiece_dir, tmp_path):
    cfg = config(wordpiece_dir, write_tsv(tmp_path / "train.tsv", english(40)),
                 write_tsv(tmp_path / "dev.tsv", english(10)), tmp_path)
    lines: list[str] = []
    setup(cfg, lines.append)
    assert not [line for line in lines if "unknown token" in line or "warning" in line]


def test_a_few_unknown_words_warn_without_stopping(wordpiece_dir, tmp_path):
    texts = english(40)
    texts[0] = texts[0] + " 很"  # 1 of 161 tokens: under 2%, no line
    texts[1:6] = [t + " 好 吃" for t in texts[1:6]]  # 11 of 171: 6.4%, a warning
    cfg = config(wordpiece_dir, write_tsv(tmp_path / "train.tsv", texts),
                 write_tsv(tmp_path / "dev.tsv", english(10)), tmp_path)
    lines: list[str] = []
    setup(cfg, lines.append)
    warned = [line for line in lines if "unknown token" in line]
    assert warned == ["warning: data: unknown token [UNK]: text 6.4% of train / 0.0% of dev "
                      "tokens (e.g. 好, 吃, 很); truncated at model.max_length 32: 0.0% of train / "
                      "0.0% of dev examples"]


def test_a_chinese_text_pair_column_is_named(wordpiece_dir, tmp_path):
    cfg = config(wordpiece_dir, write_tsv(tmp_path / "train.tsv", english(40), chinese(40)),
                 write_tsv(tmp_path / "dev.tsv", english(10), chinese(10)), tmp_path, pair=True)
    with pytest.raises(DataError, match=r"of column text_pair \(file column 'second'\)"):
        setup(cfg, lambda _: None)


def test_truncation_alone_is_reported_in_the_summary_line(wordpiece_dir, tmp_path):
    texts = english(40)
    texts[:4] = [" ".join([t] * 10) for t in texts[:4]]  # 40 tokens: over max_length 32
    cfg = config(wordpiece_dir, write_tsv(tmp_path / "train.tsv", texts),
                 write_tsv(tmp_path / "dev.tsv", english(10)), tmp_path)
    lines: list[str] = []
    setup(cfg, lines.append)
    assert [line for line in lines if "truncated" in line] == [
        "data: unknown token [UNK]: text 0.0% of train / 0.0% of dev tokens; truncated at "
        "model.max_length 32: 10.0% of train / 0.0% of dev examples"]


def test_chinese_words_stop_the_token_classification_recipe(wordpiece_dir, tmp_path):
    sentences = [[(CHINESE[i % len(CHINESE)], tag) if tag == "O" else (w, tag) for w, tag in s]
                 for i, s in enumerate(toy_sentences(30, 1))]
    train = write_conll(tmp_path / "train.txt", sentences)
    dev = write_conll(tmp_path / "dev.txt", sentences[:10])
    tree = {"task": "token_classification", "model": {"name": str(wordpiece_dir), "max_length": 32},
            "data": {"train": str(train), "dev": str(dev)}, "method": {"name": "full"},
            "output_dir": str(tmp_path / "run")}
    with pytest.raises(DataError, match=r"of the train tokens of column words \(file column 0\) "
                                        r"are the unknown token \[UNK\]"):
        setup(validate(tree), lambda _: None)
    tree["data"]["allow_unknown_tokens"] = True
    lines: list[str] = []
    setup(validate(tree), lines.append)
    assert [line for line in lines if line.startswith("warning: data: unknown token [UNK]: words ")]


# ----------------------------------------------------------------------------- real data


def real_config(data: dict, tmp_path: Path):
    return validate({"model": {"name": "minilm", "max_length": 128},
                     "data": {"max_train_examples": 300, "max_eval_examples": 100, **data},
                     "method": {"name": "lora"}, "output_dir": str(tmp_path / "run")})


@pytest.mark.real
def test_real_waimai_through_minilm_stops_on_unknown_tokens(tmp_path):
    path = real_data_dir() / "waimai_10k" / "waimai_10k.csv"  # header label,review
    cfg = real_config({"train": str(path), "columns": {"text": "review", "label": "label"}},
                      tmp_path)
    with pytest.raises(DataError) as exc:
        setup(cfg, lambda _: None)
    msg = str(exc.value)
    assert "of the train tokens of column text (file column 'review') are the unknown token " \
           "[UNK]" in msg
    share = float(msg.removeprefix("data: ").split("%")[0])
    assert 50 < share < 80  # about two thirds of MiniLM's tokens for Chinese reviews
    assert "choose a model whose vocabulary covers the script" in msg


@pytest.mark.real
def test_real_sst2_through_minilm_runs_with_no_warning(tmp_path):
    real_data_dir()
    lines: list[str] = []
    setup(real_config({"train": "sst2"}, tmp_path), lines.append)
    assert not [line for line in lines if "unknown token" in line or "warning" in line]
