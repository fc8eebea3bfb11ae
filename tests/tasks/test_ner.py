"""Token classification (NER): CoNLL reading and schemes, sub-token alignment, seqeval scores,
a tiny model that learns a toy set, every method, the CLI, and peft interop."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ner_fixtures import ner_config, toy_ner_files
from conftest import REPO
from tunelab.cli import main
from tunelab.config import ConllDataConfig, load_config, validate
from tunelab.data.conll import Sentence, load_conll_splits, read_conll, tag_set, to_iob2
from tunelab.data.subwords import IGNORE, encode_words, subtoken_labels, word_predictions
from tunelab.errors import ConfigError, DataError
from tunelab.tasks.metrics import ner_metrics
from tunelab.methods import METHODS
from tunelab.models import load_tokenizer
from tunelab.runs.resolve import resolve
from tunelab.runs.trained import load_trained
from tunelab.tasks.token_classification import TokenClassificationTask
from tunelab.recipes.run import train


def quiet(_: str) -> None:
    pass


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- schemes


def test_iob1_to_iob2():
    # IOB1: I- opens an entity unless it continues one of the same type; B- only splits two
    # adjacent entities of the same type.
    iob1 = ["I-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-LOC", "I-ORG", "I-PER", "O", "B-MISC"]
    assert to_iob2(iob1, "iob1") == ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-LOC", "B-ORG",
                                     "B-PER", "O", "B-MISC"]


def test_bioes_and_iob2_to_iob2():
    bioes = ["S-PER", "O", "B-ORG", "I-ORG", "E-ORG", "B-LOC", "E-LOC", "S-LOC"]
    assert to_iob2(bioes, "bioes") == ["B-PER", "O", "B-ORG", "I-ORG", "I-ORG", "B-LOC", "I-LOC",
                                       "B-LOC"]
    iob2 = ["B-PER", "I-PER", "B-PER", "O"]
    assert to_iob2(iob2, "iob2") == iob2


@pytest.mark.parametrize("scheme,tags,line,message", [
    ("iob2", ["O", "I-PER"], 6, "'I-PER' continues no entity (it follows 'O'); in IOB2 every "
                                "entity starts with B-. If the file is IOB1, set data.scheme: iob1"),
    ("iob2", ["B-PER", "I-LOC"], 6, "'I-LOC' continues no entity (it follows 'B-PER'); in IOB2 "
                                    "every entity starts with B-. If the file is IOB1, set "
                                    "data.scheme: iob1"),
    ("iob2", ["E-PER"], 5, "tag 'E-PER' is not valid in IOB2 (O, or B-, I- followed by an entity "
                           "type)"),
    ("bioes", ["B-PER", "O"], 6, "'O' comes before the open PER entity was closed with E-PER"),
    ("bioes", ["O", "E-LOC"], 6, "'E-LOC' continues no open LOC entity; BIOES entities are B- "
                                 "(I-)* E-, or a single S-"),
    ("bioes", ["B-PER", "I-PER"], 6, "the sentence ends inside a PER entity (no E-PER)"),
    ("iob1", ["B-"], 5, "tag 'B-' is not valid in IOB1 (O, or B-, I- followed by an entity type)"),
])
def test_broken_tags_are_errors_with_file_and_line(tmp_path, scheme, tags, line, message):
    lines = ["-DOCSTART- -X- -X- O", "", "Hi NN B-NP O", ""] + [f"w{i} NN I-NP {t}"
                                                               for i, t in enumerate(tags)]
    path = write(tmp_path / "bad.txt", "\n".join(lines) + "\n")
    with pytest.raises(DataError) as exc:
        read_conll(path, 0, -1, scheme)
    assert str(exc.value) == f"{path}:{line}: {message}"


# ----------------------------------------------------------------------------- reading


CONLL = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER
-DOCSTART- -X- -X- O

BRUSSELS NNP B-NP B-LOC
"""


def test_reader_skips_docstart_and_picks_columns(tmp_path):
    path = write(tmp_path / "a.txt", CONLL)
    got = read_conll(path, 0, -1, "iob2")
    assert [(s.words, s.tags, s.line) for s in got] == [
        (("EU", "rejects", "German"), ("B-ORG", "O", "B-MISC"), 3),
        (("Peter", "Blackburn"), ("B-PER", "I-PER"), 7),
        (("BRUSSELS",), ("B-LOC",), 11)]
    assert got[1].where == f"{path}:7"
    assert read_conll(path, 0, 3, "iob2") == got
    chunks = read_conll(path, 1, 2, "iob2")  # the POS column as words, chunk tags as tags
    assert chunks[0].words == ("NNP", "VBZ", "JJ") and chunks[0].tags == ("B-NP", "B-VP", "B-NP")


def test_malformed_lines_name_file_and_line(tmp_path):
    path = write(tmp_path / "m.txt", "EU NNP B-NP B-ORG\nrejects VBZ O\n")
    with pytest.raises(DataError) as exc:
        read_conll(path, 0, -1, "iob2")
    assert str(exc.value) == (f"{path}:2: expected 4 whitespace-separated columns (as on the "
                              "first line), found 3")
    with pytest.raises(DataError) as exc:
        read_conll(write(tmp_path / "c.txt", "\nEU B-ORG\n"), 0, 4, "iob2")
    assert str(exc.value) == (f"{tmp_path / 'c.txt'}:2: no column 4 (the line has 2 columns, "
                              "counted from 0); set data.tag_column")
    with pytest.raises(DataError) as exc:
        read_conll(write(tmp_path / "e.txt", "-DOCSTART- -X- -X- O\n\n"), 0, -1, "iob2")
    assert str(exc.value) == (f"{tmp_path / 'e.txt'}: no sentences found (expected one word per "
                              "line, a blank line between sentences)")
    with pytest.raises(DataError, match="nope.txt: file not found"):
        read_conll(tmp_path / "nope.txt", 0, -1, "iob2")


def test_dev_entity_type_unknown_to_training_is_an_error(tmp_path):
    train = write(tmp_path / "train.txt", "EU B-ORG\nsaid O\n\nPeter B-PER\n")
    dev = write(tmp_path / "dev.txt", "Paris B-LOC\n\nEU B-ORG\nin O\nBonn B-GPE\n")
    with pytest.raises(DataError) as exc:
        load_conll_splits(ConllDataConfig(train=str(train), dev=str(dev)))
    assert str(exc.value) == (f"{dev}:1: entity type 'LOC' does not occur in the training data "
                              "(types: ORG, PER)")


def test_splits_tag_set_dev_hold_out_and_sampling(tmp_path):
    files = toy_ner_files(tmp_path)
    splits = load_conll_splits(ConllDataConfig(train=str(files["train"]), dev_fraction=0.25,
                                               max_train_examples=50))
    assert splits.tags == ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    assert tag_set({"PER", "LOC"}) == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    assert (len(splits.train), len(splits.dev)) == (50, 40)
    assert splits.notes == ["no dev file: held out 40 training sentences (25%, seed 0)",
                            "training on a seeded sample of 50 sentences"]
    again = load_conll_splits(ConllDataConfig(train=str(files["train"]), dev_fraction=0.25,
                                              max_train_examples=50))
    assert [s.line for s in again.dev] == [s.line for s in splits.dev]
    assert not {s.line for s in splits.train} & {s.line for s in splits.dev}


def test_catalog_name_resolves_in_data_dir(tmp_path, monkeypatch):
    (tmp_path / "conll2003").mkdir()
    for name in ("train", "valid", "test"):
        write(tmp_path / "conll2003" / f"{name}.txt", CONLL)
    monkeypatch.setenv("TUNELAB_DATA_DIR", str(tmp_path))
    splits = load_conll_splits(ConllDataConfig(train="conll2003"))
    assert (len(splits.train), len(splits.dev), len(splits.test)) == (3, 3, 3)
    monkeypatch.setenv("TUNELAB_DATA_DIR", str(tmp_path / "elsewhere"))
    with pytest.raises(DataError, match="set TUNELAB_DATA_DIR"):
        load_conll_splits(ConllDataConfig(train="conll2003"))


# ----------------------------------------------------------------------------- config


@pytest.mark.parametrize("overrides,message", [
    (["data.tag_colum=2"], "config: unknown key 'data.tag_colum' (did you mean 'data.tag_column'?); "
                           "valid keys here: train, dev, test, token_column, tag_column, scheme, "
                           "encoding, label_all_subtokens, dev_fraction, split_seed, "
                           "max_train_examples, max_eval_examples, allow_unknown_tokens"),
    (["data.scheme=bio"], "config: data.scheme: input should be 'iob1', 'iob2' or 'bioes' (got 'bio')"),
    (["data.token_column=1", "data.tag_column=1"],
     "config: data: token_column and tag_column are both 1; the words and the tags must come "
     "from different columns"),
    (["data.tag_column=-2"], "config: data.tag_column: input should be greater than or equal to -1 "
                             "(got -2)"),
    (["train.metric=macro_f1"], "config: train.metric: macro_f1 scores sequence classification; "
                                "token_classification runs use f1 (entity-level), token_accuracy "
                                "or loss"),
    (["task=token_clasification"], "config: task: unknown task 'token_clasification' (did you mean "
                                   "'token_classification'?); choose from: classification, "
                                   "causal_lm, token_classification, translation, masked_lm, "
                                   "multitask, image_classification"),
])
def test_config_errors(overrides, message):
    with pytest.raises(ConfigError) as exc:
        load_config(None, ["task=token_classification", "data.train=conll2003", *overrides])
    assert str(exc.value) == message


def test_classification_refuses_ner_metrics_and_the_example_config_loads():
    with pytest.raises(ConfigError) as exc:
        load_config(None, ["data.train=sst2", "train.metric=f1"])
    assert str(exc.value) == ("config: train.metric: f1 scores token classification; "
                              "classification runs use accuracy, macro_f1 or loss")
    cfg = load_config(REPO / "examples" / "conll-lora.yaml")
    assert cfg.task == "token_classification" and cfg.data.train == "conll2003"


# ----------------------------------------------------------------------------- alignment

WORDS = ["Arnold", "Schwarzenegger", "visited", "Kerkrade", "."]
TAGS = ["B-PER", "I-PER", "O", "B-LOC", "O"]
TAG_IDS = {t: i for i, t in enumerate(["O", "B-LOC", "I-LOC", "B-PER", "I-PER"])}


@pytest.fixture(scope="module")
def minilm_tokenizer():
    return load_tokenizer(resolve("minilm"))


def test_alignment_golden_first_and_all_subtokens(minilm_tokenizer):
    first = encode_words(minilm_tokenizer, [WORDS], [TAGS], TAG_IDS, 64, label_all=False)
    assert minilm_tokenizer.convert_ids_to_tokens(first.input_ids[0]) == [
        "[CLS]", "arnold", "schwarz", "##ene", "##gger", "visited", "ke", "##rk", "##rade", ".",
        "[SEP]"]
    assert first.word_ids[0] == [None, 0, 1, 1, 1, 2, 3, 3, 3, 4, None]
    x = IGNORE
    assert first.labels[0] == [x, 3, 4, x, x, 0, 1, x, x, 0, x]
    assert first.trained == [5] and first.lost_words == 0
    every = encode_words(minilm_tokenizer, [WORDS], [TAGS], TAG_IDS, 64, label_all=True)
    # a B- word's later sub-tokens continue its entity: B-LOC ke, I-LOC ##rk, I-LOC ##rade
    assert every.labels[0] == [x, 3, 4, 4, 4, 0, 1, 2, 2, 0, x]
    assert every.trained == [9]


def test_loss_weighs_every_labelled_subtoken_the_same_across_batches(minilm_tokenizer):
    """A step's loss sum is divided by its sentences x the mean labelled sub-tokens per
    sentence, not by its own count: length-bucketed batches of short sentences must not
    outweigh long ones."""
    task = TokenClassificationTask(list(TAG_IDS), 64, 0, False)
    sents = [Sentence(tuple(WORDS), tuple(TAGS), "x", 1), Sentence(("Kerkrade",), ("B-LOC",), "x", 9)]
    data = task.encode(minilm_tokenizer, sents)
    assert data.trained == [5, 1] and data.mean_trained == 3.0
    assert task.units(data, [1]) == 3.0 and task.units(data, [0, 1]) == 6.0


def test_alignment_back_to_words_uses_the_first_subtoken(minilm_tokenizer):
    enc = encode_words(minilm_tokenizer, [WORDS], [TAGS], TAG_IDS, 64, label_all=False)
    # predictions on later sub-tokens (and on [CLS]/[SEP]) are ignored
    preds = [2, 3, 4, 0, 0, 0, 1, 4, 4, 0, 3]
    assert word_predictions(preds, enc.word_ids[0], len(WORDS), missing=0) == [3, 4, 0, 1, 0]
    cut = encode_words(minilm_tokenizer, [WORDS], [TAGS], TAG_IDS, 6, label_all=False)
    assert cut.word_ids[0] == [None, 0, 1, 1, 1, None] and cut.lost_words == 3
    assert word_predictions([0, 3, 4, 4, 4, 0], cut.word_ids[0], 5, missing=0) == [3, 4, 0, 0, 0]
    x = IGNORE
    assert subtoken_labels([None, 0, 0, 1, None], [3, 0], True, [0, 2, 2, 4, 4]) == [x, 3, 4, 0, x]


# ----------------------------------------------------------------------------- metrics

GOLD = [["B-PER", "I-PER", "O", "B-LOC", "O"],
        ["B-ORG", "I-ORG", "I-ORG", "O", "B-PER"],
        ["O", "B-LOC", "B-LOC", "O"]]
PRED = [["B-PER", "I-PER", "O", "B-ORG", "O"],   # PER right, LOC typed as ORG
        ["B-ORG", "I-ORG", "O", "O", "I-PER"],    # ORG cut short; I-PER after O opens a PER
        ["O", "B-LOC", "I-LOC", "O"]]             # two LOCs merged into one


def test_entity_scores_match_seqeval_and_hand_counts():
    from seqeval.metrics import (accuracy_score, classification_report, f1_score,
                                 precision_score, recall_score)

    got = ner_metrics(GOLD, PRED)
    # gold entities: PER x2, LOC x3, ORG x1 = 6; predicted: PER x2, ORG x2, LOC x1 = 5;
    # correct: PER (s1), PER (s2, conlleval rules) = 2
    assert got["precision"] == pytest.approx(2 / 5) and got["recall"] == pytest.approx(2 / 6)
    assert got["f1"] == pytest.approx(2 * (2 / 5) * (2 / 6) / (2 / 5 + 2 / 6))
    assert got["token_accuracy"] == pytest.approx(10 / 14)
    assert got["f1"] == f1_score(GOLD, PRED) and got["precision"] == precision_score(GOLD, PRED)
    assert got["recall"] == recall_score(GOLD, PRED)
    assert got["token_accuracy"] == accuracy_score(GOLD, PRED)
    report = classification_report(GOLD, PRED, output_dict=True)
    for kind in ("PER", "LOC", "ORG"):
        assert got["per_type"][kind] == {"precision": report[kind]["precision"],
                                         "recall": report[kind]["recall"],
                                         "f1": report[kind]["f1-score"],
                                         "support": report[kind]["support"]}
    assert got["per_type"]["PER"]["f1"] == 1.0 and got["per_type"]["LOC"]["recall"] == 0.0


# ----------------------------------------------------------------------------- training


@pytest.fixture
def ner_files(tmp_path) -> dict[str, Path]:
    return toy_ner_files(tmp_path)


@pytest.fixture(scope="module")
def trained_ner(tiny_model_dir, tmp_path_factory) -> Path:
    """A tiny BERT fully fine-tuned on the toy NER set (learns it: see the test below)."""
    root = tmp_path_factory.mktemp("ner")
    tree = ner_config(tiny_model_dir, toy_ner_files(root), root / "run")
    train(validate(tree), log=quiet)
    return root / "run"


def test_tiny_model_learns_toy_ner(trained_ner):
    history = [json.loads(x) for x in (trained_ner / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train_loss"] for r in history if "train_loss" in r]
    assert sum(losses[-3:]) / 3 < 0.3 * sum(losses[:3]) / 3
    summary = json.loads((trained_ner / "summary.json").read_text())
    assert summary["metric"] == "f1" and summary["initial_dev"]["f1"] < 0.3
    assert summary["final_dev"]["f1"] >= 0.9, summary["final_dev"]
    assert set(summary["final_dev"]["per_type"]) == {"PER", "LOC", "ORG"}
    info = json.loads((trained_ner / "run.json").read_text())
    assert info["labels"] == ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    from transformers import AutoModelForTokenClassification

    saved = AutoModelForTokenClassification.from_pretrained(trained_ner / "model")
    assert saved.config.id2label[5] == "B-PER" and saved.config.label2id["I-LOC"] == 2


def test_predict_prints_entities_with_spans(trained_ner, tmp_path, capsys):
    texts = write(tmp_path / "in.txt", "the report said Anna met Google\n\n")
    assert main(["predict", str(trained_ner), "John Smith visited Paris.", "--file",
                 str(texts)]) == 0
    assert capsys.readouterr().out == (
        "John Smith visited Paris.\n"
        '  PER  "John Smith"  [0, 10)\n'
        '  LOC  "Paris"       [19, 24)\n'
        "the report said Anna met Google\n"
        '  PER  "Anna"    [16, 20)\n'
        '  ORG  "Google"  [25, 31)\n')
    assert main(["predict", str(trained_ner), "the and on"]) == 0
    assert capsys.readouterr().out == "the and on\n  (no entities)\n"


def test_eval_prints_entity_table_and_token_accuracy(trained_ner, capsys):
    assert main(["eval", str(trained_ner)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("dev: 40 sentences, ") and out[0].endswith(" entities")
    assert out[1] == "entity   precision  recall      f1  support"
    assert [line.split()[0] for line in out[2:6]] == ["LOC", "ORG", "PER", "overall"]
    assert out[6].startswith("token accuracy: ")
    summary = json.loads((trained_ner / "summary.json").read_text())
    assert float(out[5].split()[3]) == pytest.approx(summary["final_dev"]["f1"], abs=1e-4)


def test_data_inspect_shows_which_subtokens_carry_tags(tiny_model_dir, ner_files, tmp_path, capsys):
    import yaml

    path = write(tmp_path / "c.yaml", yaml.safe_dump(ner_config(tiny_model_dir, ner_files,
                                                                tmp_path / "o")))
    assert main(["data", "inspect", str(path), "-n", "1", "--no-color"]) == 0
    out = capsys.readouterr().out
    assert "the loss reads a tag on the first sub-token of each word" in out
    assert "sub-tokens: [CLS] " in out and "/O " in out and out.count("--- example") == 1
    assert "train: 160 sentences, " in out


def run_logits(model, tok, texts: list[str]) -> torch.Tensor:
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**enc).logits


@pytest.mark.parametrize("method", [
    {"name": "full"}, {"name": "freeze", "train_last_layers": 1}, {"name": "bitfit"},
    {"name": "lora", "r": 4, "alpha": 8, "targets": "all-linear"},
    {"name": "dora", "r": 4, "alpha": 8, "targets": ["query", "value"]},
    {"name": "ia3"}, {"name": "vera", "r": 8}, {"name": "loha", "r": 4}, {"name": "lokr", "r": 4},
    {"name": "adalora", "init_r": 4, "target_r": 2},
    {"name": "houlsby"}, {"name": "pfeiffer"}, {"name": "prompt_tuning", "num_virtual_tokens": 4},
    {"name": "p_tuning", "num_virtual_tokens": 4}, {"name": "prefix_tuning", "num_virtual_tokens": 4}],
    ids=lambda m: m["name"])
def test_every_method_trains_the_head_and_saves_a_loadable_run(method, tiny_model_dir, ner_files,
                                                               tmp_path):
    tree = ner_config(tiny_model_dir, ner_files, tmp_path / "run", method, max_steps=4,
                      eval_every=None)
    logs: list[str] = []
    summary = train(validate(tree), log=logs.append)
    assert "task head (trains fully): classifier" in logs
    model, tok, info = load_trained(tmp_path / "run")
    assert info["task"] == "token_classification"
    cfg = validate(tree)
    task = TokenClassificationTask(info["labels"], 32, tok.pad_token_id, False)
    scores = task.evaluate(model, task.encode(tok, load_conll_splits(cfg.data).dev), 64,
                           torch.device("cpu"))
    assert scores["f1"] == pytest.approx(summary["final_dev"]["f1"], abs=1e-6)
    assert scores["loss"] == pytest.approx(summary["final_dev"]["loss"], abs=1e-5)


def test_every_registered_method_is_in_the_ner_matrix():
    assert set(METHODS) == {"full", "freeze", "bitfit", "lora", "dora", "ia3", "vera", "loha",
                            "lokr", "adalora", "houlsby", "pfeiffer", "prompt_tuning", "p_tuning",
                            "prefix_tuning"}


# ----------------------------------------------------------------------------- peft interop


def test_lora_adapter_loads_in_peft_token_classifier(tiny_model_dir, ner_files, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForTokenClassification

    tree = ner_config(tiny_model_dir, ner_files, tmp_path / "run",
                      {"name": "lora", "r": 4, "alpha": 8, "targets": "all-linear"}, max_steps=6,
                      lr=1e-2, eval_every=None)
    train(validate(tree), log=quiet)
    config = json.loads((tmp_path / "run" / "adapter" / "adapter_config.json").read_text())
    assert config["task_type"] == "TOKEN_CLS" and config["modules_to_save"] == ["classifier"]
    ours, tok, info = load_trained(tmp_path / "run")
    base = AutoModelForTokenClassification.from_pretrained(
        tiny_model_dir, num_labels=len(info["labels"]), id2label=dict(enumerate(info["labels"])),
        label2id={t: i for i, t in enumerate(info["labels"])})
    theirs = PeftModel.from_pretrained(base, tmp_path / "run" / "adapter").eval()
    texts = ["john smith visited paris", "the report said microsoft met laura in rome"]
    want = run_logits(ours, tok, texts)
    assert want.shape[-1] == 7
    assert (want - run_logits(theirs, tok, texts)).abs().max().item() < 1e-5


def test_peft_token_classification_adapter_loads_in_tunelab(tiny_model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForTokenClassification

    from tunelab.methods.peft_format import load_adapter
    from tunelab.models import load_token_classifier

    tags = ["O", "B-PER", "I-PER"]
    torch.manual_seed(3)
    base = AutoModelForTokenClassification.from_pretrained(tiny_model_dir, num_labels=3)
    theirs = get_peft_model(base, LoraConfig(task_type="TOKEN_CLS", r=4, lora_alpha=8,
                                             target_modules=["query", "value"]))
    with torch.no_grad():
        for n, p in theirs.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    theirs.save_pretrained(tmp_path)
    ours = load_token_classifier(tiny_model_dir, tags)
    load_adapter(ours, tmp_path, ["classifier"])
    tok = load_tokenizer(tiny_model_dir)
    texts = ["anna jones met peter"]
    assert torch.allclose(run_logits(ours.eval(), tok, texts), run_logits(theirs.eval(), tok, texts),
                          atol=1e-5)


def test_info_and_label_all_subtokens_run(tiny_model_dir, ner_files, tmp_path, capsys):
    import yaml

    tree = ner_config(tiny_model_dir, ner_files, tmp_path / "run",
                      {"name": "lora", "r": 4, "alpha": 8, "targets": ["query"]}, max_steps=4,
                      eval_every=None)
    path = write(tmp_path / "c.yaml", yaml.safe_dump(tree))
    assert main(["info", str(path)]) == 0
    # 2 layers x r=4 x (32 in + 32 out) LoRA params + the 7-tag head 32*7+7
    assert "trainable parameters: 743 / " in capsys.readouterr().out
    logs: list[str] = []
    tree["data"]["label_all_subtokens"] = True
    summary = train(validate(tree), log=logs.append)
    assert any(line.endswith("loss on every sub-token (B-X continues as I-X)") for line in logs)
    assert "f1" in summary["final_dev"] and "token_accuracy" in summary["final_dev"]
    assert json.loads((tmp_path / "run" / "run.json").read_text())["label_all_subtokens"] is True


def test_eval_on_a_file_with_an_unknown_type_names_its_line(trained_ner, tmp_path, capsys):
    other = write(tmp_path / "o.txt", "Paris NN I-NP B-LOC\n\nBonn NN I-NP B-GPE\n")
    assert main(["eval", str(trained_ner), "--data", str(other)]) == 2
    assert capsys.readouterr().err == (f"error: {other}:3: entity type 'GPE' does not occur in the "
                                       "training data (types: LOC, ORG, PER)\n")
    good = write(tmp_path / "g.txt", "Anna NN I-NP B-PER\nmet NN I-NP O\nParis NN I-NP B-LOC\n")
    assert main(["eval", str(trained_ner), "--data", str(good)]) == 0
    assert capsys.readouterr().out.startswith(f"{good}: 1 sentences, 3 words, 2 entities\n")
