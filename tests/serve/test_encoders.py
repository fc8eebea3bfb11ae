"""Encoder models as the server serves them: MiniLM embeddings equal sentence-transformers',
and a classification (LoRA) and an NER run answer exactly as `tunelab predict` does."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch
from conftest import synthetic_rows, tiny_config, toy_sentiment_files

from tunelab.cli import main
from tunelab.commands import ner as ner_commands
from tunelab.commands.predict import predict
from tunelab.config import validate
from tunelab.errors import CheckpointError, DataError, ModelError
from tunelab.models.resolve import resolve
from tunelab.recipes.run import train
from tunelab.runs.trained import load_trained
from tunelab.serve.encoders import EncoderModel, mean_pool

LONG = "a long sentence about a patient cat that sits on the warm mat all day. " * 40
TEXTS = ["hello world", "  spaces around  ", LONG, "x", "Ünïcödé text — ok?"]


def quiet(_: str) -> None:
    pass


@pytest.fixture(scope="module")
def minilm() -> EncoderModel:
    return EncoderModel.from_base(Path("minilm"), "minilm")


@pytest.fixture(scope="module")
def cls_run(tiny_model_dir, tmp_path_factory) -> Path:
    """A tiny BERT + LoRA classifier (12 steps: parity, not accuracy, is under test)."""
    root = tmp_path_factory.mktemp("cls")
    data = toy_sentiment_files(root, dev=16)
    tree = tiny_config(tiny_model_dir, data, root / "run", eval_every=12, checkpoint_every=12,
                       lr=2e-2, load_best_at_end=False)  # the trained adapter, B != 0
    train(validate(tree), log=quiet)
    return root / "run"


# ----------------------------------------------------------------------------- embeddings


def test_minilm_embeddings_equal_sentence_transformers(minilm):
    from sentence_transformers import SentenceTransformer

    vectors, tokens = minilm.embed(TEXTS)
    st = SentenceTransformer(str(resolve("minilm")), device="cpu", local_files_only=True)
    expected = st.encode(TEXTS, normalize_embeddings=True)
    got = torch.tensor(vectors)
    assert got.shape == (5, 384)
    assert (got - torch.from_numpy(expected)).abs().max().item() < 1e-5
    assert torch.allclose(got.norm(dim=1), torch.ones(5), atol=1e-5)
    # [CLS] hello world [SEP] = 4; the long text is cut at MiniLM's max_seq_length, 256
    assert minilm.max_length == 256 == st.max_seq_length
    lengths = [len(minilm.tokenizer(t)["input_ids"]) for t in TEXTS]
    assert lengths[0] == 4 and lengths[2] > 256
    assert tokens == sum(min(n, 256) for n in lengths)


def test_embeddings_are_the_same_from_many_threads(minilm):
    texts = [f"sentence number {i} about {'cats' if i % 2 else 'dogs'}" for i in range(40)]
    alone, _ = minilm.embed(texts)
    results: dict[int, list[list[float]]] = {}

    def work(k: int) -> None:
        results[k] = minilm.embed(texts[k::4])[0]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in range(4):
        got = torch.tensor(results[k])
        assert (got - torch.tensor(alone[k::4])).abs().max().item() < 1e-5


def test_a_run_embeds_with_its_fine_tuned_encoder(cls_run, tiny_model_dir):
    from transformers import AutoModel

    served = EncoderModel.from_run(cls_run, "cls")
    texts = ["a wonderful story", "the plot was awful and boring", "fine"]
    vectors, tokens = served.embed(texts)
    model, tokenizer, _ = load_trained(cls_run)
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    plain = AutoModel.from_pretrained(tiny_model_dir).eval()
    with torch.no_grad():
        tuned = mean_pool(model.bert(**enc).last_hidden_state, enc["attention_mask"])
        base = mean_pool(plain(**enc).last_hidden_state, enc["attention_mask"])
    assert (torch.tensor(vectors) - tuned).abs().max().item() < 1e-5
    assert (tuned - base).abs().max().item() > 1e-3  # the LoRA deltas are in the encoder
    assert tokens == int(enc["attention_mask"].sum())


# ----------------------------------------------------------------------------- classify, ner


def test_classify_equals_tunelab_predict_and_one_unbatched_forward(cls_run, capsys):
    served = EncoderModel.from_run(cls_run, "cls")
    assert (served.task, served.id) == ("classification", "cls")
    texts = [t for t, _ in synthetic_rows(70, seed=5)] + ["great " * 60]  # 3 batches, one cut
    got = served.classify(texts)
    printed = predict(cls_run, texts, None)
    assert [g["label"] for g in got] == [label for label, _ in printed]
    assert [g["score"] for g in got] == pytest.approx([p for _, p in printed], abs=1e-6)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{got[0]['label']}\t{got[0]['score']:.4f}\t{texts[0]}"
    # one padded tensor for all texts (what predict did before it batched) gives the same
    model, tokenizer, info = load_trained(cls_run)
    enc = tokenizer(texts, truncation=True, max_length=info["max_length"], padding=True,
                    return_tensors="pt")
    with torch.no_grad():
        probs = model(**enc).logits.softmax(-1)
    for g, row in zip(got, probs):
        assert [g["probs"][label] for label in info["labels"]] == pytest.approx(row.tolist(),
                                                                               abs=1e-5)
        assert g["label"] == info["labels"][int(row.argmax())]
        assert g["score"] == g["probs"][g["label"]] == max(g["probs"].values())


def test_ner_equals_tunelab_predict(ner_run, capsys):
    served = EncoderModel.from_run(ner_run, "ner")
    assert served.task == "token_classification"
    texts = ["John Smith visited Paris.", "the report said Anna met Google", "the and on"]
    got = served.ner(texts)
    assert [[(e["entity"], e["text"], e["start"], e["end"]) for e in row] for row in got] == [
        [("PER", "John Smith", 0, 10), ("LOC", "Paris", 19, 24)],
        [("PER", "Anna", 16, 20), ("ORG", "Google", 25, 31)],
        []]
    model, tokenizer, info = load_trained(ner_run)
    expected = ner_commands.predict(model, tokenizer, info, texts)
    assert [[(e.type, e.text, e.start, e.end) for e in row] for row in expected] == [
        [(e["entity"], e["text"], e["start"], e["end"]) for e in row] for row in got]
    assert main(["predict", str(ner_run), texts[0]]) == 0
    assert '  PER  "John Smith"  [0, 10)' in capsys.readouterr().out
    # a score is the mean probability of the entity's words' tags (first sub-tokens)
    words = ["John", "Smith", "visited", "Paris", "."]
    enc = tokenizer(words, is_split_into_words=True, return_tensors="pt")
    with torch.no_grad():
        probs = model(**enc).logits.softmax(-1)[0]
    first = {w: enc.word_ids().index(w) for w in range(len(words))}
    tag = info["labels"].index
    per = (probs[first[0], tag("B-PER")] + probs[first[1], tag("I-PER")]) / 2
    assert got[0][0]["score"] == pytest.approx(float(per), abs=1e-5)
    assert got[0][1]["score"] == pytest.approx(float(probs[first[3], tag("B-LOC")]), abs=1e-5)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("texts, message", [
    ([], "no input texts"),
    (["fine", ""], "input 1 is empty"),
    (["   "], "input 0 is empty"),
    (["ok", 3], "input 1 is a int, not a string"),
    ("just a string", "no input texts"),
])
def test_bad_inputs_are_data_errors(minilm, texts, message):
    with pytest.raises(DataError, match=message):
        minilm.embed(texts)


def test_wrong_task_and_wrong_sources_are_clear_errors(minilm, ner_run, tmp_path):
    served = EncoderModel.from_run(ner_run, "ner")
    with pytest.raises(ModelError, match=r"model 'ner' \(token_classification\) cannot "
                                         "classify texts; pick a classification model"):
        served.classify(["John met Anna"])
    with pytest.raises(ModelError, match=r"'minilm' \(embedding\) cannot find entities"):
        minilm.ner(["John met Anna"])
    with pytest.raises(DataError, match="input 0 is empty"):
        served.ner([" \t "])
    with pytest.raises(ModelError, match="not an existing directory"):
        EncoderModel.from_base(tmp_path / "missing", "x")
    with pytest.raises(CheckpointError, match="not a tunelab run directory"):
        EncoderModel.from_run(tmp_path, "x")
